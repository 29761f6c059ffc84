"""Refusals of the recipe steps that the recipe tests do not reach."""

import math

import numpy as np
import pytest
from test_brains import make_brain, write_split

from speechbrain_rsc.brains import TeacherBrain
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.models.cnn6 import CNN6
from speechbrain_rsc.provenance import ProvenanceMismatch, check_run
from speechbrain_rsc.recipe import (
    PreparedData,
    Protocol,
    evaluate_and_export,
    prepare_data,
    selection_set,
)


def test_empty_validation_split_names_the_real_cause(icbhi_sample, tmp_path):
    protocol = Protocol.named("validation", valid_fraction=0.15)
    data = prepare_data(
        data_folder=str(icbhi_sample),
        prepare_folder=str(tmp_path / "prepared"),
        sample_rate=4000,
        duration=1.0,
        pad="repeat",
        valid_fraction=protocol.valid_fraction,
        split_seed=1234,
    )
    assert len(data.datasets["valid"]) == 0
    with pytest.raises(ValueError) as error:
        selection_set(protocol, data)
    message = str(error.value)
    assert "valid_fraction is 0.15" in message
    assert "only 1 patient(s)" in message and "protocol: paper" in message


class NaNNet(CNN6):
    """A tiny CNN6 (so that it exports) whose logits are NaN."""

    sample_rate = 1000

    def forward(self, wavs, lens=None, prompts=None):
        return self.head.bias.expand(len(wavs), -1) * float("nan")


def test_non_finite_model_is_not_converged_and_not_scored(tmp_path):
    rng = np.random.default_rng(0)
    manifests = {
        split: write_split(tmp_path, split, n, rng)
        for split, n in [("train", 6), ("valid", 4), ("test", 5)]
    }
    data = PreparedData(
        datasets=dataio_prep(manifests, 1000),
        manifests=manifests,
        identity={},
        summary={},
    )
    brain, _ = make_brain(TeacherBrain, tmp_path, epochs=1)
    brain.modules["model"] = NaNNet(channels=[4, 8, 8, 8])
    brain.checkpointer.recoverables["model"] = brain.modules["model"]
    brain.optimizer_step = 1  # as if trained: the checkpoint records it
    brain.checkpointer.save_checkpoint(
        meta={"score": 1.0, "se": 9.0, "epoch": 1, "eligible": True}
    )
    brain.hparams.epoch_counter.current = 1
    out = str(tmp_path / "run")
    bank = evaluate_and_export(brain, data, out, {"role": "teacher"}, {})
    assert bank.info["converged"] is False
    for split in ("train", "valid", "test"):
        assert math.isnan(bank.info["metrics"][split]["score"])


def test_provenance_check_lists_every_difference(tmp_path):
    from speechbrain_rsc.provenance import record_run

    record_run(tmp_path, {"data": {"key": "a", "n": 1}, "teachers": []})
    with pytest.raises(ProvenanceMismatch) as error:
        check_run(tmp_path, {"data": {"key": "b", "n": 2}, "teachers": []})
    lines = str(error.value).splitlines()
    assert lines[1:3] == [
        "  - data.key: was 'a', now 'b'",
        "  - data.n: was 1, now 2",
    ]


@pytest.mark.parametrize(
    "name, valid_fraction, expected",
    [
        ("validation", 0.15, (0.15, "valid")),
        ("paper", 0.15, (0.0, "test")),
    ],
)
def test_protocol_decides_the_training_and_selection_splits(
    name, valid_fraction, expected
):
    protocol = Protocol.named(name, valid_fraction)
    assert (protocol.valid_fraction, protocol.select_on) == expected


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="validation or paper, not 'test'"):
        Protocol.named("test", 0.15)
