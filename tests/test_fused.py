"""FusedEnsemble against the sequential EnsembleModel."""

import csv
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import TINY_CLAP, randomise_batch_norm

from speechbrain_rsc.audio_ensemble import evaluate_models
from speechbrain_rsc.bank import BANK_FILENAME, find_banks
from speechbrain_rsc.brains import EnsembleBrain, EnsembleModel
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.ensemble import evaluate_banks
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.fused import (
    FusedEnsemble,
    architecture_mismatch,
    make_ensemble,
)
from speechbrain_rsc.models import build_backbone
from speechbrain_rsc.models.folding import fold_batch_norms

RATE = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"
SMALL_CNN6 = {"channels": (8, 16, 16, 32)}


def members_of(name, options, k=3):
    members = []
    for seed in range(k):
        torch.manual_seed(100 + seed)
        model = build_backbone(name, options)
        members.append(randomise_batch_norm(model, seed).eval())
    return members


def check_matches_sequential(
    members, wavs, prompts=None, lens=None, atol=1e-5, **options
):
    fused = FusedEnsemble(members, **options)
    sequential = EnsembleModel(members).eval()
    with torch.no_grad():
        got = fused.member_logits(wavs, lens, prompts)
        own = torch.stack([m(wavs, lens, prompts) for m in members])
        mean = fused(wavs, lens, prompts)
        expected = sequential(wavs, lens, prompts)
    assert got.shape == (len(members), len(wavs), 4)
    # the members really differ, so a wrong member order would show
    assert (own[0] - own[1]).abs().max() > 1e-3
    torch.testing.assert_close(got, own, atol=atol, rtol=0)
    torch.testing.assert_close(mean, expected, atol=atol, rtol=0)
    return fused


@pytest.mark.parametrize("max_vmap_batch", [None, "auto"])
def test_cnn6_fused_equals_sequential(max_vmap_batch):
    members = members_of("cnn6", {**SMALL_CNN6, "spec_augment": True})
    wavs = torch.randn(3, RATE)
    fused = check_matches_sequential(
        members, wavs, max_vmap_batch=max_vmap_batch
    )
    assert fused.front_end_name == "front_end"
    assert fused.sample_rate == RATE
    # the front end is not stacked: only the network after it
    names = fused.stacked_state()
    assert not any(n.startswith("front_end.") for n in names)
    # the blocks' batch norms are folded into their convolutions
    assert not any(".bn1." in n for n in names)
    assert names["conv_block1.conv1.bias"].shape == (3, 8)
    assert names["bn0.running_mean"].shape == (3, 128)
    assert names["head.weight"].shape == (3, 4, 32)
    # each member's convolution weights are channels-last
    weight = names["conv_block2.conv1.weight"]
    assert weight.shape == (3, 16, 8, 5, 5)
    assert weight[1].is_contiguous(memory_format=torch.channels_last)
    assert not weight[1].is_contiguous()
    # with one input channel too, with the strides .to(channels_last) sets
    first = names["conv_block1.conv1.weight"][2]
    assert first.stride() == (25, 1, 5, 1)
    folded = fold_batch_norms(members[2]).conv_block1.conv1.weight
    assert torch.equal(first, folded)
    assert fused.convolutional
    assert fused.vmap_limit(torch.device("cpu")) == (
        0 if max_vmap_batch == "auto" else None
    )
    assert fused.strategy(3, torch.device("cpu")) == (
        "loop" if max_vmap_batch == "auto" else "vmap"
    )
    # the members themselves are left as they were
    assert isinstance(members[0].conv_block1.bn1, torch.nn.BatchNorm2d)


def test_resnet18_fused_equals_sequential():
    members = members_of("resnet18", {"spec_augment": False})
    for max_vmap_batch in (None, "auto"):
        fused = check_matches_sequential(
            members, torch.randn(2, RATE), max_vmap_batch=max_vmap_batch
        )
        assert fused.convolutional


def test_bts_fused_equals_sequential_with_prompts_and_lens():
    members = members_of("bts", {"clap_config": TINY_CLAP}, k=2)
    wavs = torch.randn(2, 9600)
    prompts = [
        "This sound was recorded from the trachea of a patient.",
        "This sound was recorded from the left anterior chest.",
    ]
    lens = torch.tensor([1.0, 0.5])
    fused = check_matches_sequential(members, wavs, prompts, lens)
    assert fused.front_end_name == "features"
    # a transformer: vmapped at any batch size, weights as stacked
    assert not fused.convolutional
    assert fused.vmap_limit(torch.device("cpu")) is None
    assert fused.vmap_limit(torch.device("cuda")) is None


TINY_AST = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "duration": 1.0,
}


@pytest.mark.parametrize(
    "name, options, rate, atol",
    [
        # logits near 90 through 49 random batch norms: 1e-5 relative
        ("efficientnet_b0", {"spec_augment": False}, RATE, 1e-3),
        ("ast", TINY_AST, RATE, 1e-5),
        ("audio_clap", {"clap_config": TINY_CLAP}, 48000, 1e-5),
    ],
)
def test_every_other_backbone_can_be_vmapped(name, options, rate, atol):
    """With CNN6, ResNet18 and BTS above: no backbone needs the loop."""
    members = members_of(name, options, k=2)
    check_matches_sequential(
        members, torch.randn(2, rate), atol=atol, max_vmap_batch=None
    )


def test_large_batches_go_member_by_member(monkeypatch):
    members = members_of("cnn6", SMALL_CNN6, k=2)
    fused = FusedEnsemble(members, max_vmap_batch=2)
    calls = []
    vmap = torch.vmap

    def counting_vmap(*args, **kwargs):
        calls.append(1)
        return vmap(*args, **kwargs)

    monkeypatch.setattr(torch, "vmap", counting_vmap)
    wavs = torch.randn(3, RATE)
    with torch.no_grad():
        own = torch.stack([m(wavs) for m in members])
        torch.testing.assert_close(
            fused.member_logits(wavs), own, atol=1e-5, rtol=0
        )
        assert calls == []
        fused.member_logits(wavs[:2])
    assert calls == [1]
    assert fused.strategy(3, wavs.device) == "loop"
    assert fused.strategy(2, wavs.device) == "vmap"


def test_members_are_copied():
    members = members_of("cnn6", SMALL_CNN6, k=2)
    fused = FusedEnsemble(members)
    wavs = torch.randn(1, RATE)
    with torch.no_grad():
        before = fused(wavs)
        members[0].head.bias.add_(10.0)
        torch.testing.assert_close(fused(wavs), before)


class Plain(torch.nn.Module):
    sample_rate = RATE

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(5, 4)

    def forward(self, wavs, lens=None, prompts=None):
        return self.fc(wavs)


def test_converted_ensemble_uses_the_converted_tensors():
    torch.manual_seed(0)
    members = [Plain().eval() for _ in range(2)]
    fused = FusedEnsemble(members).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        got = fused.member_logits(x)
        own = torch.stack([m.double()(x) for m in members])
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, own)


class Branchy(Plain):
    """A member with data-dependent control flow, which vmap refuses."""

    def forward(self, wavs, lens=None, prompts=None):
        out = self.fc(wavs)
        if out.sum() > 0:
            return out
        return -out


def test_vmap_failure_is_raised_with_the_way_out():
    torch.manual_seed(0)
    members = [Branchy().eval() for _ in range(3)]
    wavs = torch.randn(6, 5)
    with torch.no_grad():
        own = torch.stack([m(wavs) for m in members])
        with pytest.raises(RuntimeError, match="data-dependent control") as e:
            FusedEnsemble(members).member_logits(wavs)
        assert "Branchy" in str(e.value) and "max_vmap_batch=0" in str(e.value)
        # the way out: member by member, never chosen behind the caller
        looped = FusedEnsemble(members, max_vmap_batch=0)
        assert looped.strategy(1, wavs.device) == "loop"
        torch.testing.assert_close(
            looped.member_logits(wavs), own, atol=1e-6, rtol=0
        )
        torch.testing.assert_close(
            looped(wavs), own.mean(dim=0), atol=1e-6, rtol=0
        )


def test_input_error_is_raised_not_swallowed():
    members = members_of("cnn6", SMALL_CNN6, k=2)
    fused = FusedEnsemble(members)
    with pytest.raises(ValueError, match="expected waveforms"):
        fused(torch.zeros(RATE))
    # a wrong feature width inside the network, vmapped or looped
    vmapped = FusedEnsemble([Plain(), Plain()])
    with pytest.raises(RuntimeError, match="batch2") as error:
        vmapped.member_logits(torch.zeros(2, 3))
    assert "max_vmap_batch" not in str(error.value)
    looped = FusedEnsemble([Plain(), Plain()], max_vmap_batch=0)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        looped.member_logits(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_vmap_batch must be"):
        FusedEnsemble([Plain(), Plain()], max_vmap_batch="always")


def test_training_mode_is_refused():
    fused = FusedEnsemble(members_of("cnn6", SMALL_CNN6, k=2))
    assert not fused.training
    fused.train()
    with pytest.raises(RuntimeError, match="eval mode only"):
        fused(torch.zeros(1, RATE))


def test_make_ensemble_fuses_only_one_architecture():
    same = members_of("cnn6", SMALL_CNN6, k=2)
    assert isinstance(make_ensemble(same), FusedEnsemble)
    assert type(make_ensemble(same, fused=False)) is EnsembleModel
    wider = build_backbone("cnn6", {"channels": (8, 16, 16, 64)}).eval()
    mixed = make_ensemble([*same, wider])
    assert type(mixed) is EnsembleModel
    problem = architecture_mismatch([*same, wider])
    assert problem.startswith("member 2 has another backbone_config")
    other = build_backbone("resnet18", {}).eval()
    assert "member 1 is a ResNet18, member 0 a CNN6" == (
        architecture_mismatch([same[0], other])
    )
    with pytest.raises(ValueError, match="one architecture: member 1 is a"):
        FusedEnsemble([same[0], other])


def test_settings_outside_the_state_are_compared():
    a, b = torch.nn.Dropout(0.1), torch.nn.Dropout(0.2)
    assert architecture_mismatch([a, b]) == (
        "member 1 has other settings in 'root'"
    )


class Tied(Plain):
    def __init__(self):
        super().__init__()
        self.out = torch.nn.Linear(5, 4)
        self.out.weight = self.fc.weight


def test_tied_tensors_are_refused_not_untied():
    with pytest.raises(ValueError, match="Tied shares tensors"):
        FusedEnsemble([Tied(), Tied()])


def write_manifest(folder, n, rng):
    rows = []
    for i in range(n):
        path = folder / f"c_{i}.wav"
        signal = rng.normal(0, 0.1, RATE).astype("float32")
        soundfile.write(path, signal, RATE, subtype="FLOAT")
        rows.append(
            {
                "ID": f"c_{i}",
                "wav": str(path),
                "duration": 1.0,
                "label": i % 4,
                "prompt": "p",
            }
        )
    with open(folder / "test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "test.csv"


def test_ensemble_brain_gives_the_same_bank(tmp_path):
    csv_path = write_manifest(tmp_path, 5, np.random.default_rng(0))
    dataset = dataio_prep({"test": csv_path}, RATE)["test"]
    members = members_of("cnn6", SMALL_CNN6)
    banks = []
    for model in (EnsembleModel(members), make_ensemble(members)):
        brain = EnsembleBrain(
            modules={"model": model},
            hparams={"test_dataloader_opts": {"batch_size": 2}},
            run_opts={"device": "cpu", "noprogressbar": True},
        )
        banks.append(brain.logit_bank({"test": dataset}, {}))
    assert banks[1].ids["test"] == [f"c_{i}" for i in range(5)]
    torch.testing.assert_close(
        banks[1].logits["test"], banks[0].logits["test"], atol=1e-5, rtol=0
    )


def test_ensemble_of_exported_models_scores_like_its_banks(tmp_path):
    manifest = write_manifest(tmp_path, 8, np.random.default_rng(1))
    dataset = dataio_prep({"test": manifest}, RATE)["test"]
    runs = tmp_path / "runs"
    for seed, member in enumerate(members_of("cnn6", SMALL_CNN6), start=1):
        save_trained(member, runs / str(seed) / "model", {"seed": seed})
        brain = EnsembleBrain(
            modules={"model": member},
            hparams={"test_dataloader_opts": {"batch_size": 3}},
            run_opts={"device": "cpu", "noprogressbar": True},
        )
        bank = brain.logit_bank({"test": dataset}, {"seed": seed})
        bank.save(runs / str(seed) / BANK_FILENAME)
    banks = find_banks(runs)
    expected = evaluate_banks(banks, "test")
    assert evaluate_models(banks, manifest, "cpu") == expected
    ensemble_py = runpy.run_path(str(RECIPE / "ensemble.py"))
    rows = ensemble_py["main"](
        [str(runs), "--k", "2", "--audio", str(manifest), "--device", "cpu"]
    )
    assert rows[0]["k"] == 2 and rows[0]["seeds"] == "1 2"
    assert rows[0]["score"] == evaluate_banks(banks[:2], "test")["score"]
    # a run whose model folder is gone is named
    shutil.rmtree(runs / "3" / "model")
    with pytest.raises(FileNotFoundError, match="3/model: no exported"):
        evaluate_models(banks, manifest, "cpu")
