#!/usr/bin/env python3
"""A run killed at half and resumed, against a full run (README: Keeping results up to date).

For each of `rounds` rounds: a full run on the photos (timed); then the same command on a new
output, SIGKILLed once half of its tasks have staged their reports, and started again (both
timed), printing the summary's resumed and featurised counts. With `--sigint`, the run is
stopped with SIGINT (Ctrl-C) instead, and how long it took to stop and its line are printed.
With `--tasks`, also times full runs in tasks of 512 photos against one task per thread (the
layout before resume), alternating.

    python3 scripts/resume-vs-full.py target/release/fruits ../shared/fruits-360/Test \
        ../shared/models/mobilenet_v2_1.0_224 /tmp/resume [rounds] [--sigint] [--tasks]
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def command(fruits, photos, weights, output, *extra):
    return [fruits, "extract", "--input", photos, "--output", output, "--weights", weights,
            "--threads", "2", *extra]


def timed(cmd):
    start = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - start, out


def staged(output):
    parent, name = os.path.split(output)
    return len(glob.glob(os.path.join(parent, f".{name}.fruits-staging-*", "_reports", "features-*")))


def main(fruits, photos, weights, work, rounds=2, *flags):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tasks = None
    for r in range(1, int(rounds) + 1):
        seconds, _ = timed(command(fruits, photos, weights, f"{work}/full-{r}"))
        print(f"full {r}: {seconds:.1f} s")
        cmd = command(fruits, photos, weights, f"{work}/resumed-{r}")
        start = time.monotonic()
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        if tasks is None:
            # 2 threads, tasks of 512 photos in whole rounds of 2: as the engine splits them.
            n = sum(len(files) for _, _, files in os.walk(photos))
            tasks = -(-n // 1024) * 2
        while staged(f"{work}/resumed-{r}") < tasks // 2:
            time.sleep(0.05)
        sent = time.monotonic()
        first.send_signal(signal.SIGINT if "--sigint" in flags else signal.SIGKILL)
        line = first.communicate()[1].strip().splitlines()[-1:]
        killed = time.monotonic() - start
        done = staged(f"{work}/resumed-{r}")
        if "--sigint" in flags:
            print(f"stopped {time.monotonic() - sent:.2f} s after SIGINT, status "
                  f"{first.returncode}: {' '.join(line)}")
        seconds, out = timed(cmd)
        summary = json.load(open(f"{work}/resumed-{r}/_SUCCESS"))
        print(f"killed {r} after {killed:.1f} s with {done} of {tasks} tasks staged; "
              f"the same command then took {seconds:.1f} s: resumed {summary['resumed']}, "
              f"featurised {summary['featurized']} ({killed + seconds:.1f} s in all)")
    if "--tasks" in flags:
        for r in range(1, int(rounds) + 1):
            for per_task in (["512", "1000000"] if r % 2 else ["1000000", "512"]):
                out = f"{work}/tasks-{per_task}-{r}"
                seconds, _ = timed(command(fruits, photos, weights, out,
                                           "--images-per-task", per_task))
                print(f"tasks of {per_task} photos, round {r}: {seconds:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
