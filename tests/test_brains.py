"""Brain machinery on a tiny model and hand-written manifests."""

import copy
import csv

import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.run_opts import RunOptions

from speechbrain_rsc.brains import (
    DistillBrain,
    EnsembleBrain,
    EnsembleModel,
    TeacherBrain,
    _with_cuda_precision,
)
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.distillation import Targets
from speechbrain_rsc.metrics import mean_logits
from speechbrain_rsc.schedules import CosineAnnealing

RATE = 1000


class TinyNet(torch.nn.Module):
    sample_rate = RATE

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)
        )

    def forward(self, wavs, lens=None, prompts=None):
        feats = torch.stack([wavs.abs().mean(-1), wavs.std(-1)], dim=-1)
        return self.net(feats * 10)


def write_split(folder, split, n, rng, label_fn=None):
    rows = []
    for i in range(n):
        label = int(rng.integers(0, 4))
        sig = rng.normal(0, 0.05 + 0.05 * label, RATE).astype("float32")
        path = folder / f"{split}_{i}.wav"
        soundfile.write(path, sig, RATE, subtype="FLOAT")
        rows.append(
            {
                "ID": f"{split}_{i}",
                "wav": str(path),
                "duration": 1.0,
                "label": label,
                "prompt": "p",
            }
        )
    if label_fn is not None:
        rows = label_fn(rows)
    with open(folder / f"{split}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / f"{split}.csv"


@pytest.fixture
def manifests(tmp_path):
    rng = np.random.default_rng(0)
    return {
        split: write_split(tmp_path, split, n, rng)
        for split, n in [("train", 24), ("valid", 8), ("test", 10)]
    }


def make_brain(cls, tmp_path, epochs=2, **kwargs):
    torch.manual_seed(0)
    model = TinyNet()
    counter = EpochCounter(epochs)
    hparams = {
        "seed": 3,
        "lr_schedule": CosineAnnealing(0.05, epochs, lr_min=0.05e-3),
        "epoch_counter": counter,
        "test_dataloader_opts": {"batch_size": 5},
    }
    checkpointer = Checkpointer(
        tmp_path / "save", {"model": model, "counter": counter}
    )
    brain = cls(
        modules={"model": model},
        opt_class=lambda p: torch.optim.Adam(p, lr=0.05),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=checkpointer,
        **kwargs,
    )
    return brain, model


def fit(brain, datasets):
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs={"batch_size": 4, "shuffle": True},
        valid_loader_kwargs={"batch_size": 5},
    )


def test_teacher_learns_and_exports_bank(tmp_path, manifests):
    datasets = dataio_prep(manifests, RATE)
    brain, model = make_brain(TeacherBrain, tmp_path, epochs=3)
    before = [p.clone() for p in model.parameters()]
    fit(brain, datasets)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.parameters())
    )
    brain.evaluate(datasets["test"], max_key="score")
    bank = brain.logit_bank(datasets, {"seed": 3})
    assert bank.ids["test"] == [f"test_{i}" for i in range(10)]
    assert bank.info["metrics"]["test"] == brain.test_stats.summarize()
    # the bank holds what the model outputs for the cycle, by ID
    wav = soundfile.read(tmp_path / "test_4.wav", dtype="float32")[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(wav)[None])
    got = bank.logits_for("test", ["test_4"])
    assert torch.allclose(got, expected, atol=1e-6)


def test_sample_rate_mismatch_is_refused(manifests):
    with pytest.raises(ValueError, match="cached at 1000 Hz"):
        dataio_prep(manifests, 16000)


def test_ensemble_brain_equals_mean_of_member_banks(tmp_path, manifests):
    datasets = dataio_prep(manifests, RATE)
    members, banks = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        member = TinyNet().eval()
        brain, _ = make_brain(TeacherBrain, tmp_path / str(seed))
        brain.modules.model.load_state_dict(member.state_dict())
        banks.append(brain.logit_bank({"test": datasets["test"]}, {}))
        members.append(member)
    ens = EnsembleBrain(
        modules={"model": EnsembleModel(members)},
        hparams={"test_dataloader_opts": {"batch_size": 3}},
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    ens.evaluate(datasets["test"])
    ids = ens.test_stats.ids
    expected = mean_logits(
        torch.stack([b.logits_for("test", ids) for b in banks])
    )
    assert torch.allclose(torch.cat(ens.test_stats.logits), expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="evaluates trained members only"):
        ens.fit(None, None)


def train_student(tmp_path, manifests, mode, teacher_logits, ids):
    datasets = dataio_prep(manifests, RATE)
    soft = Targets(mode, k=3).soft_labels(ids, teacher_logits, seed=3)
    brain, model = make_brain(DistillBrain, tmp_path, soft_labels=soft)
    fit(brain, datasets)
    return model


def permute_labels(rows):
    labels = [r["label"] for r in rows]
    for row, label in zip(rows, labels[1:] + labels[:1]):
        row["label"] = label
    return rows


@pytest.mark.parametrize("mode", ["mean", "random"])
def test_hard_labels_do_not_reach_teacher_modes(tmp_path, manifests, mode):
    ids = [f"train_{i}" for i in range(24)]
    teacher_logits = torch.randn(
        3, 24, 4, generator=torch.Generator().manual_seed(1)
    )
    a = train_student(tmp_path / "a", manifests, mode, teacher_logits, ids)
    rng = np.random.default_rng(0)
    permuted = dict(manifests)
    permuted["train"] = write_split(
        tmp_path, "train", 24, rng, label_fn=permute_labels
    )
    b = train_student(tmp_path / "b", permuted, mode, teacher_logits, ids)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_hard_mode_does_use_labels(tmp_path, manifests):
    ids = [f"train_{i}" for i in range(24)]
    a = train_student(tmp_path / "a", manifests, "hard", None, ids)
    rng = np.random.default_rng(0)
    permuted = dict(manifests)
    permuted["train"] = write_split(
        tmp_path, "train", 24, rng, label_fn=permute_labels
    )
    b = train_student(tmp_path / "b", permuted, "hard", None, ids)
    assert any(
        not torch.equal(pa, pb)
        for pa, pb in zip(a.parameters(), b.parameters())
    )


def test_header_only_manifest_gives_empty_dataset(tmp_path, manifests):
    empty = tmp_path / "empty.csv"
    empty.write_text("ID,wav,duration,label,prompt\n")
    datasets = dataio_prep({**manifests, "valid": empty}, RATE)
    assert len(datasets["valid"]) == 0
    assert len(datasets["train"]) == 24


class TinyConvNet(torch.nn.Module):
    """A convolution over the waveform folded into a 2-d image."""

    sample_rate = RATE

    def __init__(self):
        super().__init__()
        # no bias: before a batch norm its gradient is rounding noise,
        # which Adam would scale up to full steps
        self.conv = torch.nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(6)
        self.out = torch.nn.Linear(6, 4)

    def forward(self, wavs, lens=None, prompts=None):
        image = wavs[:, :1000].reshape(-1, 2, 25, 20) * 10
        x = torch.relu(self.bn(self.conv(image)))
        return self.out(x.mean(dim=(2, 3)))


def test_channels_last_trains_as_nchw(tmp_path, manifests):
    datasets = dataio_prep(manifests, RATE)
    params = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = TinyConvNet()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        brain = TeacherBrain(
            modules={"model": model},
            opt_class=lambda p: torch.optim.Adam(p, lr=0.05),
            hparams={
                "seed": 3,
                "lr_schedule": CosineAnnealing(0.05, 2, lr_min=0.05e-3),
                "epoch_counter": EpochCounter(2),
                "channels_last": channels_last,
            },
            run_opts={"device": "cpu", "noprogressbar": True},
            checkpointer=Checkpointer(
                tmp_path / str(channels_last), {"model": model}
            ),
        )
        weight = model.conv.weight
        nhwc = weight.is_contiguous(memory_format=torch.channels_last)
        assert nhwc is channels_last
        assert weight.is_contiguous() is not channels_last
        fit(brain, datasets)
        params[len(params)] = dict(model.named_parameters())
    for name, value in params[1].items():
        assert not torch.equal(value, initial[name])
        torch.testing.assert_close(value, params[0][name], atol=1e-4, rtol=1e-4)


def test_loaders_pin_memory_on_cuda_only(tmp_path, manifests):
    dataset = dataio_prep(manifests, RATE)["test"]
    brain, _ = make_brain(TeacherBrain, tmp_path)
    loader = brain.make_dataloader(dataset, "test", ckpt_prefix=None)
    assert loader.pin_memory is False
    brain.device = "cuda:0"  # the loader is only built, never iterated
    loader = brain.make_dataloader(dataset, "test", ckpt_prefix=None)
    assert loader.pin_memory is True
    loader = brain.make_dataloader(
        dataset, "test", ckpt_prefix=None, pin_memory=False
    )
    assert loader.pin_memory is False


class TinyNetBN(TinyNet):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 4),
        )


def one_step(tmp_path, manifests, ma_beta):
    datasets = dataio_prep(manifests, RATE)
    brain, _ = make_brain(TeacherBrain, tmp_path / str(ma_beta), epochs=1)
    torch.manual_seed(0)
    brain.modules["model"] = TinyNetBN()
    brain.options.ma_beta = ma_beta
    brain.init_optimizers()
    loader = brain.make_dataloader(
        datasets["train"], sb.Stage.TRAIN, ckpt_prefix=None, batch_size=6
    )
    before = copy.deepcopy(brain.modules["model"].state_dict())
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.modules.train()
    brain.step = 1
    brain.fit_batch(next(iter(loader)))
    return before, brain.modules["model"].state_dict()


def test_moving_average_gives_the_averaged_weights(tmp_path, manifests):
    before, plain = one_step(tmp_path, manifests, ma_beta=None)
    same_before, averaged = one_step(tmp_path, manifests, ma_beta=0.5)
    assert set(averaged) == set(plain)
    for name, old in before.items():
        assert torch.equal(old, same_before[name])
        if not old.is_floating_point():  # num_batches_tracked
            assert torch.equal(averaged[name], plain[name])
            continue
        assert not torch.equal(plain[name], old), name
        expected = 0.5 * old + 0.5 * plain[name]
        assert torch.allclose(averaged[name], expected, atol=1e-7, rtol=0)
    # the batch-norm statistics are averaged too
    assert "net.1.running_mean" in before


def test_best_checkpoint_needs_se_above_best_min_se(tmp_path):
    brain, _ = make_brain(TeacherBrain, tmp_path, epochs=1)
    brain.options.best_min_se = 5.0

    def eligible(score, se):
        stats = {"score": score, "se": se}
        return brain.selection_meta(stats, epoch=1)["eligible"]

    assert not eligible(70.0, 4.9)
    assert not eligible(70.0, 5.0)
    assert eligible(55.0, 5.1)
    assert not eligible(float("nan"), 9)
    brain.options.best_min_se = None
    assert eligible(70.0, 0.0)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"device": "cuda:0"}, "fp16"),
        ({"device": "cuda:1", "precision": "fp32"}, "fp32"),
        ({"device": "cpu"}, None),
    ],
)
def test_mixed_precision_is_the_default_on_cuda_only(given, expected):
    options = RunOptions.from_dictionary(given)
    result = _with_cuda_precision(options, "fp16")
    assert result.get("precision") == expected
    assert result["device"] == given["device"]
