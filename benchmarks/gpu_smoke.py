"""One training epoch of CNN6 and BTS on a full-scale synthetic ICBHI set.

Prints the date, machine and torch version, then a Markdown table:
backbone, precision, batch size, train cycles/s over the epoch, evaluation
cycles/s, peak GPU memory. Run through
``benchmarks/gpu_smoke.sh`` on a lent GPU; ``--recordings 20 --device cpu``
checks it on a laptop.
"""

import argparse
import os
import time

import torch
from common import print_environment, print_table
from hyperpyyaml import load_hyperpyyaml

from speechbrain_rsc.brains import TeacherBrain
from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.data.synthetic import make_synthetic_icbhi
from speechbrain_rsc.dataio import dataio_prep

HPARAMS = os.path.join(
    os.path.dirname(__file__), "..", "recipes", "ICBHI", "hparams"
)
RUNS = {  # backbone: (yaml, batch size)
    "cnn6": ("cnn6.yaml", 128),
    "bts": ("bts.yaml", 8),
}


def one_epoch(name, data, out, device, precision, workers, max_batches):
    """Train one epoch and evaluate once; return throughput and memory."""
    yaml_file, batch = RUNS[name]
    overrides = {
        "data_folder": data,
        "output_folder": os.path.join(out, name),
        "number_of_epochs": 1,
        "batch_size": batch,
        "num_workers": workers,
        "use_pretrained": False,  # throughput only: random weights
    }
    with open(os.path.join(HPARAMS, yaml_file), encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    manifests = prepare_icbhi(
        data,
        os.path.join(out, f"prepared_{hparams['sample_rate']}"),
        sample_rate=hparams["sample_rate"],
    )
    splits = {s: manifests[s] for s in ("train", "valid", "test")}
    datasets = dataio_prep(splits, hparams["sample_rate"])
    run_opts = {
        "device": device,
        "precision": precision,
        "eval_precision": precision,
        "noprogressbar": True,
        "debug": max_batches > 0,
        "debug_batches": max_batches,
        "debug_epochs": 1,
    }
    brain = TeacherBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    n_train = len(datasets["train"])
    if max_batches > 0:
        n_train = min(n_train, max_batches * batch)
    start = time.perf_counter()
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=dict(hparams["train_dataloader_opts"]),
        valid_loader_kwargs=dict(hparams["test_dataloader_opts"]),
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    stats = brain.collect_logits(datasets["test"])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    eval_s = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.startswith("cuda")
        else float("nan")
    )
    return {
        "backbone": name,
        "batch": batch,
        "train_cycles": n_train,
        # the epoch includes the validation pass, as a real epoch does
        "train_cycles_per_s": n_train / train_s,
        "eval_cycles_per_s": len(stats.ids) / eval_s,
        "peak_gib": peak,
        "test_score": stats.summarize()["score"],
    }


def main():
    """Generate data, run each backbone, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/gpu_smoke")
    parser.add_argument("--recordings", type=int, default=920)
    parser.add_argument("--backbones", nargs="+", default=list(RUNS))
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--max_batches", type=int, default=0, help="cap per epoch (0: all)"
    )
    args = parser.parse_args()
    data = os.path.join(args.out, "synthetic")
    if not os.path.isdir(data):
        start = time.perf_counter()
        make_synthetic_icbhi(data, recordings=args.recordings, seed=0)
        print(f"synthetic data: {time.perf_counter() - start:.0f} s")
    rows = []
    for backbone in args.backbones:
        rows.append(
            one_epoch(
                backbone,
                data,
                args.out,
                args.device,
                args.precision,
                args.workers,
                args.max_batches,
            )
        )
        print(rows[-1], flush=True)
    print()
    print_environment(torch.device(args.device))
    print_table(
        [
            "backbone",
            "precision",
            "batch",
            "train cycles",
            "train cycles/s",
            "eval cycles/s",
            "peak GPU memory (GiB)",
        ],
        [
            [
                row["backbone"],
                args.precision,
                row["batch"],
                row["train_cycles"],
                row["train_cycles_per_s"],
                row["eval_cycles_per_s"],
                row["peak_gib"],
            ]
            for row in rows
        ],
    )


if __name__ == "__main__":
    main()
