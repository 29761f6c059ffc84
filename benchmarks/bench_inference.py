#!/usr/bin/env python3
"""Inference latency and throughput: one student vs a k-member ensemble,
sequential (``EnsembleModel``) vs fused (``FusedEnsemble``).

For CNN6 (16 kHz) and, when ``speechbrain_rsc.models.clap`` exists, BTS
(48 kHz, with metadata prompts), all with random weights, on 8-s cycles:
the median time of a batch of 1 (latency) and cycles per second at a
larger batch (throughput), in eval mode under ``torch.no_grad``. The
ensemble members differ (one seed each); the fused and sequential
ensembles are checked to agree (the last column), and the fused row
says how each batch size was evaluated (``FusedEnsemble.strategy``:
``vmap`` or ``loop``). The student is
prepared for inference as ``rsc-classify`` prepares it
(``speechbrain_rsc.models.folding.for_inference``); the sequential
ensemble is the members as trained.

Run from the repository root::

    python benchmarks/bench_inference.py                    # CPU, small
    python benchmarks/bench_inference.py --device cuda      # full sizes
    python benchmarks/bench_inference.py --channels 16 32 64 128 --bts off
"""

import argparse
import importlib.util
import statistics
import time

import torch
from common import (
    AMP_DTYPES,
    add_device_options,
    parse_for_device,
    print_environment,
    print_table,
    synchronize,
)

CPU_DEFAULTS = {"batch": 8, "iters": 2, "bts": "tiny"}
GPU_DEFAULTS = {"batch": 64, "iters": 30, "bts": "full"}
TINY_CLAP = {
    "projection_dim": 32,
    "audio_config": {
        "patch_embeds_hidden_size": 16,
        "hidden_size": 128,
        "depths": [1, 1, 2, 1],
        "num_attention_heads": [1, 2, 4, 8],
    },
    "text_config": {
        "vocab_size": 400,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 66,
    },
}


def build_members(name, options, k):
    """``k`` backbones with random weights, one seed each, in eval mode."""
    from speechbrain_rsc.models import build_backbone

    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(build_backbone(name, options).eval())
    return members


def cycles(sample_rate, duration, batch, device, with_prompts):
    """Random 8-s cycles ``[batch, samples]`` and their prompts."""
    from speechbrain_rsc.data.prompts import bts_prompt

    wavs = torch.randn(batch, int(sample_rate * duration), device=device)
    prompts = None
    if with_prompts:
        locations = ["Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"]
        prompts = [
            bts_prompt(locations[i % 7], "adult", "M", "Meditron")
            for i in range(batch)
        ]
    return wavs, prompts


def median_seconds(model, wavs, prompts, iters, warmup, device, dtype):
    """Median wall time of ``model(wavs, None, prompts)``."""
    times = []
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
    ):
        for i in range(warmup + iters):
            synchronize(device)
            start = time.perf_counter()
            model(wavs, None, prompts)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_family(label, members, sample_rate, args, device, with_prompts):
    """Table rows of one backbone: student, sequential and fused."""
    from speechbrain_rsc.brains import EnsembleModel
    from speechbrain_rsc.fused import FusedEnsemble
    from speechbrain_rsc.models.folding import for_inference

    members = [m.to(device) for m in members]
    models = [
        ("student", 1, for_inference(members[0])),
        ("sequential", len(members), EnsembleModel(members).eval()),
        (
            "fused",
            len(members),
            FusedEnsemble(members, max_vmap_batch=args.max_vmap_batch),
        ),
    ]
    dtype = AMP_DTYPES[args.precision]
    small = cycles(sample_rate, args.duration, 1, device, with_prompts)
    large = cycles(sample_rate, args.duration, args.batch, device, with_prompts)
    with torch.no_grad():
        reference = models[1][2](small[0], None, small[1])
        gap = (models[2][2](small[0], None, small[1]) - reference).abs().max()
    rows, sequential_rate = [], None
    for kind, k, model in models:
        latency = median_seconds(
            model, *small, args.iters, args.warmup, device, dtype
        )
        seconds = median_seconds(
            model, *large, args.iters, args.warmup, device, dtype
        )
        rate = args.batch / seconds
        if kind == "sequential":
            sequential_rate = rate
        versus = f"{rate / sequential_rate:.2f}x" if sequential_rate else "-"
        if kind == "student":
            versus = "-"
        rows.append(
            [
                f"{label} {kind}",
                k,
                latency * 1000,
                rate,
                versus,
                f"{gap.item():.1e}" if kind == "fused" else "-",
            ]
        )
    fused = models[2][2]
    rows[-1][0] += (
        f" ({fused.strategy(1, device)} at 1, "
        f"{fused.strategy(args.batch, device)} at {args.batch})"
    )
    return rows


def vmap_batch(text):
    """``--max_vmap_batch``: an int, ``none`` or ``auto``."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    return int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_options(parser)
    parser.add_argument("--k", type=int, default=5, help="ensemble members")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=[64, 128, 256, 512],
        help="CNN6 widths (default: full size)",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="throughput batch (CPU 8)"
    )
    parser.add_argument(
        "--iters", type=int, default=None, help="timed calls (CPU 2, GPU 30)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--max_vmap_batch",
        type=vmap_batch,
        default="auto",
        help="FusedEnsemble's: larger batches go member by member "
        "(an int, 'none': always vmap, or 'auto')",
    )
    parser.add_argument(
        "--bts",
        choices=["full", "tiny", "off"],
        default=None,
        help="BTS size (CPU tiny, GPU full)",
    )
    args, device = parse_for_device(parser, CPU_DEFAULTS, GPU_DEFAULTS)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    print_environment(device)
    print(
        f"{args.duration:g}-s cycles, k={args.k}, latency: batch 1, "
        f"throughput: batch {args.batch}; median of {args.iters} calls after "
        f"{args.warmup} warm-up; {args.precision}, no_grad, {device}; "
        f"fused max_vmap_batch {args.max_vmap_batch}\n"
    )
    header = [
        "model",
        "members",
        "latency (ms)",
        "cycles/s",
        "vs sequential",
        "max abs diff",
    ]
    members = build_members(
        "cnn6", {"channels": list(args.channels), "spec_augment": True}, args.k
    )
    rows = bench_family(
        f"CNN6 {tuple(args.channels)}", members, 16000, args, device, False
    )
    # Printed now: a failure with BTS keeps the CNN6 rows.
    print_table(header, rows)
    del members, rows
    if importlib.util.find_spec("speechbrain_rsc.models.clap") is None:
        print("\nBTS skipped: speechbrain_rsc.models.clap is missing")
    elif args.bts == "off":
        print("\nBTS skipped (--bts off)")
    else:
        options = {} if args.bts == "full" else {"clap_config": TINY_CLAP}
        members = build_members("bts", options, args.k)
        rows = bench_family(
            f"BTS ({args.bts})", members, 48000, args, device, True
        )
        print_table(header, rows, header_row=False)


if __name__ == "__main__":
    main()
