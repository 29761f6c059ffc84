#!/usr/bin/env python3
"""Time the patient bootstrap, paired gains and calibration at the size
of the full paper's report.

The official ICBHI test split: 2756 cycles of 49 patients; 200 models
(the paper's 180 runs and their ensembles), 1000 resamples each. Two
ways are timed: every model in one call (count tables of all models and
one matrix product) and one model at a time, as ``ensemble.py`` and the
report call :func:`speechbrain_rsc.uncertainty.summary` (intervals, ECE
and Brier). Random logits and labels; prints a Markdown table.

Run from the repository root::

    python benchmarks/bench_bootstrap.py [--models 200] [--resamples 1000]
"""

import argparse
import time

import numpy as np
import torch
from common import print_environment, print_table

from speechbrain_rsc.uncertainty import (
    PatientBootstrap,
    calibration,
    interval,
    paired_gain,
    scores_from_counts,
    summary,
)

# test cycles per class in the official split: normal, crackle, wheeze, both
CLASS_COUNTS = (1579, 649, 385, 143)


def icbhi_like(patients, seed=0):
    """Cycle IDs spread over ``patients`` and labels in ICBHI's shares."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), CLASS_COUNTS)
    rng.shuffle(labels)
    owner = rng.integers(0, patients, len(labels))
    ids = [f"{100 + p}_1b1_Al_sc_AKGC417L_{i}" for i, p in enumerate(owner)]
    return ids, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=49)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ids, labels = icbhi_like(args.patients)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(args.models, len(ids), 4))
    logits[..., 0] += 0.5

    def batched():
        boot = PatientBootstrap(ids, args.resamples, seed=0)
        counts = boot.counts(logits.argmax(-1), labels)
        samples = boot.samples(logits.argmax(-1), labels)
        points = scores_from_counts(counts.sum(axis=-2))
        for m in range(args.models):
            for i in range(3):
                interval(samples[m, :, i], points[m, i])
            calibration(logits[m], labels)
        paired_gain(samples[1:, :, 2].mean(0), samples[0, :, 2])

    def one_by_one():
        for m in range(args.models):
            summary(ids, logits[m], labels, args.resamples, seed=0)

    rows = []
    for name, run in (
        ("all models in one call", batched),
        ("one model at a time (summary)", one_by_one),
    ):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows.append(
            [name, args.models, args.resamples, float(np.median(times))]
        )
    print_environment(torch.device("cpu"))
    print(f"{len(ids)} cycles, {args.patients} patients")
    print_table(["path", "models", "resamples", "seconds"], rows)


if __name__ == "__main__":
    main()
