import math

import pytest
import torch

from speechbrain_rsc.metrics import (
    ICBHIStats,
    aggregate_runs,
    confusion_matrix,
    icbhi_score,
    mean_std,
)


def test_all_normal_predictor_scores_50():
    targets = [0] * 7 + [1] * 3 + [2] * 2 + [3]
    result = icbhi_score([0] * len(targets), targets)
    assert result == {"sp": 100.0, "se": 0.0, "score": 50.0}


def test_hand_computed_confusion():
    # rows = target, columns = prediction
    matrix = torch.tensor(
        [
            [8, 1, 1, 0],  # 10 normal, 8 right
            [2, 3, 0, 1],  # 6 crackle, 3 right
            [0, 1, 2, 1],  # 4 wheeze, 2 right
            [0, 1, 0, 1],  # 2 both, 1 right
        ]
    )
    predictions, targets = [], []
    for t in range(4):
        for p in range(4):
            predictions += [p] * int(matrix[t, p])
            targets += [t] * int(matrix[t, p])
    assert torch.equal(confusion_matrix(predictions, targets), matrix)
    result = icbhi_score(predictions, targets)
    assert result["sp"] == pytest.approx(80.0)
    # abnormal hits need the exact class: 3 + 2 + 1 of 12
    assert result["se"] == pytest.approx(50.0)
    assert result["score"] == pytest.approx(65.0)


def test_wrong_abnormal_class_is_a_miss():
    # crackle predicted as both: abnormal, but not a hit
    assert icbhi_score([3, 1], [1, 1])["se"] == pytest.approx(50.0)


def test_empty_denominator_is_nan():
    result = icbhi_score([1, 2], [1, 2])
    assert math.isnan(result["sp"]) and math.isnan(result["score"])
    assert result["se"] == 100.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        icbhi_score([0, 1, 2], [0, 1])


def test_stats_accumulate_batches_like_one_call():
    torch.manual_seed(0)
    logits = torch.randn(30, 4)
    targets = torch.randint(0, 4, (30,))
    stats = ICBHIStats()
    for i in range(0, 30, 8):
        ids = [f"c{j}" for j in range(i, min(i + 8, 30))]
        stats.append(ids, logits[i : i + 8], targets[i : i + 8])
    assert stats.summarize() == icbhi_score(logits.argmax(-1), targets)
    assert stats.ids == [f"c{j}" for j in range(30)]
    stats.clear()
    assert stats.confusion().sum() == 0


def test_mean_std_and_aggregation():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))
    runs = [
        {"sp": 80.0, "se": 40.0, "score": 60.0},
        {"sp": 84.0, "se": 44.0, "score": 64.0},
    ]
    agg = aggregate_runs(runs)
    assert agg["n"] == 2
    assert agg["sp"] == (82.0, pytest.approx(math.sqrt(8)))
    assert agg["score"][0] == 62.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_stats_never_score_non_finite_logits(caplog, bad):
    stats = ICBHIStats()
    # argmax would read the bad row as "normal": Sp 100, Se 0, Score 50
    logits = torch.tensor([[bad, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    stats.append(["a", "b"], logits, torch.tensor([0, 1]))
    with caplog.at_level("WARNING"):
        summary = stats.summarize()
    assert list(summary) == ["sp", "se", "score"]
    assert all(math.isnan(value) for value in summary.values())
    assert "1 of 2 cycles have non-finite logits" in caplog.text


def test_stats_on_finite_logits_equal_icbhi_score_exactly():
    logits = torch.tensor(
        [[2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 4.0], [0, 0, 5.0, 0]]
    )
    stats = ICBHIStats()
    stats.append(["a", "b", "c", "d"], logits, torch.tensor([0, 1, 3, 1]))
    # Sp 1/1; Se: hits b and c of the 3 abnormal cycles
    expected = {"sp": 100.0, "se": 200 / 3, "score": (100.0 + 200 / 3) / 2}
    assert stats.summarize() == expected
    assert icbhi_score([0, 1, 3, 2], [0, 1, 3, 1]) == expected
