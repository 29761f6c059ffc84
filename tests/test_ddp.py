"""Teacher training under torchrun (2 CPU processes, gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_weights import panns_checkpoint, sha256

from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.brains import TeacherBrain
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.trained_model import load_trained

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"


@pytest.mark.parametrize("pretrained", [False, True])
def test_two_process_training_evaluates_like_one_process(tmp_path, pretrained):
    """With pretrained weights, only the main process collects them; the
    other loads what it linked into ``<save_folder>/pretrained``."""
    out = tmp_path / "out"
    weights = ["--use_pretrained=False"]
    if pretrained:
        source = tmp_path / "panns_cnn6.pth"  # no '=': see test_weights
        panns_checkpoint(source, seed=5)
        weights = ["--use_pretrained=True", f"--pretrained_path={source}"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        str(RECIPE / "train_teacher.py"),
        str(RECIPE / "hparams/cnn6.yaml"),
        "--distributed_backend=gloo",
        f"--output_folder={out}",
        f"--synthetic_folder={tmp_path / 'synthetic'}",
        f"--prepare_folder={tmp_path / 'prepared'}",
        *weights,
        "--synthetic_recordings=8",
        "--duration=1.0",
        "--number_of_epochs=1",
        "--batch_size=4",
        "--num_workers=0",
        "--channels=[8, 16, 16, 32]",
        "--spec_augment=False",
        "--noprogressbar",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command,
        cwd=RECIPE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bank = LogitBank.load(out / BANK_FILENAME)
    link = out / "save" / "pretrained" / "model.ckpt"
    assert link.exists() is pretrained
    if pretrained:
        assert link.resolve() == source.resolve()
        assert bank.info["weights"]["sha256"] == sha256(source)

    # one process, same exported checkpoint, same test manifest
    model, _ = load_trained(out / "model")
    brain = TeacherBrain(
        modules={"model": model},
        hparams={"test_dataloader_opts": {"batch_size": 3}},
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    key = bank.info["provenance"]["data"]["key"]
    manifest = tmp_path / "prepared" / f"manifests_{key}" / "test.csv"
    test = dataio_prep({"test": manifest}, 16000)
    stats = brain.collect_logits(test["test"])
    recorded = bank.info["metrics"]["test"]  # with its intervals
    assert stats.summarize() == {k: recorded[k] for k in ("sp", "se", "score")}
    single = torch.cat(stats.logits)
    assert torch.allclose(single, bank.logits_for("test", stats.ids), atol=1e-5)
