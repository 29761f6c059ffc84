"""ICBHI Sp/Se/Score per recording device and per chest location.

ICBHI's test split is dominated by devices barely or never seen in
training (Litt3200 is almost test-only, LittC2SE train-only), and one
overall Score hides how a model fares on each. The device and the chest
location of a cycle are read from its ID (``PPP_RRR_LL_MM_DEVICE_i``), so
any bank, ensemble or student can be broken down without its manifest;
a cycle whose ID is not an ICBHI stem is counted under ``unknown``. A
bank's breakdown is :func:`speechbrain_rsc.ensemble.bank_breakdown`.

Example
-------
>>> import torch
>>> ids = ["101_1b1_Al_sc_Meditron_0", "101_1b1_Al_sc_Meditron_1",
...        "104_1b1_Ar_sc_Litt3200_0"]
>>> logits = torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 0, 0], [1.0, 0, 0, 0]])
>>> table = scores_by(ids, logits, torch.tensor([1, 0, 2]), "device")
>>> print(markdown_table(table))
| device | cycles | normal | abnormal | sp | se | score |
|---|---|---|---|---|---|---|
| Litt3200 | 1 | 0 | 1 | n/a | 0.00 | n/a |
| Meditron | 2 | 1 | 1 | 100.00 | 100.00 | 100.00 |
"""

import pandas as pd
import torch

from speechbrain_rsc.data.schema import parse_stem
from speechbrain_rsc.metrics import icbhi_score
from speechbrain_rsc.uncertainty import METRICS, PatientBootstrap

GROUPS = ("device", "location")
LH = ("lo", "hi")
UNKNOWN = "unknown"


def cycle_groups(ids):
    """Device and chest location of each cycle, from its ID.

    Arguments
    ---------
    ids : list of str
        Cycle IDs ``<recording stem>_<index>``.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``device``, ``location`` (codes as in the file
        names; ``unknown`` where the ID is not an ICBHI stem).

    Example
    -------
    >>> table = cycle_groups(["226_1b1_Pl_sc_LittC2SE_3", "x_0"])
    >>> table[["device", "location"]].values.tolist()
    [['LittC2SE', 'Pl'], ['unknown', 'unknown']]
    """
    rows = []
    for cycle_id in ids:
        try:
            stem = parse_stem(cycle_id.rsplit("_", 1)[0])
            rows.append((cycle_id, stem.device, stem.location))
        except ValueError:
            rows.append((cycle_id, UNKNOWN, UNKNOWN))
    return pd.DataFrame(rows, columns=["id", *GROUPS])


def scores_by(ids, logits, labels, by="device", bootstrap=0, seed=0):
    """Sp, Se and Score of the predictions ``argmax(logits)`` per group,
    with 95 % intervals from ``bootstrap`` resamples of each group's
    patients (none when 0).

    Arguments
    ---------
    ids : list of str
        Cycle IDs, in the row order of ``logits`` and ``labels``.
    logits : torch.Tensor
        ``[n, 4]`` logits (a model's, or an ensemble's mean).
    labels : torch.Tensor
        ``[n]`` true classes.
    by : str
        ``"device"`` or ``"location"``.
    bootstrap : int
        Resamples of :class:`~speechbrain_rsc.uncertainty.PatientBootstrap`.
    seed : int
        Its seed.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by name: ``<by>``, ``cycles``,
        ``normal``, ``abnormal``, ``sp``, ``se``, ``score`` (NaN where a
        group has no normal or no abnormal cycle), and with ``bootstrap``
        ``sp_lo``, ``sp_hi``, ``se_lo``, ``se_hi``, ``score_lo``,
        ``score_hi``.

    Example
    -------
    >>> ids = ["101_1b1_Al_sc_Meditron_0", "102_1b1_Al_sc_Meditron_0"]
    >>> table = scores_by(ids, torch.eye(4)[[0, 1]], [0, 1], bootstrap=50)
    >>> table[["score_lo", "score", "score_hi"]].values.tolist()
    [[100.0, 100.0, 100.0]]
    """
    if by not in GROUPS:
        raise ValueError(f"by must be one of {GROUPS}, not {by!r}")
    groups = cycle_groups(ids)[by]
    labels = torch.as_tensor(labels).flatten()
    if not torch.as_tensor(logits).isfinite().all():
        predictions = None  # never score non-finite logits
    else:
        predictions = torch.as_tensor(logits).argmax(-1)
    rows = []
    for name in sorted(groups.unique()):
        rows_of = torch.tensor((groups == name).to_numpy())
        normal = int((labels[rows_of] == 0).sum())
        if predictions is None:
            nan = float("nan")
            metrics = {"sp": nan, "se": nan, "score": nan}
            if bootstrap:
                metrics.update({f"{m}_{e}": nan for m in METRICS for e in LH})
        elif bootstrap:
            ids_of = [i for i, keep in zip(ids, rows_of.tolist()) if keep]
            boot = PatientBootstrap(ids_of, bootstrap, seed)
            metrics = boot.interval(
                predictions[rows_of].numpy(), labels[rows_of].numpy()
            )
        else:
            metrics = icbhi_score(predictions[rows_of], labels[rows_of])
        rows.append(
            {
                by: name,
                "cycles": int(rows_of.sum()),
                "normal": normal,
                "abnormal": int(rows_of.sum()) - normal,
                **metrics,
            }
        )
    columns = [by, "cycles", "normal", "abnormal", "sp", "se", "score"]
    if bootstrap:
        columns += [f"{m}_{end}" for m in METRICS for end in LH]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(table, digits=2):
    """A pandas table as GitHub markdown, floats with ``digits`` decimals.

    Example
    -------
    >>> print(markdown_table(pd.DataFrame({"a": ["x"], "sp": [50.0]})))
    | a | sp |
    |---|---|
    | x | 50.00 |
    """

    def cell(value):
        if isinstance(value, float):
            return "n/a" if value != value else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
