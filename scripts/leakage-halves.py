#!/usr/bin/env python3
"""Leakage between two halves of a photo folder, split at random and split by runs of frames.

Builds four folders of symbolic links (a random half A/B photo by photo; a half A/B by runs of
32 consecutive frames, as `fruits train` splits), extracts each with `fruits extract`, then
prints the share of B with a near-duplicate in A (`fruits report A --compare B --json`).

    python3 scripts/leakage-halves.py target/release/fruits ../shared/fruits-360/Test \
        ../shared/models/mobilenet_v2_1.0_224 /tmp/halves
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys

RUN_FRAMES = 32  # crates/fruits-classify/src/split.rs


def run_of(label, name):
    m = re.match(r"(.*?)(\d+)_100\.\w+$", name)
    return (label, m.group(1), int(m.group(2)) // RUN_FRAMES) if m else (label, name, 0)


def main(fruits, photos, weights, work):
    shutil.rmtree(work, ignore_errors=True)
    files = sorted((c, f) for c in os.listdir(photos) for f in os.listdir(os.path.join(photos, c)))
    rng = random.Random(0)
    side = {"random": {}, "runs": {}}
    for c, f in files:
        side["random"][(c, f)] = "AB"[rng.random() < 0.5]
    runs = sorted({run_of(c, f) for c, f in files})
    by_run = {r: "AB"[rng.random() < 0.5] for r in runs}
    for c, f in files:
        side["runs"][(c, f)] = by_run[run_of(c, f)]
    for split, sides in side.items():
        for (c, f), s in sides.items():
            d = os.path.join(work, f"{split}-{s}", c)
            os.makedirs(d, exist_ok=True)
            os.symlink(os.path.abspath(os.path.join(photos, c, f)), os.path.join(d, f))
    for split in side:
        for s in "AB":
            subprocess.run([fruits, "extract", "--input", f"{work}/{split}-{s}", "--output",
                            f"{work}/out-{split}-{s}", "--weights", weights, "--no-report"],
                           check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([fruits, "report", f"{work}/out-{split}-A", "--compare",
                              f"{work}/out-{split}-B", "--json"],
                             check=True, capture_output=True, text=True).stdout
        leak = json.loads(out)["checks"]["leakage"]
        print(f"{split}: {leak['leaking']} of {leak['photos']} photos of B "
              f"({100 * leak['share']:.1f} %) have a near-duplicate in A")


if __name__ == "__main__":
    main(*sys.argv[1:5])
