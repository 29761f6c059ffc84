"""How sure a Score is: patient bootstrap, paired gains, calibration.

Cycles of one patient are correlated, so the unit a test set samples is
the patient, not the cycle. :class:`PatientBootstrap` resamples patients
with replacement (every cycle of a drawn patient comes along) and scores
each resample with the ICBHI metric. It is vectorized: the predictions
are first reduced to a ``[patients, 4]`` table of counts (normal correct,
normal, abnormal correct, abnormal), and a ``[resamples, patients]``
matrix of how often each patient is drawn turns every model's table into
every resample's counts with one matrix product. The draws depend only on
the number of patients, the number of resamples and the seed, so models
scored on the same patients are scored on the same resamples: their
differences are paired (:func:`paired_gain`).

Calibration: :func:`expected_calibration_error` (equal-width bins of the
top-class probability) and :func:`brier_score` (multi-class).

Example
-------
>>> ids = ["101_a_0", "101_a_1", "102_a_0", "103_a_0"]
>>> labels = [0, 1, 0, 1]
>>> boot = PatientBootstrap(ids, resamples=200, seed=1)
>>> samples = boot.samples(labels, labels)  # a perfect model
>>> interval(samples[..., 2], 100.0)
(100.0, 100.0)
"""

import warnings

import numpy as np

METRICS = ("sp", "se", "score")


def patients(ids):
    """The patient of each cycle: its ID up to the first ``_``
    (``PPP_RRR_LL_MM_DEVICE_i`` starts with the patient number).

    Example
    -------
    >>> patients(["101_1b1_Al_sc_Meditron_0", "226_1b1_Pl_sc_LittC2SE_3"])
    ['101', '226']
    """
    return [str(cycle_id).split("_", 1)[0] for cycle_id in ids]


def count_table(predictions, labels, index, n_groups):
    """Per group: normal correct, normal, abnormal correct, abnormal.

    Arguments
    ---------
    predictions : array-like of int
        ``[n]`` or ``[models, n]`` predicted classes.
    labels : array-like of int
        ``[n]`` true classes (0 normal).
    index : array-like of int
        ``[n]`` group (patient) of each cycle, in ``0..n_groups-1``.
    n_groups : int

    Returns
    -------
    numpy.ndarray
        ``[..., n_groups, 4]`` float64 counts.

    Example
    -------
    >>> count_table([0, 1, 2, 0], [0, 0, 2, 3], [0, 0, 1, 1], 2).tolist()
    [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]]
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    normal = labels == 0
    correct = predictions == labels
    columns = np.broadcast_arrays(
        normal & correct, normal, ~normal & correct, ~normal
    )
    # [..., 4, n] @ [n, groups]: the counts of every model at once
    one_hot = np.zeros((len(labels), n_groups))
    one_hot[np.arange(len(labels)), np.asarray(index)] = 1.0
    stacked = np.stack(columns, axis=-2).astype(np.float64)
    return np.swapaxes(stacked @ one_hot, -1, -2)


def scores_from_counts(counts):
    """Sp, Se and Score (percent) from counts summed over groups.

    NaN where there is no normal (Sp) or no abnormal (Se) cycle, as
    :func:`speechbrain_rsc.metrics.score_from_confusion`.

    Arguments
    ---------
    counts : numpy.ndarray
        ``[..., 4]``: normal correct, normal, abnormal correct, abnormal.

    Returns
    -------
    numpy.ndarray
        ``[..., 3]``: Sp, Se, Score.

    Example
    -------
    >>> scores_from_counts(np.array([5.0, 5, 2, 5])).tolist()
    [100.0, 40.0, 70.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sp = 100.0 * counts[..., 0] / counts[..., 1]
        se = 100.0 * counts[..., 2] / counts[..., 3]
    return np.stack([sp, se, (sp + se) / 2], axis=-1)


def draw_counts(n_groups, resamples, seed):
    """How often each group is drawn in each resample.

    Each resample draws ``n_groups`` groups uniformly with replacement.

    Returns
    -------
    numpy.ndarray
        ``[resamples, n_groups]`` float64; each row sums to ``n_groups``.

    Example
    -------
    >>> draws = draw_counts(3, 4, seed=0)
    >>> draws.shape, draws.sum(axis=1).tolist()
    ((4, 3), [3.0, 3.0, 3.0, 3.0])
    """
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_groups, size=(resamples, n_groups))
    flat = drawn + n_groups * np.arange(resamples)[:, None]
    counts = np.bincount(flat.ravel(), minlength=resamples * n_groups)
    return counts.reshape(resamples, n_groups).astype(np.float64)


def resampled_scores(counts, draws):
    """Sp, Se and Score of every resample.

    Arguments
    ---------
    counts : numpy.ndarray
        ``[..., groups, 4]`` from :func:`count_table`.
    draws : numpy.ndarray
        ``[resamples, groups]`` from :func:`draw_counts`.

    Returns
    -------
    numpy.ndarray
        ``[..., resamples, 3]``.

    Example
    -------
    Two patients, one all correct, one all wrong, drawn as (2, 0), (1, 1)
    and (0, 2):

    >>> counts = np.array([[1.0, 1, 1, 1], [0, 1, 0, 1]])
    >>> draws = np.array([[2.0, 0], [1, 1], [0, 2]])
    >>> resampled_scores(counts, draws)[:, 2].tolist()
    [100.0, 50.0, 0.0]
    """
    return scores_from_counts(np.asarray(draws) @ np.asarray(counts))


def interval(samples, point, level=0.95):
    """Percentile interval of bootstrap ``samples`` (last axis), widened
    to hold ``point`` (with very few patients every resample can fall on
    one side of it). NaN samples (a resample without a normal or without
    an abnormal cycle) are left out; NaN where all are.

    Arguments
    ---------
    samples : array-like
        ``[..., resamples]``.
    point : float or array-like
        The estimate on the data itself.
    level : float
        Coverage; the bounds are the ``(1 - level) / 2`` and
        ``(1 + level) / 2`` quantiles (NumPy's linear interpolation).

    Returns
    -------
    tuple of (float or numpy.ndarray)
        ``(low, high)``.

    Example
    -------
    >>> interval([0.0, 10, 20, 30, 40], 20.0, level=0.5)
    (10.0, 30.0)
    >>> interval([0.0, 10, 20, 30, 40], 35.0, level=0.5)
    (10.0, 35.0)
    """
    samples = np.asarray(samples, dtype=np.float64)
    tails = [(1 - level) / 2, (1 + level) / 2]
    with warnings.catch_warnings():  # all-NaN slices give NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(samples, tails, axis=-1)
    point = np.asarray(point, dtype=np.float64)
    low, high = np.fmin(low, point), np.fmax(high, point)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


class PatientBootstrap:
    """Resamples of the patients of a split, fixed by a seed.

    Arguments
    ---------
    ids : list of str
        Cycle IDs, in the row order of the predictions to score.
    resamples : int
        Number of resamples (the recipe's ``bootstrap``).
    seed : int
        Seed of the draws (``bootstrap_seed``).
    groups : list, optional
        The unit resampled, per cycle (default: the patient of the ID;
        ``range(len(ids))`` gives a plain cycle bootstrap).

    Example
    -------
    >>> boot = PatientBootstrap(["1_a_0", "1_a_1", "2_a_0"], resamples=4)
    >>> boot.samples([0, 0, 1], [0, 1, 1]).shape
    (4, 3)
    """

    def __init__(self, ids, resamples=1000, seed=0, groups=None):
        self.ids = list(ids)
        groups = patients(self.ids) if groups is None else list(groups)
        names, self.index = np.unique(np.asarray(groups), return_inverse=True)
        self.n_groups = len(names)
        self.resamples = resamples
        self.draws = draw_counts(self.n_groups, resamples, seed)

    def counts(self, predictions, labels):
        """:func:`count_table` per group of ``predictions`` ``[..., n]``."""
        return count_table(predictions, labels, self.index, self.n_groups)

    def samples(self, predictions, labels):
        """Sp, Se, Score of each resample, ``[..., resamples, 3]``."""
        return resampled_scores(self.counts(predictions, labels), self.draws)

    def interval(self, predictions, labels, level=0.95):
        """The point Sp/Se/Score of ``predictions`` ``[n]`` and their
        intervals: ``sp``, ``se``, ``score``, ``sp_lo``, ``sp_hi``, ...

        Example
        -------
        >>> boot = PatientBootstrap(["1_0", "2_0"], resamples=50)
        >>> boot.interval([0, 1], [0, 1])["score_lo"]
        100.0
        """
        counts = self.counts(predictions, labels)
        point = scores_from_counts(counts.sum(axis=-2))
        samples = resampled_scores(counts, self.draws)
        return interval_columns(point, samples, level)


def interval_columns(point, samples, level=0.95):
    """``sp``, ``se``, ``score`` and ``<metric>_lo`` / ``<metric>_hi``
    from a point ``[3]`` and resampled scores ``[resamples, 3]``.

    Example
    -------
    >>> samples = np.array([[90.0, 10, 50], [100, 30, 65]])
    >>> interval_columns([95.0, 20, 57.5], samples, level=0.0)["se_lo"]
    20.0
    """
    row = {}
    for i, metric in enumerate(METRICS):
        row[metric] = float(point[i])
    for i, metric in enumerate(METRICS):
        low, high = interval(np.asarray(samples)[..., i], point[i], level)
        row[f"{metric}_lo"], row[f"{metric}_hi"] = low, high
    return row


def paired_gain(samples, baseline, level=0.95):
    """Interval of ``samples - baseline`` (Scores on the same resamples)
    and the share of resamples in which the gain is not positive.

    Arguments
    ---------
    samples, baseline : array-like
        ``[resamples]`` Scores of a model and of its baseline (each may
        be a mean over seeds) on the same resampled patients.
    level : float

    Returns
    -------
    dict
        ``gain_lo``, ``gain_hi`` and ``p_not_positive`` (resamples where
        either Score is NaN are left out).

    Example
    -------
    >>> paired_gain([60.0, 62, 64, 66], [61.0, 61, 61, 61], level=0.5)
    {'gain_lo': 0.5, 'gain_hi': 3.5, 'p_not_positive': 0.25}
    """
    gain = np.asarray(samples, np.float64) - np.asarray(baseline, np.float64)
    gain = gain[~np.isnan(gain)]
    if not len(gain):
        nan = float("nan")
        return {"gain_lo": nan, "gain_hi": nan, "p_not_positive": nan}
    tails = [(1 - level) / 2, (1 + level) / 2]
    low, high = np.quantile(gain, tails)
    return {
        "gain_lo": float(low),
        "gain_hi": float(high),
        "p_not_positive": float(np.mean(gain <= 0)),
    }


def softmax(logits):
    """Class probabilities of ``logits`` ``[..., classes]`` (NumPy).

    Example
    -------
    >>> softmax(np.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def reliability(probabilities, labels, bins=15):
    """Per equal-width bin of the top-class probability (bins ``(lo, hi]``,
    the first also holds 0): mean confidence, accuracy and count.

    Arguments
    ---------
    probabilities : array-like
        ``[n, classes]``, rows summing to 1.
    labels : array-like of int
        ``[n]``.
    bins : int

    Returns
    -------
    dict
        ``confidence``, ``accuracy`` (NaN in empty bins) and ``count``,
        each ``[bins]``, and ``edges`` ``[bins + 1]``.

    Example
    -------
    >>> table = reliability([[0.9, 0.1], [0.9, 0.1]], [0, 1], bins=10)
    >>> [table[key][8].item() for key in ("count", "accuracy", "confidence")]
    [2, 0.5, 0.9]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, confidence, minlength=bins) / count
        accuracy = np.bincount(which, correct, minlength=bins) / count
    return {
        "confidence": conf,
        "accuracy": accuracy,
        "count": count,
        "edges": np.linspace(0.0, 1.0, bins + 1),
    }


def expected_calibration_error(probabilities, labels, bins=15):
    """ECE in percent: the count-weighted mean over :func:`reliability`'s
    bins of ``|accuracy - confidence|`` (Guo et al., 2017).

    Example
    -------
    >>> ece = expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1])
    >>> round(ece, 6)
    40.0
    """
    table = reliability(probabilities, labels, bins)
    seen = table["count"] > 0
    gaps = np.abs(table["accuracy"][seen] - table["confidence"][seen])
    weights = table["count"][seen] / table["count"].sum()
    return float(100.0 * np.sum(weights * gaps))


def brier_score(probabilities, labels):
    """Multi-class Brier score: mean over cycles of the squared distance
    between the probabilities and the one-hot label (0 best, 2 worst).

    Example
    -------
    >>> brier_score([[0.5, 0.5], [1.0, 0.0]], [0, 1])
    1.25
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    one_hot = np.eye(probabilities.shape[-1])[np.asarray(labels)]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=-1)))


def calibration(logits, labels, bins=15):
    """``ece`` (percent) and ``brier`` of the softmax of ``logits``
    ``[n, classes]``; NaN if a logit is not finite.

    Example
    -------
    >>> calibration(np.array([[9.0, -9, -9, -9]]), [0])["brier"] < 1e-6
    True
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():
        return {"ece": float("nan"), "brier": float("nan")}
    probabilities = softmax(logits)
    return {
        "ece": expected_calibration_error(probabilities, labels, bins),
        "brier": brier_score(probabilities, labels),
    }


def summary(ids, logits, labels, resamples=1000, seed=0, level=0.95):
    """Sp, Se, Score with their patient-bootstrap intervals, and the ECE
    and Brier score, of the argmax and softmax of ``logits``.

    Arguments
    ---------
    ids : list of str
        Cycle IDs, in the row order of ``logits``.
    logits : array-like
        ``[n, classes]`` (a model's, or an ensemble's mean).
    labels : array-like of int
        ``[n]``.
    resamples, seed, level
        As :class:`PatientBootstrap` and :func:`interval`.

    Returns
    -------
    dict
        ``sp``, ``se``, ``score``, ``sp_lo``, ``sp_hi``, ``se_lo``,
        ``se_hi``, ``score_lo``, ``score_hi``, ``ece``, ``brier``.

    Example
    -------
    >>> row = summary(["1_0", "2_0"], [[3.0, 0, 0, 0], [0, 3.0, 0, 0]],
    ...               [0, 1], resamples=10)
    >>> row["score_lo"], row["score_hi"], round(row["ece"], 2)
    (100.0, 100.0, 13.0)
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    boot = PatientBootstrap(ids, resamples, seed)
    row = boot.interval(logits.argmax(axis=-1), labels, level)
    return {**row, **calibration(logits, labels)}
