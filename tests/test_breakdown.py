"""Per-device and per-location scores, checked by hand."""

import math

import torch

from speechbrain_rsc.bank import LogitBank
from speechbrain_rsc.breakdown import scores_by
from speechbrain_rsc.ensemble import bank_breakdown

IDS = [
    "101_1b1_Al_sc_Meditron_0",  # normal, predicted normal
    "101_1b1_Al_sc_Meditron_1",  # crackle, predicted crackle
    "102_1b1_Ar_sc_Meditron_0",  # wheeze, predicted both: a miss
    "104_1b1_Al_sc_Litt3200_0",  # normal, predicted crackle
    "104_1b1_Al_sc_Litt3200_1",  # both, predicted both
    "160_1b3_Tc_mc_AKGC417L_0",  # crackle, predicted normal
]
LABELS = torch.tensor([0, 1, 2, 0, 3, 1])
PREDICTED = torch.tensor([0, 1, 3, 1, 3, 0])


def one_hot_logits(predicted):
    return torch.nn.functional.one_hot(predicted, 4).float()


def test_scores_per_device_by_hand():
    table = scores_by(IDS, one_hot_logits(PREDICTED), LABELS, "device")
    rows = {r.device: r for r in table.itertuples()}
    assert list(rows) == ["AKGC417L", "Litt3200", "Meditron"]
    assert table["cycles"].sum() == len(IDS)
    meditron = rows["Meditron"]  # Sp 1/1, Se 1/2
    assert (meditron.cycles, meditron.normal, meditron.abnormal) == (3, 1, 2)
    assert (meditron.sp, meditron.se, meditron.score) == (100.0, 50.0, 75.0)
    litt = rows["Litt3200"]  # Sp 0/1, Se 1/1
    assert (litt.sp, litt.se, litt.score) == (0.0, 100.0, 50.0)
    akg = rows["AKGC417L"]  # no normal cycle: Sp and Score undefined
    assert math.isnan(akg.sp) and akg.se == 0.0 and math.isnan(akg.score)


def test_scores_per_location_by_hand():
    table = scores_by(IDS, one_hot_logits(PREDICTED), LABELS, "location")
    rows = {r.location: r for r in table.itertuples()}
    assert sorted(rows) == ["Al", "Ar", "Tc"]
    al = rows["Al"]  # normals: hit, miss -> 50; abnormal: 2 of 2 -> 100
    assert (al.cycles, al.sp, al.se, al.score) == (4, 50.0, 100.0, 75.0)


def test_ensemble_breakdown_uses_the_mean_logits():
    def bank(logits):
        return LogitBank(
            {"test": IDS}, {"test": logits}, {"test": LABELS}, {"seed": 1}
        )

    a = one_hot_logits(PREDICTED) * 2
    b = one_hot_logits(torch.zeros(6, dtype=torch.long))  # all normal
    # mean: the 2.0 votes of a beat b's 1.0 for "normal" everywhere
    tables = bank_breakdown([bank(a), bank(b)])
    expected = scores_by(IDS, (a + b) / 2, LABELS, "device")
    assert tables["device"].equals(expected)
    assert tables["location"]["cycles"].sum() == 6


def test_non_finite_logits_are_not_scored():
    logits = one_hot_logits(PREDICTED)
    logits[0, 0] = float("nan")
    table = scores_by(IDS, logits, LABELS, "device")
    assert table["score"].isna().all()
    assert table["cycles"].tolist() == [1, 2, 3]
