"""Resuming past a checkpoint half-written by a crash."""

import logging
from pathlib import Path

import pytest
import torch
from speechbrain.utils import checkpoints as sb_checkpoints
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_rsc.checkpointer import Checkpointer

HPARAMS = Path(__file__).resolve().parents[1] / "recipes/ICBHI/hparams"
RECIPES = ["cnn6", "resnet18", "efficientnet", "ast", "audio_clap", "bts"]


class Run:
    """A tiny model and epoch counter saved after each 'epoch'."""

    def __init__(self, folder, cls=Checkpointer):
        self.model = torch.nn.Linear(3, 2)
        self.counter = EpochCounter(10)
        self.folder = folder
        self.checkpointer = cls(
            folder, {"model": self.model, "counter": self.counter}
        )

    def save(self, epoch, score):
        with torch.no_grad():
            for param in self.model.parameters():
                param.fill_(float(epoch))
        self.counter.current = epoch
        ckpt = self.checkpointer.save_checkpoint(
            meta={"score": score, "epoch": epoch}
        )
        return ckpt, {k: v.clone() for k, v in self.model.state_dict().items()}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def assert_weights(model, expected):
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize(
    "breakage, sb_error",
    [("model.ckpt", RuntimeError), ("CKPT.yaml", TypeError)],
)
def test_resume_falls_back_to_the_newest_readable(
    tmp_path, caplog, breakage, sb_error
):
    run = Run(tmp_path)
    older, older_weights = run.save(1, 0.5)
    newest, _ = run.save(2, 0.6)
    if breakage == "CKPT.yaml":
        (newest.path / breakage).write_text("")
    else:
        truncate(newest.path / breakage)

    plain = Run(tmp_path, cls=sb_checkpoints.Checkpointer)
    with pytest.raises(sb_error):
        plain.checkpointer.recover_if_possible()

    fresh = Run(tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = fresh.checkpointer.recover_if_possible()
    assert loaded.path == older.path
    assert_weights(fresh.model, older_weights)
    assert fresh.counter.current == 1
    warnings = " ".join(
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    )
    assert str(newest.path) in warnings

    # Training goes on: saving lists (and prunes) the checkpoints.
    fresh.save(2, 0.4)
    fresh.checkpointer.save_and_keep_only(
        meta={"score": 0.3, "epoch": 3}, max_keys=["score"]
    )
    kept = {c.path for c in fresh.checkpointer.list_checkpoints()}
    assert older.path in kept  # best readable score
    assert newest.path.is_dir()  # broken: left for the user to delete


def test_max_key_falls_back_in_score_order(tmp_path, caplog):
    run = Run(tmp_path)
    best, best_weights = run.save(1, 0.7)
    run.save(2, 0.2)
    broken, _ = run.save(3, 0.9)
    truncate(broken.path / "model.ckpt")

    fresh = Run(tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = fresh.checkpointer.recover_if_possible(max_key="score")
    assert loaded.path == best.path
    assert_weights(fresh.model, best_weights)
    assert f"Resuming from {best.path} instead; delete {broken.path}" in (
        caplog.text
    )
    # The broken one, though best by score, protects nothing from deletion.
    fresh.checkpointer.save_and_keep_only(
        meta={"score": 0.1, "epoch": 4}, max_keys=["score"]
    )
    kept = {c.path for c in fresh.checkpointer.list_checkpoints()}
    assert best.path in kept and len(kept) == 2


def test_no_readable_checkpoint_refuses_to_resume(tmp_path):
    run = Run(tmp_path)
    only, _ = run.save(1, 0.5)
    truncate(only.path / "model.ckpt")

    fresh = Run(tmp_path)
    with pytest.raises(RuntimeError, match="cannot resume") as error:
        fresh.checkpointer.recover_if_possible()
    assert str(only.path) in str(error.value)


def test_unreadable_meta_is_skipped_when_listing(tmp_path, caplog):
    run = Run(tmp_path)
    kept, _ = run.save(1, 0.5)
    cut, _ = run.save(2, 0.6)
    (cut.path / "CKPT.yaml").write_text("end-of-epoch: true\nepoch: 2\n")
    with caplog.at_level(logging.WARNING):
        listed = [c.path for c in run.checkpointer.list_checkpoints()]
        run.checkpointer.list_checkpoints()
    assert listed == [kept.path]
    skipped = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and str(cut.path) in r.getMessage()
    ]
    assert len(skipped) == 1  # warned once, not on every listing
    assert "Delete" in skipped[0].getMessage()


@pytest.mark.parametrize("name", RECIPES + [f"distill_{n}" for n in RECIPES])
def test_recipes_use_the_fallback_checkpointer(name):
    text = (HPARAMS / f"{name}.yaml").read_text()
    assert (
        "checkpointer: !new:speechbrain_rsc.checkpointer.Checkpointer" in text
    )
