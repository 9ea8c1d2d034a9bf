#!/usr/bin/env python3
"""The figures behind fruits-checks' NEAR_DUPLICATE_COSINE, from a Fruits-360 result.

Cosine similarity of the 1280 features: of adjacent turntable frames, of frames 20 apart, and
of each photo's most similar photo of another fruit (Cherry 1 / Cherry 2, which share scenes,
left out). Needs numpy and pyarrow.

    python3 scripts/calibrate-near-duplicates.py /tmp/fruits-features
"""
import glob
import re
import sys

import numpy as np
import pyarrow.parquet as pq


def main(result):
    t = pq.read_table(sorted(glob.glob(f"{result}/part-*.parquet")))
    x = np.stack(t.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    label = np.array(t.column("label").to_pylist())
    path = t.column("path").to_pylist()
    s = x @ x.T
    np.fill_diagonal(s, -1)
    frame = {}
    for i, p in enumerate(path):
        folder, name = p.rsplit("/", 1)
        m = re.match(r"(r_)?(\d+)_100\.jpg$", name)
        if m:
            frame[(folder, m.group(1), int(m.group(2)))] = i
    for gap in (1, 20):
        sims = np.array([s[i, frame[(d, r, n + gap)]] for (d, r, n), i in frame.items()
                         if (d, r, n + gap) in frame])
        print(f"frames {gap} apart: median {np.median(sims):.3f}, "
              f"5th percentile {np.percentile(sims, 5):.3f}")
    other = np.where(label[:, None] != label[None, :], s, -1).max(axis=1)
    keep = ~np.isin(label, ["Cherry 1", "Cherry 2"])
    print(f"most similar photo of another fruit: max {other[keep].max():.3f} "
          f"(with Cherry 1 / Cherry 2: {other.max():.3f})")


if __name__ == "__main__":
    main(sys.argv[1])
