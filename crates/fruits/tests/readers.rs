//! A fruits result is one dataset to pyarrow, pandas and DuckDB, which ignore its `_` entries
//! (`tests/readers.py`), and a Delta table to the `deltalake` and `polars` packages at every
//! version (`tests/delta.py`); run by the python in `$FRUITS_PYTHON` (`.ci/run` makes one).

use std::process::Command;

/// The JSON line `tests/<script>` prints about the result at `at`, run by `python`.
fn python_reads(python: &std::ffi::OsStr, script: &str, at: &std::path::Path) -> serde_json::Value {
    let read = Command::new(python)
        .arg(format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(at)
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    serde_json::from_slice(&read.stdout).unwrap()
}

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
    let seen = python_reads(&python, "readers.py", &out);
    let want = serde_json::json!({
        "pyarrow": {"rows": 15, "columns": ["path", "label", "features", "features_pca"]},
        "pandas": {"rows": 15, "labels": ["Class 0", "Class 1", "Class 2"]},
        "duckdb": {"rows": 15, "paths": 15, "features": 1280, "k": 3},
    });
    assert_eq!(seen, want);
}

#[test]
fn a_delta_table_written_updated_and_overwritten_reads_back_at_every_version() {
    let Some(python) = std::env::var_os("FRUITS_PYTHON") else {
        fruits_testkit::skip("FRUITS_PYTHON (a python with deltalake and polars) not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 3, 10);
    let table = dir.path().join("table");
    let extract = |args: &[&str]| {
        let mut all = vec!["--format", "delta"];
        all.extend_from_slice(args);
        if !args.contains(&"--pca-k") {
            all.extend(["--pca-k", "3"]);
        }
        fruits_testkit::run_extract(env!("CARGO_BIN_EXE_fruits"), &input, &table, &all).0
    };
    let first = extract(&[]);
    assert!(
        first.contains("committed version 0 of the Delta table"),
        "{first}"
    );
    // 3 new photos (10 %), 1 changed, 1 deleted: an update is the table's next version.
    let jpeg = |c, i| fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(c, i));
    for (c, i) in [(0, 50), (1, 51), (2, 52)] {
        std::fs::write(input.join(format!("Class {c}/new_{i}.jpg")), jpeg(c, i)).unwrap();
    }
    std::fs::write(input.join("Class 1/r_0_100.jpg"), jpeg(0, 60)).unwrap();
    std::fs::remove_file(input.join("Class 2/r_1_100.jpg")).unwrap();
    let second = extract(&["--mode", "update"]);
    assert!(
        second.contains("update: 28 reused, 3 new, 1 changed, 1 removed"),
        "{second}"
    );
    assert!(second.contains("committed version 1"), "{second}");
    // A Parquet run over the table is refused: it would delete its history. A Delta run over
    // a Parquet result is refused too.
    let weights = dir.path().join("weights");
    fruits_testkit::synthetic_weights(&weights, 2);
    let parquet = dir.path().join("parquet");
    fruits_testkit::run_extract(env!("CARGO_BIN_EXE_fruits"), &input, &parquet, &[]);
    for (output, format, why) in [
        (&table, "parquet", "is a Delta table: pass --format delta"),
        (&parquet, "delta", "exists and is not a Delta table"),
    ] {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_fruits"))
            .env("FRUITS_WEIGHTS", &weights)
            .args(["extract", "--input", input.to_str().unwrap()])
            .args(["--output", output.to_str().unwrap(), "--mode", "overwrite"])
            .args(["--format", format])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
    }
    assert!(!parquet.join("_delta_log").exists());
    std::fs::remove_file(input.join("Class 0/r_2_100.jpg")).unwrap();
    let third = extract(&["--mode", "overwrite", "--pca-k", "4"]);
    assert!(third.contains("committed version 2"), "{third}");

    let seen = python_reads(&python, "delta.py", &table);
    assert_eq!(seen["latest"], 2, "{seen}");
    for (v, rows, k) in [("0", 30, 3), ("1", 32, 3), ("2", 31, 4)] {
        let at = &seen["versions"][v];
        assert_eq!(at["deltalake_rows"], rows, "version {v}: {at}");
        assert_eq!(at["polars_rows"], rows, "version {v}: {at}");
        assert_eq!(at["polars_paths"], rows, "version {v}: {at}");
        assert_eq!(at["k"], k, "version {v}: {at}");
        assert_eq!(
            at["columns"],
            serde_json::json!(["path", "label", "features", "features_pca"])
        );
        // What fruits recorded with the commit: its PCA, beside the version's other files.
        let fruits = &at["fruits"];
        assert_eq!(fruits["k"], k, "{fruits}");
        assert_eq!(fruits["rows"], rows, "{fruits}");
        let pca = table.join(fruits["pca"].as_str().unwrap());
        assert!(pca.join("components.npy").is_file(), "{}", pca.display());
    }
    assert_eq!(seen["versions"]["1"]["fruits"]["update"]["new"], 3);
    // fruits reads the latest version back, as any result.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(["report", table.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
}
