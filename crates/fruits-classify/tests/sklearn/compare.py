"""scikit-learn's LogisticRegression on the same features and the same split as `fruits train`.

    python compare.py FEATURES_DIR MODEL_DIR [C ...]

Reads the result's Parquet parts (the files its _SUCCESS lists), the model folder's
validation.json (the held-out photos) and fits, for each C (default: fruits' grid), a
multinomial LogisticRegression (lbfgs, tol 1e-4, max_iter 1000) on the standardised training
rows, as `fruits train --space features` does. Prints one JSON line per C: fit seconds,
iterations, validation top-1.
"""
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression

features_dir, model_dir = sys.argv[1], sys.argv[2]
grid = [float(c) for c in sys.argv[3:]] or [0.01, 0.1, 1.0, 10.0]
success = json.load(open(f"{features_dir}/_SUCCESS"))
tables = [pq.read_table(f"{features_dir}/{f['name']}", columns=["path", "label", "features"]) for f in success["files"]]
paths = [p for t in tables for p in t.column("path").to_pylist()]
labels = np.array([l for t in tables for l in t.column("label").to_pylist()])
x = np.vstack([np.array(t.column("features").to_pylist(), dtype=np.float64) for t in tables])
held = set(json.load(open(f"{model_dir}/validation.json")))
val = np.array([p in held for p in paths])
xt, yt, xv, yv = x[~val], labels[~val], x[val], labels[val]
mean, std = xt.mean(axis=0), xt.std(axis=0)
std[std == 0] = np.inf
xt, xv = (xt - mean) / std, (xv - mean) / std
print(json.dumps({"train": int(len(yt)), "validation": int(len(yv)), "classes": int(len(set(yt)))}))
for c in grid:
    model = LogisticRegression(C=c, max_iter=1000, tol=1e-4)
    t = time.perf_counter()
    model.fit(xt, yt)
    seconds = time.perf_counter() - t
    top1 = float((model.predict(xv) == yv).mean())
    print(json.dumps({"C": c, "fit_seconds": round(seconds, 2), "iterations": int(model.n_iter_[0]), "top1": round(top1, 4)}))
