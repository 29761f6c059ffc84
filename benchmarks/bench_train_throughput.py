#!/usr/bin/env python3
"""Training throughput of ``TeacherBrain`` against a plain PyTorch loop.

Both train the same CNN6 (same class, options and initial weights) on the
same prepared synthetic cycles, with the same batch size, Adam and loss
(cross-entropy on hard labels). The Brain reads the cycles through
``dataio_prep`` (a ``DynamicItemDataset`` over the prepared wav files);
the plain loop reads the same files once into memory and iterates a
``TensorDataset`` with a ``DataLoader``. The first epoch of each is a
warm-up; throughput is cycles per second over the timed epochs (training
only, no validation). Target: the Brain at 0.9x the plain loop or better.

Run from the repository root::

    python benchmarks/bench_train_throughput.py            # small, CPU
    python benchmarks/bench_train_throughput.py --device cuda \
        --recordings 120 --channels 64 128 256 512 --batch_size 128
"""

import argparse
import csv
import statistics
import tempfile
import time

import soundfile
import torch
from common import (
    AMP_DTYPES,
    parse_for_device,
    print_environment,
    print_table,
    synchronize,
)
from training import (
    CPU_DEFAULTS,
    GPU_DEFAULTS,
    add_training_options,
    build_student,
    prepare_synthetic,
    run_brain,
)


def read_cycles(csv_path):
    """The manifest's cycles read into memory.

    Returns
    -------
    ids : list of str
    wavs : torch.Tensor
        ``[n, samples]`` float32.
    labels : torch.Tensor
        ``[n]`` int64.
    """
    from speechbrain_rsc.bank import read_manifest

    ids, labels = read_manifest(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        paths = [row["wav"] for row in csv.DictReader(f)]
    wavs = [soundfile.read(p, dtype="float32")[0] for p in paths]
    return ids, torch.stack([torch.from_numpy(w) for w in wavs]), labels


def run_plain(model, wavs, labels, args, device):
    """The minimal loop: DataLoader, forward, cross-entropy, Adam.

    Returns
    -------
    list of float
        Seconds of the timed epochs (the warm-up dropped).
    """
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(wavs, labels),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
    )
    dtype = AMP_DTYPES[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    times = []
    for _ in range(1 + args.epochs):
        synchronize(device)
        start = time.perf_counter()
        for batch_wavs, batch_labels in loader:
            batch_wavs = batch_wavs.to(device, non_blocking=True)
            batch_labels = batch_labels.to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=dtype, enabled=dtype is not None
            ):
                logits = model(batch_wavs)
            loss = torch.nn.functional.cross_entropy(
                logits.float(), batch_labels
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_options(parser)
    parser.add_argument("--repeats", type=int, default=1)
    args, device = parse_for_device(parser, CPU_DEFAULTS, GPU_DEFAULTS)

    from speechbrain_rsc.brains import TeacherBrain
    from speechbrain_rsc.dataio import dataio_prep

    with tempfile.TemporaryDirectory(dir=args.work) as work:
        manifests = prepare_synthetic(work, args.recordings, args.duration)
        train_set = dataio_prep({"train": manifests["train"]}, 16000)["train"]
        _, wavs, labels = read_cycles(manifests["train"])
        n = len(labels)
        brain_rates, plain_rates = [], []
        for _ in range(args.repeats):
            model = build_student(args.channels)
            initial = {k: v.clone() for k, v in model.state_dict().items()}
            times = run_plain(model, wavs, labels, args, device)
            plain_rates.append(n * len(times) / sum(times))
            model = build_student(args.channels)
            model.load_state_dict(initial)
            times = run_brain(TeacherBrain, model, train_set, args, device)
            brain_rates.append(n * len(times) / sum(times))

    plain = statistics.median(plain_rates)
    brain = statistics.median(brain_rates)
    print_environment(device)
    print(
        f"CNN6 {tuple(args.channels)}, {n} train cycles of "
        f"{args.duration:g} s, batch {args.batch_size}, {args.epochs} timed "
        f"epochs after 1 warm-up, {args.repeats} repeat(s) (median), "
        f"{args.precision}, num_workers {args.num_workers}, channels_last "
        f"{args.channels_last}, {device}\n"
    )
    print_table(
        ["loop", "cycles/s", "vs plain"],
        [
            ["plain PyTorch", plain, "1.00x"],
            ["TeacherBrain", brain, f"{brain / plain:.2f}x"],
        ],
    )


if __name__ == "__main__":
    main()
