"""Ensembles X++[k] evaluated from logit banks: mean logits, then argmax;
or, for cycles no bank holds, from the members' exported models
(:func:`evaluate_models`, a fused ensemble over the audio).

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
from pathlib import Path

import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import (
    BankMismatchError,
    mean_logits,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.metrics import icbhi_score
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


def evaluate_models(
    banks, manifest, device=None, batch_size=16, bootstrap=0, bootstrap_seed=0
):
    """ICBHI Sp/Se/Score of the ensemble of the models behind ``banks``,
    run on the audio of a prepared ``manifest``.

    Each bank's run folder must hold the model it exported
    (``<run>/model``); the members are evaluated as one
    :func:`~speechbrain_rsc.fused.make_ensemble` by an
    :class:`~speechbrain_rsc.brains.EnsembleBrain`. On cycles a bank also
    holds, the result equals :func:`evaluate_banks` (to float rounding).

    Arguments
    ---------
    banks : list of LogitBank
        Loaded from files (their ``source`` locates the runs).
    manifest : str or Path
        A prepared CSV at the members' sample rate.
    device : str, optional
        CUDA when present, else CPU.
    batch_size : int
    bootstrap, bootstrap_seed : int
        As :func:`evaluate_banks`.

    Raises
    ------
    FileNotFoundError
        Naming a run without an exported model.
    """
    # Here, not at the top: scoring banks needs neither SpeechBrain nor
    # the models.
    from speechbrain_rsc.brains import EnsembleBrain
    from speechbrain_rsc.dataio import dataio_prep
    from speechbrain_rsc.export import CONFIG_FILE, load_trained
    from speechbrain_rsc.fused import make_ensemble

    folders = [Path(bank.source).parent / "model" for bank in banks]
    for folder in folders:
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{folder}: no exported model ({CONFIG_FILE}) beside the "
                "bank; models are exported by train_teacher.py and distill.py"
            )
    members = [load_trained(folder)[0] for folder in folders]
    model = make_ensemble(members)
    dataset = dataio_prep({"audio": manifest}, model.sample_rate)["audio"]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    brain = EnsembleBrain(
        modules={"model": model},
        hparams={"test_dataloader_opts": {"batch_size": batch_size}},
        run_opts={"device": device, "noprogressbar": True},
    )
    stats = brain.collect_logits(dataset)
    result = stats.summarize()
    if bootstrap and stats.logits and result["score"] == result["score"]:
        logits, labels = torch.cat(stats.logits), torch.cat(stats.targets)
        result = summary(stats.ids, logits, labels, bootstrap, bootstrap_seed)
    return result


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
