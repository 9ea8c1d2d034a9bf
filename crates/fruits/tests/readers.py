"""Reads a fruits result with pyarrow, pandas and DuckDB; prints one JSON line of what each saw.

Used by tests/readers.rs (python with pyarrow, pandas and duckdb: `$FRUITS_PYTHON`).
"""
import json
import sys

import duckdb
import pandas as pd
import pyarrow.dataset as ds

out = sys.argv[1]
table = ds.dataset(out, format="parquet").to_table()
frame = pd.read_parquet(out)
duck = duckdb.sql(f"select count(*), count(distinct path), min(len(features)), max(len(features_pca)) from read_parquet('{out}/*.parquet')").fetchall()[0]
print(json.dumps({
    "pyarrow": {"rows": table.num_rows, "columns": table.column_names},
    "pandas": {"rows": len(frame), "labels": sorted(frame["label"].unique().tolist())},
    "duckdb": {"rows": duck[0], "paths": duck[1], "features": duck[2], "k": duck[3]},
}))
