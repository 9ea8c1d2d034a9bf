//! A fruits result is one dataset to pyarrow, pandas and DuckDB, which ignore its `_` entries
//! (`tests/readers.py`, run by the python in `$FRUITS_PYTHON`; `.ci/run` makes one).

use std::process::Command;

#[test]
fn pyarrow_pandas_and_duckdb_read_the_result_as_one_dataset() {
    let Some(python) = std::env::var_os("FRUITS_PYTHON") else {
        fruits_testkit::skip("FRUITS_PYTHON (a python with pyarrow, pandas and duckdb) not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 3, 5);
    let out = dir.path().join("out");
    fruits_testkit::run_extract(
        env!("CARGO_BIN_EXE_fruits"),
        &input,
        &out,
        &["--pca-k", "3"],
    );
    let read = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let want = serde_json::json!({
        "pyarrow": {"rows": 15, "columns": ["path", "label", "features", "features_pca"]},
        "pandas": {"rows": 15, "labels": ["Class 0", "Class 1", "Class 2"]},
        "duckdb": {"rows": 15, "paths": 15, "features": 1280, "k": 3},
    });
    assert_eq!(seen, want);
}
