#!/usr/bin/env python3
"""Time of a distillation epoch against a hard-label epoch.

The same CNN6 student (same initial weights) is trained on the same
prepared synthetic cycles by ``DistillBrain`` (targets from a teacher
bank: a random ``[k, n, 4]`` logit bank keyed by the train manifest's
cycle IDs, turned into targets by ``Targets.soft_labels``, mode ``mean`` by
default) and by ``TeacherBrain`` (hard labels). Each repeat runs one
warm-up epoch and ``--epochs`` timed epochs of each, alternating which
goes first; the table gives the median epoch time. Target: distillation
at most 1.05x the hard-label epoch.

Run from the repository root::

    python benchmarks/bench_distill_epoch.py                # small, CPU
    python benchmarks/bench_distill_epoch.py --device cuda --repeats 5
"""

import argparse
import statistics
import tempfile

import torch
from common import parse_for_device, print_environment, print_table
from training import (
    CPU_DEFAULTS,
    GPU_DEFAULTS,
    add_training_options,
    build_student,
    prepare_synthetic,
    run_brain,
)


def teacher_bank_targets(train_csv, k, mode, seed=0):
    """Soft labels of ``mode`` from random teacher logits ``[k, n, 4]``
    for the manifest's cycle IDs.
    """
    from speechbrain_rsc.bank import read_manifest
    from speechbrain_rsc.distillation import Targets

    ids, _ = read_manifest(train_csv)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, len(ids), 4, generator=generator) * 2
    return Targets(mode, k).soft_labels(ids, logits, seed=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_options(parser)
    parser.set_defaults(epochs=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=5, help="teachers")
    parser.add_argument("--mode", default="mean", help="teacher_mode")
    args, device = parse_for_device(parser, CPU_DEFAULTS, GPU_DEFAULTS)

    from speechbrain_rsc.brains import DistillBrain, TeacherBrain
    from speechbrain_rsc.dataio import dataio_prep

    with tempfile.TemporaryDirectory(dir=args.work) as work:
        manifests = prepare_synthetic(work, args.recordings, args.duration)
        train_set = dataio_prep({"train": manifests["train"]}, 16000)["train"]
        soft_labels = teacher_bank_targets(
            manifests["train"], args.k, args.mode
        )
        brains = {
            "hard": (TeacherBrain, ()),
            "distill": (DistillBrain, (soft_labels,)),
        }
        initial = build_student(args.channels).state_dict()
        times = {"hard": [], "distill": []}
        for repeat in range(args.repeats):
            order = ["hard", "distill"]
            if repeat % 2:
                order.reverse()
            for kind in order:
                model = build_student(args.channels)
                model.load_state_dict(initial)
                cls, extra = brains[kind]
                times[kind].extend(
                    run_brain(cls, model, train_set, args, device, *extra)
                )

    n = len(train_set)
    hard = statistics.median(times["hard"])
    distill = statistics.median(times["distill"])
    print_environment(device)
    print(
        f"CNN6 {tuple(args.channels)}, {n} train cycles of "
        f"{args.duration:g} s, batch {args.batch_size}, teacher_mode "
        f"{args.mode} from a random k={args.k} bank, {args.repeats} repeats "
        f"x {args.epochs} timed epoch(s) after 1 warm-up, median, "
        f"{args.precision}, num_workers {args.num_workers}, {device}\n"
    )
    print_table(
        ["epoch", "seconds (median)", "min", "max", "vs hard"],
        [
            [
                "hard labels (TeacherBrain)",
                hard,
                min(times["hard"]),
                max(times["hard"]),
                "1.00x",
            ],
            [
                f"distillation, {args.mode} teacher (DistillBrain)",
                distill,
                min(times["distill"]),
                max(times["distill"]),
                f"{distill / hard:.3f}x",
            ],
        ],
    )


if __name__ == "__main__":
    main()
