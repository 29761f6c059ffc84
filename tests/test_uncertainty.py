"""Patient bootstrap, paired gains and calibration, against hand-computed
answers."""

import numpy as np
import pytest
import torch

from speechbrain_rsc.metrics import icbhi_score
from speechbrain_rsc.uncertainty import (
    PatientBootstrap,
    brier_score,
    calibration,
    count_table,
    expected_calibration_error,
    interval,
    paired_gain,
    patients,
    resampled_scores,
)


def clustered(n_patients=20, cycles=10):
    """Patients with 5 normal and 5 abnormal cycles each; the model gets
    every cycle of the even patients right and every one of the odd
    patients wrong: its errors cluster by patient."""
    ids, labels, predictions = [], [], []
    for patient in range(n_patients):
        for i in range(cycles):
            ids.append(f"{100 + patient}_1b1_Al_sc_Meditron_{i}")
            label = 0 if i < cycles // 2 else 1 + i % 3
            labels.append(label)
            wrong = 1 if label == 0 else 0
            predictions.append(label if patient % 2 == 0 else wrong)
    return ids, np.array(labels), np.array(predictions)


def test_patient_is_the_ids_first_field():
    assert patients(["156_2b1_Al_mc_AKGC417L_3", "x_0"]) == ["156", "x"]


def test_a_perfect_model_has_the_interval_100_100():
    ids, labels, _ = clustered()
    row = PatientBootstrap(ids, resamples=1000, seed=0).interval(labels, labels)
    for metric in ("sp", "se", "score"):
        assert (row[f"{metric}_lo"], row[metric], row[f"{metric}_hi"]) == (
            100.0,
            100.0,
            100.0,
        )


def test_count_table_by_hand():
    # patient 0: normal right, normal wrong; patient 1: wheeze right,
    # both predicted crackle (wrong: the exact abnormal class is needed)
    table = count_table([0, 1, 2, 1], [0, 0, 2, 3], [0, 0, 1, 1], 2)
    assert table.tolist() == [[1, 2, 0, 0], [0, 0, 1, 2]]
    batch = count_table([[0, 1, 2, 1], [0, 0, 0, 0]], [0, 0, 2, 3], [0] * 4, 1)
    assert batch.tolist() == [[[1, 2, 1, 2]], [[2, 2, 0, 2]]]


def test_small_interval_by_hand():
    # A: 1 normal and 1 abnormal, both right; B: both wrong. Resamples
    # (A, A), (A, B), (B, A), (B, B) score 100, 50, 50, 0.
    counts = np.array([[1.0, 1, 1, 1], [0, 1, 0, 1]])
    draws = np.array([[2.0, 0], [1, 1], [1, 1], [0, 2]])
    scores = resampled_scores(counts, draws)
    assert scores.tolist() == [
        [100.0, 100.0, 100.0],
        [50.0, 50.0, 50.0],
        [50.0, 50.0, 50.0],
        [0.0, 0.0, 0.0],
    ]
    # NumPy's linear quantiles of (0, 50, 50, 100): position 3 * 0.025 =
    # 0.075 -> 0.075 * 50; position 3 * 0.975 = 2.925 -> 50 + 0.925 * 50
    assert interval(scores[:, 2], 50.0) == pytest.approx((3.75, 96.25))


def test_two_patients_by_hand_through_the_bootstrap():
    # the same A and B as cycles: each resample is (A, A), (A, B) or
    # (B, B) with chances 1/4, 1/2, 1/4, so 1000 resamples reach both ends
    ids = ["1_0", "1_1", "2_0", "2_1"]
    labels = [0, 1, 0, 1]
    row = PatientBootstrap(ids, resamples=1000, seed=3).interval(
        [0, 1, 1, 0], labels
    )
    assert (row["score_lo"], row["score"], row["score_hi"]) == (0, 50, 100)


def test_patient_bootstrap_is_wider_than_a_cycle_bootstrap():
    ids, labels, predictions = clustered()
    by_patient = PatientBootstrap(ids, 1000, seed=0).interval(
        predictions, labels
    )
    by_cycle = PatientBootstrap(
        ids, 1000, seed=0, groups=range(len(ids))
    ).interval(predictions, labels)
    assert by_patient["score"] == by_cycle["score"] == 50.0
    width = {
        name: row["score_hi"] - row["score_lo"]
        for name, row in (("patient", by_patient), ("cycle", by_cycle))
    }
    # 200 cycles in 20 clusters of 10: the design effect is about 10, so
    # the patient interval is about 3 times wider
    assert width["patient"] > 2 * width["cycle"]


def test_the_same_seed_gives_the_same_interval():
    ids, labels, predictions = clustered()

    def row(seed):
        return PatientBootstrap(ids, 500, seed=seed).interval(
            predictions, labels
        )

    assert row(7) == row(7)
    assert row(7) != row(8)


def test_a_model_against_itself_gains_exactly_zero():
    ids, labels, predictions = clustered()
    samples = PatientBootstrap(ids, 1000, seed=0).samples(predictions, labels)
    gain = paired_gain(samples[:, 2], samples[:, 2])
    assert gain == {"gain_lo": 0.0, "gain_hi": 0.0, "p_not_positive": 1.0}


def test_paired_resamples_share_their_patients():
    # another model, right on the odd patients only: on every resample
    # the two Scores add up to 100, which holds only if both models see
    # the same patients
    ids, labels, predictions = clustered()
    other = np.where(predictions == labels, 1 - (labels > 0), labels)
    boot = PatientBootstrap(ids, 300, seed=0)
    both = boot.samples(np.stack([predictions, other]), labels)
    np.testing.assert_allclose(both[0, :, 2] + both[1, :, 2], 100.0)


def test_bootstrap_scores_equal_the_icbhi_metric():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (300,), generator=generator)
    predictions = torch.randint(0, 4, (300,), generator=generator)
    ids = [f"{i % 17}_x_{i}" for i in range(300)]
    boot = PatientBootstrap(ids, resamples=1)
    boot.draws = np.ones_like(boot.draws)  # every patient once
    (got,) = boot.samples(predictions.numpy(), labels.numpy())
    expected = icbhi_score(predictions, labels)
    assert got.tolist() == pytest.approx(list(expected.values()))


def test_calibration_by_hand():
    probabilities = [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
    labels = [0, 1, 0, 1]
    # 15 bins of width 1/15: 0.9 in (0.8667, 0.9333] with accuracy 1/2;
    # 0.6 in (0.5333, 0.6] and 0.7 in (0.6667, 0.7333], each right
    expected = (2 * 0.4 + 0.4 + 0.3) / 4 * 100
    ece = expected_calibration_error(probabilities, labels)
    assert ece == pytest.approx(expected)
    # (0.01 + 0.01) + (0.81 + 0.81) + (0.16 + 0.16) + (0.09 + 0.09)
    assert brier_score(probabilities, labels) == pytest.approx(2.14 / 4)
    confident = calibration(np.array([[50.0, 0, 0, 0], [0, 0, 50, 0]]), [0, 2])
    assert confident["ece"] == pytest.approx(0.0, abs=1e-12)
    assert confident["brier"] == pytest.approx(0.0, abs=1e-12)
    nan = calibration(np.array([[np.nan, 0, 0, 0]]), [0])
    assert np.isnan(nan["ece"]) and np.isnan(nan["brier"])
