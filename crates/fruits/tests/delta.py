"""Reads a fruits Delta table with the `deltalake` and `polars` packages: every version, and
what fruits recorded with each commit; prints one JSON line.

Used by tests/readers.rs (python with deltalake and polars: `$FRUITS_PYTHON`).
"""
import json
import sys

import polars as pl
from deltalake import DeltaTable

at = sys.argv[1]
table = DeltaTable(at)
latest = table.version()
seen = {"latest": latest, "versions": {}}
for info in table.history():
    v = info["version"]
    old = DeltaTable(at, version=v)
    frame = pl.read_delta(at, version=v)
    seen["versions"][str(v)] = {
        "operation": info.get("operation"),
        "fruits": info.get("fruits"),
        "deltalake_rows": old.to_pyarrow_table().num_rows,
        "polars_rows": frame.height,
        "polars_paths": frame["path"].n_unique(),
        "columns": frame.columns,
        "k": frame["features_pca"].list.len().max(),
    }
print(json.dumps(seen))
