#!/usr/bin/env python3
"""A full run against `--mode update` after adding 1,000 photos (README: Keeping results up to date).

Builds a folder of symbolic links to every photo but 1,000 (one in 14), extracts it (the base),
adds the 1,000 links back, then alternates a full run on the folder with an update of a copy
of the base, twice, printing each run's wall time and update counts.

    python3 scripts/update-vs-full.py target/release/fruits ../shared/fruits-360/Test \
        ../shared/models/mobilenet_v2_1.0_224 /tmp/update
"""
import os
import shutil
import subprocess
import sys

ADDED = 1000


def extract(fruits, weights, work, output, *extra):
    out = subprocess.run([fruits, "extract", "--input", f"{work}/in", "--output", output,
                          "--weights", weights, "--threads", "2", *extra],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith(("wall", "update:"))]


def main(fruits, photos, weights, work):
    shutil.rmtree(work, ignore_errors=True)
    files = sorted((c, f) for c in os.listdir(photos) for f in os.listdir(os.path.join(photos, c)))
    held = set(files[i] for i in range(0, len(files), len(files) // ADDED)[:ADDED])

    def link(c, f):
        d = os.path.join(work, "in", c)
        os.makedirs(d, exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(photos, c, f)), os.path.join(d, f))

    for c, f in files:
        if (c, f) not in held:
            link(c, f)
    extract(fruits, weights, work, f"{work}/base")
    for c, f in sorted(held):
        link(c, f)
    for r, order in enumerate([("update", "full"), ("full", "update")], start=1):
        for run in order:
            if run == "update":
                shutil.copytree(f"{work}/base", f"{work}/update-{r}", symlinks=True)
                lines = extract(fruits, weights, work, f"{work}/update-{r}", "--mode", "update")
            else:
                lines = extract(fruits, weights, work, f"{work}/full-{r}")
            print(f"{run} {r}: " + "; ".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:5])
