#!/usr/bin/env python3
"""Time ``prepare_icbhi`` on a full-scale synthetic ICBHI database.

Writes a synthetic database of 920 recordings (about 6900 cycles, 1.7 GB)
with ``make_synthetic_icbhi``, then times a fresh preparation at 16 kHz
(about 3.4 GB of cached cycles) and a second, cached call (which still
fingerprints the recordings, from the digests the first call kept, checks
each manifest's SHA-256 and that every cycle of the manifests exists), and
prints a Markdown table. Everything goes to a temporary folder that is
deleted at the end unless ``--keep`` is given; a folder
given with ``--work`` is kept.

Run from the repository root::

    python benchmarks/bench_prepare.py [--recordings 920] [--work DIR] [--keep]
"""

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.data.synthetic import make_synthetic_icbhi


def machine():
    """A short description of this machine."""
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}"


def timed(function, *args, **kwargs):
    begin = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - begin


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=920)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        data, generate_s = timed(
            make_synthetic_icbhi, work / "synthetic", args.recordings, args.seed
        )
        save = work / "prepared"
        shutil.rmtree(save, ignore_errors=True)
        outputs, prepare_s = timed(prepare_icbhi, data, save)
        cached, cached_s = timed(prepare_icbhi, data, save)
        if cached != outputs:
            raise RuntimeError(f"the cached call prepared again: {cached}")
        splits = json.loads(Path(outputs["summary"]).read_text())["splits"]
        cycles = splits["total"]["cycles"]
        recordings = splits["total"]["recordings"]
        print(f"synthetic database written in {generate_s:.1f} s\n")
        print("| run | recordings | cycles | seconds | machine |")
        print("| --- | ---: | ---: | ---: | --- |")
        for run, seconds in (("fresh", prepare_s), ("cached", cached_s)):
            print(
                f"| {run} 16 kHz | {recordings} | {cycles} | {seconds:.1f} "
                f"| {machine()} |"
            )
    finally:
        if args.keep or args.work is not None:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
