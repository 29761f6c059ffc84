"""The ICBHI 2017 metric: specificity, sensitivity and their mean, the Score.

Sp is the share of normal cycles predicted normal; Se the share of abnormal
cycles predicted with their exact abnormal class (crackle, wheeze or both).
Both are in percent and the Score is their mean.

Example
-------
>>> icbhi_score([0, 1, 1, 2, 0], [0, 0, 1, 3, 2])
{'sp': 50.0, 'se': 33.333333333333336, 'score': 41.66666666666667}
"""

import logging
import math

import torch
from speechbrain.utils.metric_stats import MetricStats

from speechbrain_rsc.data.schema import N_CLASSES

logger = logging.getLogger(__name__)


def confusion_matrix(predictions, targets, n_classes=N_CLASSES):
    """Count ``[target, prediction]`` pairs.

    Arguments
    ---------
    predictions : sequence of int or torch.Tensor
        Predicted class per cycle.
    targets : sequence of int or torch.Tensor
        True class per cycle.
    n_classes : int
        Number of classes.

    Returns
    -------
    torch.Tensor
        ``[n_classes, n_classes]`` int64 counts, rows are targets.

    Raises
    ------
    ValueError
        For a target or prediction outside ``0..n_classes-1``, naming the
        first such row.

    Example
    -------
    >>> confusion_matrix([0, 1], [0, 0], n_classes=2).tolist()
    [[1, 1], [0, 0]]
    """
    predictions = torch.as_tensor(predictions, dtype=torch.long).flatten()
    targets = torch.as_tensor(targets, dtype=torch.long).flatten()
    if predictions.shape != targets.shape:
        raise ValueError(
            f"{predictions.numel()} predictions for {targets.numel()} targets"
        )
    for name, values in (("target", targets), ("prediction", predictions)):
        bad = ((values < 0) | (values >= n_classes)).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"{name} {int(values[bad[0]])} at row {int(bad[0])} is not "
                f"a class 0-{n_classes - 1} ({len(bad)} such rows)"
            )
    flat = targets * n_classes + predictions
    counts = torch.bincount(flat, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def score_from_confusion(matrix):
    """Sp, Se and Score (percent) from a confusion matrix.

    A metric whose denominator is zero (no normal or no abnormal cycle) is
    NaN, and so is the Score then.

    Arguments
    ---------
    matrix : torch.Tensor
        ``[4, 4]`` counts, rows are targets, class 0 is normal.

    Returns
    -------
    dict
        ``{"sp": float, "se": float, "score": float}``.

    Example
    -------
    >>> m = torch.tensor(
    ...     [[5, 0, 0, 0], [2, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    ... )
    >>> score_from_confusion(m)
    {'sp': 100.0, 'se': 40.0, 'score': 70.0}
    """
    matrix = torch.as_tensor(matrix, dtype=torch.float64)
    normal = matrix[0].sum().item()
    abnormal = matrix[1:].sum().item()
    hits = matrix[1:, 1:].diagonal().sum().item()
    sp = 100.0 * matrix[0, 0].item() / normal if normal else math.nan
    se = 100.0 * hits / abnormal if abnormal else math.nan
    return {"sp": sp, "se": se, "score": (sp + se) / 2}


def icbhi_score(predictions, targets):
    """ICBHI Sp, Se and Score in percent over all cycles.

    Arguments
    ---------
    predictions : sequence of int or torch.Tensor
        Predicted class per cycle (0 normal, 1 crackle, 2 wheeze, 3 both).
    targets : sequence of int or torch.Tensor
        True class per cycle.

    Returns
    -------
    dict
        ``{"sp": float, "se": float, "score": float}``.

    Example
    -------
    >>> icbhi_score([0, 0, 0, 0], [0, 1, 2, 3])
    {'sp': 100.0, 'se': 0.0, 'score': 50.0}
    """
    return score_from_confusion(confusion_matrix(predictions, targets))


def non_finite_rows(logits):
    """How many rows of ``logits`` hold a NaN or an infinity.

    Example
    -------
    >>> non_finite_rows(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    1
    >>> non_finite_rows(torch.zeros(0, 4))
    0
    """
    bad = ~torch.as_tensor(logits).isfinite()
    if bad.dim() > 1:
        bad = bad.flatten(1).any(dim=1)
    return int(bad.sum())


def score_logits(logits, targets):
    """ICBHI Sp, Se and Score of the argmax of ``logits``; all NaN, with a
    warning, if any logit is not finite (an argmax over NaN is no
    prediction).

    Arguments
    ---------
    logits : torch.Tensor
        ``[n, n_classes]``.
    targets : sequence of int or torch.Tensor
        True class per cycle.

    Returns
    -------
    dict
        ``{"sp": float, "se": float, "score": float}``.

    Example
    -------
    >>> score_logits(torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 1.0]]), [0, 3])
    {'sp': 100.0, 'se': 100.0, 'score': 100.0}
    >>> score_logits(torch.tensor([[float("nan"), 0, 0, 0]]), [0])
    {'sp': nan, 'se': nan, 'score': nan}
    """
    bad = non_finite_rows(logits)
    if bad:
        logger.warning(
            "%d of %d cycles have non-finite logits: Sp, Se and Score are NaN",
            bad,
            logits.shape[0],
        )
        return {"sp": math.nan, "se": math.nan, "score": math.nan}
    return icbhi_score(logits.argmax(-1), targets)


class ICBHIStats(MetricStats):
    """Accumulates logits per batch and summarises the ICBHI metric.

    It also keeps each cycle's logits by ID, so a Brain can both log the
    Score and write a logit bank from one pass.

    Example
    -------
    >>> stats = ICBHIStats()
    >>> logits = torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 0]])
    >>> stats.append(["a", "b"], logits, torch.tensor([0, 1]))
    >>> stats.summarize()
    {'sp': 100.0, 'se': 0.0, 'score': 50.0}
    >>> stats.summarize("score")
    50.0
    """

    def __init__(self):
        self.clear()

    def clear(self):
        """Forget every appended batch."""
        self.ids = []
        self.logits = []
        self.targets = []
        self.summary = {}

    def append(self, ids, logits, targets):
        """Store one batch.

        Arguments
        ---------
        ids : list of str
            Cycle IDs of the batch.
        logits : torch.Tensor
            ``[batch, n_classes]`` model outputs.
        targets : torch.Tensor
            ``[batch]`` true classes.
        """
        self.ids.extend(ids)
        self.logits.append(logits.detach().float().cpu())
        self.targets.append(targets.detach().long().cpu().flatten())

    def confusion(self):
        """Return the confusion matrix of everything appended."""
        if not self.logits:
            return torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)
        predictions = torch.cat(self.logits).argmax(dim=-1)
        return confusion_matrix(predictions, torch.cat(self.targets))

    def summarize(self, field=None):
        """Return Sp, Se and Score (or one of them, by ``field``); NaN if
        any logit is not finite.
        """
        if self.logits:
            logits = torch.cat(self.logits)
            self.summary = score_logits(logits, torch.cat(self.targets))
        else:
            self.summary = score_from_confusion(self.confusion())
        return self.summary if field is None else self.summary[field]

    def write_stats(self, filestream, verbose=False):
        """Write the summary and the confusion matrix."""
        summary = self.summarize()
        filestream.write(
            "Sp {sp:.2f}  Se {se:.2f}  Score {score:.2f}\n".format(**summary)
        )
        filestream.write(f"confusion (rows: target)\n{self.confusion()}\n")


def mean_std(values):
    """Mean and sample standard deviation (ddof=1) of a list of numbers.

    One value gives a std of 0.

    Example
    -------
    >>> mean_std([63.0, 64.0, 65.0])
    (64.0, 1.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def aggregate_runs(results):
    """Mean ± std over runs (seeds) of Sp, Se and Score.

    Arguments
    ---------
    results : list of dict
        One ``{"sp", "se", "score"}`` dict per run.

    Returns
    -------
    dict
        ``{"sp": (mean, std), "se": (mean, std), "score": (mean, std),
        "n": number of runs}``.

    Example
    -------
    >>> runs = [
    ...     {"sp": 80, "se": 40, "score": 60},
    ...     {"sp": 82, "se": 44, "score": 63},
    ... ]
    >>> aggregate_runs(runs)["score"]
    (61.5, 2.1213203435596424)
    """
    out = {key: mean_std([r[key] for r in results]) for key in ("sp", "se")}
    out["score"] = mean_std([r["score"] for r in results])
    out["n"] = len(results)
    return out


def format_mean_std(pair, digits=2):
    """Write ``(mean, std)`` as ``"mean ± std"``.

    Example
    -------
    >>> format_mean_std((64.381, 0.4249))
    '64.38 ± 0.42'
    """
    mean, std = pair
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_logits(member_logits):
    """The ensemble's logits: the mean over members (dim 0).

    This is the one averaging rule of the project, used by ensemble
    evaluation from banks and by the ensemble model on audio.

    Example
    -------
    >>> mean_logits(torch.tensor([[[1.0, 3.0]], [[3.0, 1.0]]])).tolist()
    [[2.0, 2.0]]
    """
    return member_logits.mean(dim=0)
