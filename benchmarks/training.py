"""What the training benchmarks share: synthetic prepared cycles, the CNN6
student and timed Brain epochs.

Used by ``bench_train_throughput.py`` (Brain vs a plain loop) and
``bench_distill_epoch.py`` (distillation vs hard-label epochs), which
import it by name (their folder is on ``sys.path``).

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_training_options(parser)
>>> args = parser.parse_args(["--channels", "8", "16", "16", "32"])
>>> args.channels, args.batch_size, args.channels_last
([8, 16, 16, 32], 16, True)
"""

import argparse
import time
from pathlib import Path

import torch
from common import add_device_options, synchronize

# Small enough for a shared CPU; the GPU ones are the paper's sizes.
CPU_DEFAULTS = {"channels": (16, 32, 64, 128), "recordings": 12}
GPU_DEFAULTS = {"channels": (64, 128, 256, 512), "recordings": 60}


def add_training_options(parser):
    """Options of the training benchmarks (with those of
    :func:`common.add_device_options`); the sizes left ``None`` take
    :data:`CPU_DEFAULTS` or :data:`GPU_DEFAULTS`.
    """
    add_device_options(parser)
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
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC model in both loops (the recipe's CNN6 setting)",
    )
    parser.add_argument("--work", type=Path, default=None)


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


def build_student(channels, seed=0):
    """A CNN6 with SpecAugment, as the recipe trains it.

    Example
    -------
    >>> type(build_student((4, 8, 8, 16))).__name__
    'CNN6'
    """
    from speechbrain_rsc.models import build_backbone

    torch.manual_seed(seed)
    return build_backbone(
        "cnn6", {"channels": list(channels), "spec_augment": True}
    )


def timed_brain_class(base):
    """``base`` (an RSCBrain) recording the wall time of its train epochs
    in ``epoch_times``.
    """

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
