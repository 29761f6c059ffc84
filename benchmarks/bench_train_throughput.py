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

The other benchmarks import the helpers of this file.

Run from the repository root::

    python benchmarks/bench_train_throughput.py            # small, CPU
    python benchmarks/bench_train_throughput.py --device cuda \
        --recordings 120 --channels 64 128 256 512 --batch_size 128
"""

import argparse
import csv
import datetime
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import soundfile
import torch

# Small enough for a shared CPU; the GPU defaults are the paper's sizes.
CPU_DEFAULTS = {"channels": (16, 32, 64, 128), "recordings": 12}
GPU_DEFAULTS = {"channels": (64, 128, 256, 512), "recordings": 60}


# ---------------------------------------------------------------- helpers


def quiet_logs():
    """Warnings and errors only: the benchmarks print their own table."""
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)


def pick_device(name):
    """``name``, or CUDA when present, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_for_device(parser, cpu_defaults=None, gpu_defaults=None):
    """Parse the options, quiet the logs, pick the device and fill the
    options left unset with its defaults (this file's, unless given).

    Returns
    -------
    args : argparse.Namespace
    device : torch.device
    """
    args = parser.parse_args()
    quiet_logs()
    device = pick_device(args.device)
    if device.type == "cuda":
        defaults = GPU_DEFAULTS if gpu_defaults is None else gpu_defaults
    else:
        defaults = CPU_DEFAULTS if cpu_defaults is None else cpu_defaults
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    return args, device


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device):
    """CPU (and GPU) of this machine, as one table cell."""
    cpu = f"{cpu_model()} ({os.cpu_count()} CPUs)"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def print_environment(device):
    """The date, machine and torch version, as a Markdown table."""
    print("| date | machine | torch |")
    print("| --- | --- | --- |")
    now = datetime.datetime.now().isoformat(timespec="minutes")
    print(f"| {now} | {machine(device)} | {torch.__version__} |\n")


def print_table(header, rows, header_row=True):
    """A Markdown table; the first column left-aligned, the rest right.
    ``header_row=False`` continues a table already printed.
    """
    if header_row:
        print("| " + " | ".join(header) + " |")
        print("| --- |" + " ---: |" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")


def _cell(value):
    """Floats to 3 significant digits, without exponents."""
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def synchronize(device):
    """Wait for the device's queued work (timings on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_synthetic(work, recordings, duration, sample_rate=16000):
    """Write and prepare a synthetic ICBHI database under ``work``.

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` manifest paths.
    """
    from speechbrain_rsc.data.prepare import prepare_icbhi
    from speechbrain_rsc.data.synthetic import make_synthetic_icbhi

    data = make_synthetic_icbhi(Path(work) / "synthetic", recordings)
    outputs = prepare_icbhi(
        data,
        Path(work) / "prepared",
        sample_rate=sample_rate,
        duration=duration,
    )
    return {s: outputs[s] for s in ("train", "valid", "test")}


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


def build_student(channels, seed=0):
    """A CNN6 with SpecAugment, as the recipe trains it."""
    from speechbrain_rsc.models import build_backbone

    torch.manual_seed(seed)
    return build_backbone(
        "cnn6", {"channels": list(channels), "spec_augment": True}
    )


def timed_brain_class(base):
    """``base`` (an RSCBrain) recording the wall time of its train epochs."""

    class Timed(base):
        def on_stage_start(self, stage, epoch=None):
            super().on_stage_start(stage, epoch)
            synchronize(self.device)
            self.epoch_start = time.perf_counter()

        def on_stage_end(self, stage, stage_loss, epoch=None):
            synchronize(self.device)
            self.epoch_times.append(time.perf_counter() - self.epoch_start)
            super().on_stage_end(stage, stage_loss, epoch)

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


def run_brain(cls, model, train_set, args, device, *brain_args):
    """Train ``model`` with Brain class ``cls`` for 1 + ``args.epochs``
    epochs.

    Returns
    -------
    list of float
        Seconds of the timed epochs (the warm-up dropped).
    """
    from speechbrain.utils.epoch_loop import EpochCounter

    from speechbrain_rsc.schedules import CosineAnnealing

    epochs = 1 + args.epochs
    brain = timed_brain_class(cls)(
        *brain_args,
        modules={"model": model},
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-3),
        hparams={
            "seed": 1,
            "lr_schedule": CosineAnnealing(1e-3, epochs),
            "epoch_counter": EpochCounter(epochs),
            "channels_last": args.channels_last,
        },
        run_opts={
            "device": str(device),
            "noprogressbar": True,
            "precision": args.precision,
        },
    )
    brain.epoch_times = []
    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        train_loader_kwargs={
            "batch_size": args.batch_size,
            "shuffle": True,
            "num_workers": args.num_workers,
        },
    )
    return brain.epoch_times[1:]


AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def add_common_options(parser):
    """Options of the training benchmarks."""
    parser.add_argument("--device", default=None, help="default: cuda if any")
    parser.add_argument(
        "--recordings",
        type=int,
        default=None,
        help="synthetic recordings (CPU 12, GPU 60)",
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs")
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=None,
        help="CNN6 widths (CPU 16 32 64 128, GPU 64 128 256 512)",
    )
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--precision", choices=sorted(AMP_DTYPES), default="fp32"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: all)"
    )
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC model in both loops (the recipe's CNN6 setting)",
    )
    parser.add_argument("--work", type=Path, default=None)


# ------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--repeats", type=int, default=1)
    args, device = parse_for_device(parser)

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
