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
    let weights = dir.path().join("weights");
    fruits_testkit::synthetic_weights(&weights, 2);
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(["extract", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(["--pca-k", "3", "--threads", "2"])
        .env("FRUITS_WEIGHTS", &weights)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
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
    assert_eq!(seen["pyarrow"]["rows"], 15, "{seen}");
    assert_eq!(
        seen["pyarrow"]["columns"],
        serde_json::json!(["path", "label", "features", "features_pca"])
    );
    assert_eq!(seen["pandas"]["rows"], 15, "{seen}");
    assert_eq!(
        seen["pandas"]["labels"],
        serde_json::json!(["Class 0", "Class 1", "Class 2"])
    );
    assert_eq!(seen["duckdb"]["rows"], 15, "{seen}");
    assert_eq!(seen["duckdb"]["paths"], 15, "{seen}");
    assert_eq!(seen["duckdb"]["features"], 1280, "{seen}");
    assert_eq!(seen["duckdb"]["k"], 3, "{seen}");
}
