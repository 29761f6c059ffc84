import json
import math
import random
import runpy
from pathlib import Path

import pytest
import torch

from speechbrain_rsc.bank import (
    BankMismatchError,
    LogitBank,
    check_consistent,
    find_banks,
    ids_fingerprint,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.distillation import (
    HardLabels,
    MeanTeacher,
    NoisedLabels,
    RandomTeacher,
    RawLogits,
    Targets,
    TeacherNoise,
    soft_cross_entropy,
)
from speechbrain_rsc.ensemble import sweep
from speechbrain_rsc.metrics import mean_logits

IDS = ["r1_0", "r1_1", "r2_0"]
# Two teachers, three cycles; easy numbers for hand computation.
Z = torch.tensor(
    [
        [[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]],
        [[0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
    ]
)


def softmax_row(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_mean_teacher_by_hand():
    targets = MeanTeacher(IDS, Z)(["r2_0", "r1_0"], None, epoch=1)
    # mean logits: r2_0 -> [0, 0, 1, 2]; r1_0 -> [1, 0, 0, 0]
    assert targets[0].tolist() == pytest.approx(softmax_row([0, 0, 1, 2]))
    assert targets[1].tolist() == pytest.approx(softmax_row([1, 0, 0, 0]))


def test_random_teacher_uses_one_teacher_per_cycle():
    rt = RandomTeacher(IDS, Z, seed=5)
    draws = rt.draws(3)
    targets = rt(IDS, None, epoch=3)
    for row, teacher in enumerate(draws.tolist()):
        expected = softmax_row(Z[teacher, row].tolist())
        assert targets[row].tolist() == pytest.approx(expected)


def test_random_teacher_redraws_each_epoch_and_repeats_per_seed():
    z = torch.randn(5, 200, 4)
    ids = [f"c{i}" for i in range(200)]
    a, b = RandomTeacher(ids, z, seed=1), RandomTeacher(ids, z, seed=1)
    assert torch.equal(a.draws(1), b.draws(1))
    assert torch.equal(a.draws(2), b.draws(2))
    assert not torch.equal(a.draws(1), a.draws(2))
    assert not torch.equal(a.draws(1), RandomTeacher(ids, z, seed=2).draws(1))
    # the draw of a cycle does not depend on the batch it comes in
    full = a(ids, None, epoch=4)
    assert torch.equal(a(ids[::-1][:7], None, 4), full.flip(0)[:7])
    # all teachers get used
    assert set(a.draws(1).tolist()) == set(range(5))


def test_raw_logits_are_mean_logits_without_softmax():
    targets = RawLogits(IDS, Z)(["r1_1"], None, epoch=1)
    assert targets.tolist() == [[0.0, 2.0, 0.0, 0.0]]


def test_hard_and_noise_targets():
    labels = torch.tensor([3, 0])
    assert HardLabels(IDS)(["r1_0", "r1_1"], labels, 1).tolist() == [
        [0, 0, 0, 1.0],
        [1.0, 0, 0, 0],
    ]
    ids = [f"c{i}" for i in range(4000)]
    noised = NoisedLabels(ids, variance=0.1, seed=0)
    t = noised(ids, torch.zeros(4000, dtype=torch.long), epoch=1)
    noise = t - torch.nn.functional.one_hot(torch.zeros(4000).long(), 4)
    assert noise.var().item() == pytest.approx(0.1, rel=0.05)
    assert noise.mean().abs().item() < 0.01
    assert not torch.equal(noised.noise(1), noised.noise(2))


def test_teacher_noise_variance_is_per_class_variance_of_mean_logits():
    tn = TeacherNoise(IDS, Z)
    mean = Z.mean(0)  # [[1,0,0,0],[0,2,0,0],[0,0,1,2]]
    expected = mean.var(dim=0)  # per class over the 3 cycles
    assert tn.std.pow(2).tolist() == pytest.approx(expected.tolist())
    assert expected[0].item() == pytest.approx(1 / 3)


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[math.log(1.0), math.log(3.0), 0.0, -1e9]])
    # softmax = [0.2, 0.6, 0.2, 0]
    target = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    expected = -(0.5 * math.log(0.2) + 0.5 * math.log(0.6))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected)


def test_unknown_mode_and_missing_teachers():
    with pytest.raises(ValueError, match="unknown teacher_mode 'avg'"):
        Targets("avg", k=2)
    with pytest.raises(ValueError, match="'mean' needs teacher logits"):
        Targets("mean", k=2).soft_labels(IDS)


def test_targets_describe_what_the_bank_records():
    noise = Targets("noise", k=5, noise_variance=0.2)
    assert noise.describe() == {
        "mode": "noise",
        "k": 0,
        "selection": None,
        "uses_teachers": False,
        "uses_hard_labels": True,
        "text": "one-hot labels plus Gaussian noise (no teacher)",
        "noise_variance": 0.2,
    }
    assert noise.soft_labels(IDS).std.pow(2).item() == pytest.approx(0.2)
    mean = Targets("mean", k=5, teacher_seeds=[1, 3]).describe()
    assert (mean["k"], mean["uses_hard_labels"]) == (2, False)
    assert json.loads(json.dumps(mean)) == mean


def test_targets_refuse_unknown_cycles():
    with pytest.raises(KeyError, match="1 batch cycles are not in"):
        MeanTeacher(IDS, Z)(["r9_0"], None, 1)


def make_bank(seed, ids, logits, labels=None, valid_score=60.0):
    labels = (
        torch.zeros(len(ids), dtype=torch.long) if labels is None else labels
    )
    return LogitBank(
        {"train": list(ids)},
        {"train": logits},
        {"train": labels},
        {
            "backbone": "cnn6",
            "seed": seed,
            "metrics": {"valid": {"score": valid_score}},
        },
    )


def test_bank_roundtrip_and_lookup_by_id(tmp_path):
    bank = make_bank(1, IDS, Z[0], torch.tensor([0, 1, 3]))
    (tmp_path / "1").mkdir()
    bank.save(tmp_path / "1" / "bank.safetensors")
    loaded = LogitBank.load(tmp_path / "1" / "bank.safetensors")
    assert loaded.ids == bank.ids and loaded.info == bank.info
    assert torch.equal(
        loaded.logits_for("train", ["r2_0", "r1_0"]),
        torch.stack([Z[0, 2], Z[0, 0]]),
    )
    assert torch.equal(loaded.labels["train"], torch.tensor([0, 1, 3]))
    assert list(tmp_path.glob("**/*.tmp")) == []
    assert [b.info["seed"] for b in find_banks(tmp_path)] == [1]


def test_banks_in_different_row_orders_align_by_id():
    a = make_bank(1, IDS, Z[0])
    order = [2, 0, 1]
    b = make_bank(2, [IDS[i] for i in order], Z[1][order])
    stacked = stack_logits([a, b], "train", IDS)
    assert torch.equal(stacked, Z)
    assert torch.equal(mean_logits(stacked), Z.mean(0))


def test_bank_missing_ids_are_refused_with_count():
    bank = make_bank(1, IDS[:1], Z[0][:1])
    with pytest.raises(BankMismatchError, match="2 of 3 'train' cycle IDs"):
        bank.check_manifest("train", IDS)


def test_bank_with_extra_ids_is_refused():
    bank = make_bank(1, IDS, Z[0])
    with pytest.raises(BankMismatchError, match="1 cycle IDs absent"):
        bank.check_manifest("train", IDS[:2])


def test_inconsistent_banks_are_refused():
    a = make_bank(1, IDS, Z[0])
    b = make_bank(2, IDS[:2], Z[1][:2])
    with pytest.raises(BankMismatchError, match="different 'train' cycles"):
        check_consistent([a, b])


def test_bank_file_tampering_is_detected(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(BankMismatchError, match="not a logit bank"):
        LogitBank.load(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="no logit banks"):
        find_banks(tmp_path / "empty")


def test_select_banks_first_curated_and_explicit():
    banks = [
        make_bank(s, IDS, Z[0], valid_score=v)
        for s, v in [(1, 61.0), (2, 65.0), (3, 63.0), (4, 64.0)]
    ]
    assert [b.info["seed"] for b in select_banks(banks, k=3)] == [1, 2, 3]
    curated = select_banks(banks, k=2, curate_on="valid")
    assert [b.info["seed"] for b in curated] == [2, 4]
    assert [b.info["seed"] for b in select_banks(banks, seeds=[4])] == [4]
    with pytest.raises(
        BankMismatchError,
        match=r"asked for 5 teachers, found 4 banks \(seeds 1, 2, 3, 4\)",
    ):
        select_banks(banks, k=5)
    with pytest.raises(BankMismatchError, match=r"no bank for seeds \[9\]"):
        select_banks(banks, seeds=[9])


def test_fingerprint_ignores_order_only():
    assert ids_fingerprint(IDS) == ids_fingerprint(IDS[::-1])
    assert ids_fingerprint(IDS) != ids_fingerprint(IDS[:2])


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"


# What the recipes record of every teacher run (the report groups by it).
RECORDED = {"role": "teacher", "backbone": "cnn6", "protocol": "validation"}


def save_twelve(folder):
    """Banks of seeds 1..12, each in folder/<seed>/, one test cycle each."""
    for seed in range(1, 13):
        bank = LogitBank(
            {"test": ["a_0"]},
            {"test": torch.tensor([[1.0, 0.0, 0.0, 0.0]])},
            {"test": torch.tensor([0])},
            {**RECORDED, "seed": seed},
        )
        (folder / str(seed)).mkdir()
        bank.save(folder / str(seed) / "bank.safetensors")
    return folder


def test_seeds_are_in_numeric_order_everywhere(tmp_path):
    from speechbrain_rsc.report import collect_runs

    banks = find_banks(save_twelve(tmp_path))
    assert [b.info["seed"] for b in banks] == list(range(1, 13))
    shuffled = banks[:]
    random.Random(0).shuffle(shuffled)
    first = select_banks(shuffled, k=5)
    assert [b.info["seed"] for b in first] == [1, 2, 3, 4, 5]
    rows = sweep(shuffled, "test")
    assert rows[4]["seeds"] == "1 2 3 4 5"
    assert rows[11]["seeds"] == " ".join(str(s) for s in range(1, 13))
    # a seed that is not an integer comes after every integer seed
    odd = LogitBank(
        {"test": ["a_0"]},
        {"test": torch.zeros(1, 4)},
        {"test": torch.tensor([0])},
        {**RECORDED, "seed": "extra"},
    )
    odd.save(tmp_path / "extra.safetensors")
    (tmp_path / "x").mkdir()
    odd.save(tmp_path / "x" / "bank.safetensors")
    (group,) = collect_runs(tmp_path).values()
    assert [b.info["seed"] for b in group] == [*range(1, 13), "extra"]
    seeds = [b.info["seed"] for b in find_banks(tmp_path)]
    assert seeds == [*range(1, 13), "extra", "extra"]


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_select_banks_refuses_a_k_that_is_not_a_positive_integer(k):
    banks = [make_bank(s, IDS, Z[0]) for s in (1, 2, 3)]
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        select_banks(banks, k=k)


def test_select_banks_refuses_duplicate_and_empty_seeds():
    banks = [make_bank(s, IDS, Z[0]) for s in (1, 2, 3)]
    with pytest.raises(
        ValueError, match=r"duplicate seeds \[3\] in \[3, 1, 3\]"
    ):
        select_banks(banks, seeds=[3, 1, 3])
    with pytest.raises(ValueError, match="seeds is empty"):
        select_banks(banks, seeds=[])
    twin = make_bank(2, IDS, Z[1])
    twin.source = "elsewhere/bank.safetensors"
    with pytest.raises(
        BankMismatchError, match=r"seed 2 is held by 2 banks.*elsewhere"
    ):
        select_banks([*banks, twin], seeds=[2])


def test_curated_selection_refuses_banks_without_a_score():
    banks = [
        make_bank(s, IDS, Z[0], valid_score=v)
        for s, v in [(1, 61.0), (2, math.nan), (3, 63.0)]
    ]
    with pytest.raises(BankMismatchError, match=r"'valid' Score.*seed 2: nan"):
        select_banks(banks, k=1, curate_on="valid")
    # no metrics for the split at all: refused the same way, naming both
    with pytest.raises(BankMismatchError, match=r"3 of 3 banks.*seed 3"):
        select_banks(banks, k=1, curate_on="test")


def test_curated_selection_on_an_empty_valid_split_says_curate_on_test():
    banks = []
    for seed, test_score in [(1, 60.0), (2, 70.0)]:
        bank = LogitBank(
            {"valid": [], "test": IDS},
            {"valid": torch.zeros(0, 4), "test": Z[0]},
            {"valid": torch.zeros(0).long(), "test": torch.zeros(3).long()},
            {
                "seed": seed,
                "metrics": {
                    "valid": {
                        "sp": math.nan,
                        "se": math.nan,
                        "score": math.nan,
                    },
                    "test": {"score": test_score},
                },
            },
        )
        banks.append(bank)
    with pytest.raises(
        BankMismatchError, match=r"valid split is empty.*curate on test"
    ):
        select_banks(banks, k=1, curate_on="valid")
    chosen = select_banks(banks, k=1, curate_on="test")
    assert [b.info["seed"] for b in chosen] == [2]


@pytest.mark.parametrize("k", ["0", "-1", "1.5"])
def test_ensemble_script_refuses_a_bad_k_without_traceback(tmp_path, capsys, k):
    save_twelve(tmp_path)
    main = runpy.run_path(str(RECIPE / "ensemble.py"))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--k", k])
    assert exit_info.value.code == 2
    assert "k must be a positive integer" in capsys.readouterr().err


def test_ensemble_script_refuses_repeated_seeds_without_traceback(
    tmp_path, capsys
):
    save_twelve(tmp_path)
    main = runpy.run_path(str(RECIPE / "ensemble.py"))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--seeds", "4", "2", "4"])
    assert exit_info.value.code == 2
    assert "duplicate seeds [4] in" in capsys.readouterr().err
