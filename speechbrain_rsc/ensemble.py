"""Ensembles X++[k] evaluated from logit banks: mean logits, then argmax,
overall (:func:`evaluate_banks`, :func:`sweep`) and per recording device
and chest location (:func:`bank_breakdown`). For cycles no bank holds,
:func:`speechbrain_rsc.audio_ensemble.evaluate_models` runs the members'
exported models on the audio.

Example
-------
>>> import torch
>>> from speechbrain_rsc.bank import LogitBank
>>> def bank(seed, rows):
...     return LogitBank({"test": ["a_0", "b_0"]},
...                      {"test": torch.tensor(rows)},
...                      {"test": torch.tensor([0, 2])}, {"seed": seed})
>>> banks = [bank(1, [[1.0, 0, 0, 0], [0, 0, 1, 0]]),
...          bank(2, [[0.0, 0, 0, 3], [0, 0, 1, 0]])]
>>> evaluate_banks(banks[:1], "test")["score"]
100.0
>>> evaluate_banks(banks, "test")["sp"]  # mean of a_0 is [.5, 0, 0, 1.5]
0.0
>>> row = evaluate_banks(banks[:1], "test", bootstrap=100)
>>> row["score_lo"], row["score"], row["score_hi"]
(100.0, 100.0, 100.0)
"""

import csv

import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import (
    BankMismatchError,
    NonFiniteLogitsError,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.breakdown import GROUPS, scores_by
from speechbrain_rsc.data.schema import N_CLASSES
from speechbrain_rsc.metrics import icbhi_score, mean_logits
from speechbrain_rsc.uncertainty import summary


def ensemble_logits(banks, split):
    """IDs, mean logits and labels of the ensemble of ``banks`` on ``split``.

    Raises
    ------
    BankMismatchError
        If the banks hold different cycles or disagree on a label, or
        (:class:`~speechbrain_rsc.bank.NonFiniteLogitsError`) if a bank's
        logits on ``split`` are not all finite.
    """
    ids = banks[0].ids[split]
    stacked = stack_logits(banks, split, ids)
    labels = banks[0].labels[split]
    for other in banks[1:]:
        other_labels = other.labels[split][other.rows(split, ids)]
        if not torch.equal(other_labels, labels):
            raise BankMismatchError(
                f"{banks[0].source} and {other.source} disagree on the "
                f"labels of '{split}' cycles"
            )
    return ids, mean_logits(stacked), labels


def evaluate_banks(banks, split="test", bootstrap=0, bootstrap_seed=0):
    """ICBHI Sp/Se/Score of the mean-logit ensemble of ``banks``; with
    ``bootstrap`` resamples, also their 95 % patient-bootstrap intervals
    (``sp_lo`` ... ``score_hi``) and the ECE and Brier score of the
    softmax of the mean logits (:func:`~speechbrain_rsc.uncertainty.summary`).
    """
    ids, logits, labels = ensemble_logits(banks, split)
    if bootstrap:
        return summary(ids, logits, labels, bootstrap, bootstrap_seed)
    return icbhi_score(logits.argmax(-1), labels)


def bank_breakdown(banks, split="test", bootstrap=0, seed=0):
    """Per-device and per-location scores of a bank or of the mean-logit
    ensemble of several banks on ``split``.

    Arguments
    ---------
    banks : list of speechbrain_rsc.bank.LogitBank
        One bank (a teacher or a student) or the members of an ensemble.
    split : str
    bootstrap, seed : int
        Intervals as :func:`~speechbrain_rsc.breakdown.scores_by` (none
        when ``bootstrap`` is 0).

    Returns
    -------
    dict
        ``"device"`` and ``"location"`` ->
        :func:`~speechbrain_rsc.breakdown.scores_by` tables
        (NaN scores when a bank's logits are not finite).
    """
    try:
        ids, logits, labels = ensemble_logits(banks, split)
    except NonFiniteLogitsError:  # counted, never scored
        ids, labels = banks[0].ids[split], banks[0].labels[split]
        logits = torch.full((len(ids), N_CLASSES), float("nan"))
    return {
        by: scores_by(ids, logits, labels, by, bootstrap, seed) for by in GROUPS
    }


def sweep(
    banks, split="test", ks=None, curate_on=None, bootstrap=0, bootstrap_seed=0
):
    """Score of X++[k] for each k: the first k seeds in
    :func:`~speechbrain_rsc.bank.bank_order` (as ``distill.py`` and
    ``ensemble.py --k`` choose them), or the curated top k; intervals and
    calibration as :func:`evaluate_banks` with ``bootstrap`` resamples.

    Returns
    -------
    list of dict
        One row per k: ``k``, ``seeds``, ``sp``, ``se``, ``score`` (and
        the interval and calibration columns with ``bootstrap``).
    """
    ks = ks or range(1, len(banks) + 1)
    rows = []
    for k in ks:
        chosen = select_banks(banks, k=k, curate_on=curate_on)
        result = evaluate_banks(chosen, split, bootstrap, bootstrap_seed)
        seeds = " ".join(str(b.info.get("seed")) for b in chosen)
        rows.append({"k": k, "seeds": seeds, **result})
    return rows


def write_csv(rows, path):
    """Write ``rows`` (dicts) to ``path`` atomically, one column per key
    in the order keys first appear (empty where a row lacks it); no rows,
    no file.
    """
    if not rows:
        return
    fields = list(dict.fromkeys(key for row in rows for key in row))

    def write(file):
        writer = csv.DictWriter(file, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)

    write_text_atomically(path, write)
