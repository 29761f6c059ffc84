"""Ensembles X++[k] evaluated from logit banks: mean logits, then argmax.

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
"""

import csv

import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import (
    BankMismatchError,
    mean_logits,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.metrics import icbhi_score


def ensemble_logits(banks, split):
    """IDs, mean logits and labels of the ensemble of ``banks`` on ``split``.

    Raises
    ------
    BankMismatchError
        If the banks hold different cycles or disagree on a label.
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


def evaluate_banks(banks, split="test"):
    """ICBHI Sp/Se/Score of the mean-logit ensemble of ``banks``."""
    _, logits, labels = ensemble_logits(banks, split)
    return icbhi_score(logits.argmax(-1), labels)


def sweep(banks, split="test", ks=None, curate_on=None):
    """Score of X++[k] for each k (first k seeds, or the curated top k).

    Returns
    -------
    list of dict
        One row per k: ``k``, ``seeds``, ``sp``, ``se``, ``score``.
    """
    ks = ks or range(1, len(banks) + 1)
    rows = []
    for k in ks:
        chosen = select_banks(banks, k=k, curate_on=curate_on)
        result = evaluate_banks(chosen, split)
        seeds = " ".join(str(b.info.get("seed")) for b in chosen)
        rows.append({"k": k, "seeds": seeds, **result})
    return rows


def write_csv(rows, path):
    """Write ``rows`` (dicts with equal keys) to ``path`` atomically; no
    rows, no file.
    """
    if not rows:
        return

    def write(file):
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    write_text_atomically(path, write)
