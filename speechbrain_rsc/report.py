"""Tables and figures in the shapes of the paper, from a results folder.

Every trained run leaves ``<run>/bank.safetensors`` whose header says what
it is; :class:`RunKey` names each group of runs (role, backbone, teacher
backbone, mode, k, the teachers' seeds, protocol and prepared data), so
runs of another protocol, other data or other teachers are never averaged
together. The report writes one section per experiment (prepared data and
protocol) with Markdown and CSV tables (every row names the runs it comes
from), per-device and per-location tables, and PNG figures.

Example
-------
>>> key = RunKey.from_info({"role": "student", "backbone": "cnn6",
...     "targets": {"mode": "mean"}, "teacher_seeds": [1, 2, 3],
...     "teacher_backbone": "bts", "protocol": "paper"})
>>> key.k
3
>>> key.describe()
'cnn6 student, mean targets from bts++[k=3] (teacher seeds 1 2 3)'
"""

import hashlib
import json
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import (
    BANK_FILENAME,
    LogitBank,
    NonFiniteLogitsError,
    bank_order,
    select_banks,
)
from speechbrain_rsc.breakdown import (
    GROUPS,
    cycle_groups,
    markdown_table,
    scores_by,
)
from speechbrain_rsc.data.schema import CLASS_NAMES, N_CLASSES
from speechbrain_rsc.distillation import soft_cross_entropy
from speechbrain_rsc.ensemble import (
    bank_breakdown,
    ensemble_logits,
    evaluate_banks,
    write_csv,
)
from speechbrain_rsc.metrics import (
    aggregate_runs,
    confusion_matrix,
    format_mean_std,
)
from speechbrain_rsc.uncertainty import (
    METRICS,
    PatientBootstrap,
    calibration,
    interval,
    paired_gain,
    reliability,
    softmax,
)

logger = logging.getLogger(__name__)

# backbone: (paper name, params in M, hard (Sp, Se, Score), soft (...))
PAPER_TABLE2 = {
    "resnet18": (
        "ResNet18",
        11.7,
        (76.70, 33.47, 55.09),
        (81.41, 31.11, 56.26),
    ),
    "efficientnet_b0": (
        "EfficientNet",
        5.3,
        (78.21, 34.44, 56.33),
        (79.26, 36.09, 57.68),
    ),
    "cnn6": ("CNN6", 4.8, (77.00, 37.35, 57.17), (85.57, 30.77, 58.17)),
    "ast": ("AST", 87.7, (77.14, 43.07, 59.55), (79.24, 42.92, 61.08)),
    "audio_clap": (
        "Audio-CLAP",
        28.0,
        (80.85, 44.67, 62.56),
        (82.82, 44.44, 63.63),
    ),
    # Table 2 prints BTS-d[k=15] random teacher (82.89, 45.90, 64.39) as
    # BTS's soft label; every other row, and every student of ours, is the
    # k=5 mean teacher, so BTS-d[k=5] mean teacher (Tables 1 and 3) stands
    # here.
    "bts": ("BTS", 153.0, (81.40, 45.67, 63.54), (84.93, 43.82, 64.38)),
}
PAPER_TABLE3 = {  # row: BTS-d Score in the paper (Table 3)
    "hard": "63.54 ± 0.80",
    "noise": "62.71 ± 0.47",
    "teacher_noise": "62.00 ± 1.06",
    "single": "63.90 ± 0.15",
    "mean": "64.38 ± 0.36 (k=5)",
    "random": "64.39 ± 0.42 (k=15)",
    "curated": "64.61 ± 0.75 (k=5)",
    "raw_logits": "failed to converge",
}
VARIANT_NAMES = {
    "hard": "Hard label (baseline)",
    "noise": "Noised label (var=0.1)",
    "teacher_noise": "Noised label (teacher var)",
    "single": "Single teacher",
    "mean": "Mean teacher",
    "random": "Random teacher",
    "curated": "Curated teachers",
    "raw_logits": "Remove softmax (raw logits)",
}
TEACHER_MODES_OF_TABLE1 = ("mean", "random", "curated")


@dataclass(frozen=True)
class RunKey:
    """What makes runs replicas of one another (they differ only by seed).

    Teachers differ by backbone; students also by teacher backbone, mode,
    the teachers' seeds (so k). ``protocol`` and ``data`` (the prepared
    data's key) split the report into experiments.
    """

    role: str
    backbone: str
    protocol: str
    data: str
    teacher_backbone: str = None
    teacher_mode: str = None
    teacher_seeds: tuple = ()

    @property
    def k(self):
        """Number of teachers (0 for the modes without teachers)."""
        return len(self.teacher_seeds)

    @property
    def experiment(self):
        """``(protocol, data)``: runs comparable with each other."""
        return (self.protocol, self.data)

    @classmethod
    def from_info(cls, info):
        """The key of a bank's ``info``, as the recipes record it: a
        student's mode is its ``targets`` record (the targets object the
        YAML declared, resolved by ``Targets.describe``).
        """
        common = {
            "role": info["role"],
            "backbone": info["backbone"],
            "protocol": info["protocol"],
            "data": data_name(info),
        }
        if common["role"] != "student":
            return cls(**common)
        return cls(
            **common,
            teacher_backbone=info.get("teacher_backbone"),
            teacher_mode=info["targets"]["mode"],
            teacher_seeds=tuple(info.get("teacher_seeds") or ()),
        )

    def describe(self):
        """A readable name, printed beside every table row's runs."""
        if self.role != "student":
            return f"{self.backbone} teacher (hard labels)"
        if not self.teacher_seeds:
            return f"{self.backbone} student, {self.teacher_mode} targets"
        seeds = " ".join(str(s) for s in self.teacher_seeds)
        return (
            f"{self.backbone} student, {self.teacher_mode} targets from "
            f"{self.teacher_backbone}++[k={self.k}] (teacher seeds {seeds})"
        )


def data_name(info):
    """Which data and split a run saw, whatever its sample rate or cycle
    length: a hash of the source data's content fingerprints and of each
    split's cycle IDs (a 48 kHz BTS teacher and a 16 kHz CNN6 student of
    the same split share it). ``unknown`` for banks without provenance.

    Example
    -------
    >>> at = lambda rate: {"provenance": {"data": {"key": rate,
    ...     "fingerprints": {"recordings": "a"},
    ...     "cycles": {"test": {"count": 2, "ids": "f"}}}}}
    >>> data_name(at(16000)) == data_name(at(48000))
    True
    >>> data_name({})
    'unknown'
    """
    data = (info.get("provenance") or {}).get("data")
    if not data:
        return "unknown"
    identity = {
        "fingerprints": data.get("fingerprints"),
        "ids": {s: c.get("ids") for s, c in data.get("cycles", {}).items()},
    }
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def collect_runs(results_folder):
    """Every bank under ``results_folder``, grouped by :class:`RunKey`,
    each group in :func:`~speechbrain_rsc.bank.bank_order`.
    """
    groups = defaultdict(list)
    for path in sorted(Path(results_folder).glob(f"**/{BANK_FILENAME}")):
        bank = LogitBank.load(path)
        groups[RunKey.from_info(bank.info)].append(bank)
    for banks in groups.values():
        banks.sort(key=bank_order)
    return dict(groups)


def teachers_of(groups, backbone):
    """The teacher runs of ``backbone`` (one experiment's groups)."""
    return next(
        (
            banks
            for key, banks in groups.items()
            if key.role == "teacher" and key.backbone == backbone
        ),
        [],
    )


def students_of(groups, backbone, mode=None):
    """``{key: runs}`` of the student groups of ``backbone`` (and mode)."""
    return {
        key: banks
        for key, banks in groups.items()
        if key.role == "student"
        and key.backbone == backbone
        and mode in (None, key.teacher_mode)
    }


class Uncertainty:
    """Patient-bootstrap resamples and calibration of the runs of one
    experiment, on the test split: every model is scored on the same
    resampled patients, so any two rows can be compared pairwise.

    Arguments
    ---------
    ids : list of str
        The experiment's test cycle IDs.
    labels : array-like of int
        Their classes.
    resamples : int
        ``bootstrap`` of the paper YAML.
    seed : int
        ``bootstrap_seed``.
    level : float
        Coverage of the intervals.
    """

    def __init__(self, ids, labels, resamples=1000, seed=0, level=0.95):
        self.ids = list(ids)
        self.labels = np.asarray(labels)
        self.resamples, self.seed, self.level = resamples, seed, level
        self.boot = PatientBootstrap(self.ids, resamples, seed)
        self._cache = {}
        self._groups = {}

    @classmethod
    def of(cls, groups, resamples, seed):
        """For the runs in ``groups`` (None without resamples or test)."""
        banks = [b for runs in groups.values() for b in runs]
        if not resamples or not banks or not banks[0].ids.get("test"):
            return None
        first = banks[0]
        return cls(first.ids["test"], first.labels["test"], resamples, seed)

    def logits(self, banks):
        """Mean logits ``[n, 4]`` (NumPy, NaN if any is not finite) and
        labels of the ensemble of ``banks``, in this experiment's order.
        """
        key = ("logits", *map(id, banks))
        if key not in self._cache:
            stacked = [b.logits_for("test", self.ids) for b in banks]
            logits = torch.stack(stacked).double().mean(0).numpy()
            if not np.isfinite(logits).all():
                logits = np.full_like(logits, np.nan)
            first = banks[0]
            labels = first.labels["test"][first.rows("test", self.ids)]
            self._cache[key] = (logits, labels.numpy())
        return self._cache[key]

    def predictions(self, banks):
        """Argmax of :meth:`logits` (-1, never a class, where NaN); all
        normal (the trivial baseline) for ``banks=None``.
        """
        if banks is None:
            return np.zeros(len(self.labels), dtype=int), self.labels
        logits, labels = self.logits(banks)
        if np.isnan(logits).any():
            return np.full(len(labels), -1), labels
        return logits.argmax(-1), labels

    def samples(self, banks):
        """``[resamples, 3]`` Sp/Se/Score of the ensemble of ``banks``
        (one bank: that run), NaN for non-finite logits.
        """
        key = ("samples", *map(id, banks or []))
        if key not in self._cache:
            predictions, labels = self.predictions(banks)
            samples = self.boot.samples(predictions, labels)
            if (predictions < 0).any():
                samples[:] = np.nan
            self._cache[key] = samples
        return self._cache[key]

    def pooled(self, runs):
        """Mean over ``runs`` (seeds) of each run's resampled scores, as
        the tables pool them.
        """
        return np.mean([self.samples([b]) for b in runs], axis=0)

    def columns(self, samples, point):
        """``sp_lo`` ... ``score_hi`` of ``samples`` around ``point``
        (``{"sp": ..., "se": ..., "score": ...}``).
        """
        row = {}
        for i, metric in enumerate(METRICS):
            low, high = interval(samples[:, i], point[metric], self.level)
            row[f"{metric}_lo"], row[f"{metric}_hi"] = low, high
        return row

    def calibration(self, runs, ensemble=False):
        """Mean over ``runs`` of each run's ECE and Brier score (or of
        their ensemble's, with ``ensemble``).
        """
        members = [runs] if ensemble else [[b] for b in runs]
        values = [calibration(*self.logits(m)) for m in members]
        return {k: float(np.mean([v[k] for v in values])) for k in values[0]}

    def group_interval(self, members, by, name, point):
        """Intervals of the mean over ``members`` (each a list of banks,
        or None for all normal) of the Sp/Se/Score of the cycles whose
        ``by`` is ``name``, resampling that group's patients.
        """
        if (by, name) not in self._groups:
            keep = (cycle_groups(self.ids)[by] == name).to_numpy()
            ids = [i for i, k in zip(self.ids, keep) if k]
            boot = PatientBootstrap(ids, self.resamples, self.seed)
            self._groups[(by, name)] = (keep, boot)
        keep, boot = self._groups[(by, name)]
        samples = []
        for banks in members or [None]:
            predictions, labels = self.predictions(banks)
            group = boot.samples(predictions[keep], labels[keep])
            if (predictions < 0).any():
                group[:] = np.nan
            samples.append(group)
        return self.columns(np.mean(samples, axis=0), point)


def _with_interval(text, row, metric):
    """``text`` followed by the row's ``[low, high]`` of ``metric``."""
    low, high = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if low is None:
        return text
    return f"{text} [{_fmt(low)}, {_fmt(high)}]"


def _fmt(value, digits=2):
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _add_uncertainty(row, unc, runs, samples, point, ensemble=False):
    """Put the intervals and calibration columns into a table row."""
    if unc is None:
        return row
    row.update(unc.columns(samples, point))
    for metric in METRICS:
        row[metric] = _with_interval(row[metric], row, metric)
    cal = unc.calibration(runs, ensemble)
    row["ece"], row["brier"] = _fmt(cal["ece"]), _fmt(cal["brier"], 3)
    return row


def _runs(banks):
    return " ".join(os.path.dirname(b.source) for b in banks)


def _row(name, banks, split="test", unc=None):
    agg = aggregate_runs([b.info["metrics"][split] for b in banks])
    row = {
        "model": name,
        "n": agg["n"],
        "sp": format_mean_std(agg["sp"]),
        "se": format_mean_std(agg["se"]),
        "score": format_mean_std(agg["score"]),
        "score_mean": agg["score"][0],
        "runs": _runs(banks),
    }
    if unc is None:
        return row
    point = {metric: agg[metric][0] for metric in METRICS}
    return _add_uncertainty(row, unc, banks, unc.pooled(banks), point)


def _ensemble_score(banks, split="test"):
    """The ensemble's Sp/Se/Score; NaN when a member's logits are not
    finite (a diverged run), never the Score of argmax over NaN.
    """
    try:
        return evaluate_banks(banks, split)
    except NonFiniteLogitsError as error:
        logger.warning("ensemble not scored: %s", error)
        return {"sp": math.nan, "se": math.nan, "score": math.nan}


def _ensemble_row(name, banks, split="test", unc=None):
    result = _ensemble_score(banks, split)
    row = {
        "model": name,
        "n": 1,
        "sp": f"{result['sp']:.2f}",
        "se": f"{result['se']:.2f}",
        "score": f"{result['score']:.2f}",
        "score_mean": result["score"],
        "runs": _runs(banks),
    }
    samples = unc.samples(banks) if unc else None
    return _add_uncertainty(row, unc, banks, samples, result, ensemble=True)


BASELINE_NAME = 'All "normal" (trivial baseline)'


def baseline_row(unc=None):
    """Table 1's row of predicting "normal" for every cycle: Sp 100, Se 0,
    Score 50 on any split that has both classes.

    Example
    -------
    >>> baseline_row()["score"]
    '50.00'
    """
    row = {
        "model": BASELINE_NAME,
        "n": "",
        "sp": "100.00",
        "se": "0.00",
        "score": "50.00",
        "score_mean": 50.0,
        "runs": "",
    }
    if unc is None:
        return row
    row.update(unc.columns(unc.samples(None), dict(zip(METRICS, (100, 0, 50)))))
    for metric in METRICS:
        row[metric] = _with_interval(row[metric], row, metric)
    row["ece"] = row["brier"] = "n/a"
    return row


def _by_k(students):
    return sorted(students.items(), key=lambda item: (item[0].k, str(item[0])))


def table1(groups, backbone, unc=None):
    """Our rows of Table 1: the all-"normal" baseline, teachers, X++[k],
    X-d[k], X-d++[k]; with ``unc`` (an :class:`Uncertainty`), intervals
    and calibration.
    """
    rows = [baseline_row(unc)]
    teachers = teachers_of(groups, backbone)
    name = backbone.upper()
    if teachers:
        rows.append(_row(f"{name} (hard labels)", teachers, unc=unc))
        for k in range(2, len(teachers) + 1):
            rows.append(
                _ensemble_row(f"{name}++[k={k}]", teachers[:k], unc=unc)
            )
    for mode in TEACHER_MODES_OF_TABLE1:
        for key, students in _by_k(students_of(groups, backbone, mode)):
            of = (key.teacher_backbone or "?").upper()
            rows.append(
                _row(
                    f"{name}-d[k={key.k}] ({mode} teacher, {of}++)",
                    students,
                    unc=unc,
                )
            )
            if mode == "mean" and len(students) > 1:
                rows.append(
                    _ensemble_row(
                        f"{name}-d++[k={len(students)}] (students of the "
                        f"k={key.k} {of} mean teacher)",
                        students,
                        unc=unc,
                    )
                )
    return rows


def _mean_metrics(banks, seeds=None):
    """Mean ± std of Sp, Se, Score of ``banks`` (of ``seeds`` only)."""
    if seeds is not None:
        banks = [b for b in banks if b.info.get("seed") in seeds]
    if not banks:
        return None, []
    return aggregate_runs([b.info["metrics"]["test"] for b in banks]), banks


def _parameters(banks):
    counts = {b.info.get("parameters") for b in banks} - {None}
    return f"{counts.pop() / 1e6:.2f}M" if len(counts) == 1 else ""


def table2(groups, teacher_backbone, k=None, unc=None):
    """Hard vs soft labels per backbone, as the paper's Table 2.

    Soft: the students of ``teacher_backbone`` mean teacher with ``k``
    teachers (the largest k when None); hard: the backbone's teachers of
    the same seeds. The last row averages the backbones shown. With
    ``unc`` (an :class:`Uncertainty`): each side's intervals, and the gain
    as a paired bootstrap (the seed means of both sides on the same
    resampled patients): ``gain_lo``, ``gain_hi``, ``p_not_positive``.
    """
    rows = []
    for backbone, paper in PAPER_TABLE2.items():
        teachers = teachers_of(groups, backbone)
        soft_keys = [
            key
            for key in students_of(groups, backbone, "mean")
            if key.teacher_backbone == teacher_backbone
            and (k is None or key.k == k)
        ]
        if not teachers or not soft_keys:
            continue
        soft_key = max(soft_keys, key=lambda key: key.k)
        soft, soft_runs = _mean_metrics(groups[soft_key])
        seeds = {b.info.get("seed") for b in soft_runs}
        hard, hard_runs = _mean_metrics(teachers, seeds)
        if hard is None:  # no teacher of those seeds: every teacher
            hard, hard_runs = _mean_metrics(teachers)
        row = {"backbone": paper[0], "params": _parameters(hard_runs)}
        row["paper_params"] = f"{paper[1]}M"
        for side, agg in (("hard", hard), ("soft", soft)):
            for metric in ("sp", "se", "score"):
                row[f"{side}_{metric}"] = format_mean_std(agg[metric])
        row["gain"] = f"{soft['score'][0] - hard['score'][0]:+.2f}"
        row["paper_hard"] = f"{paper[2][2]:.2f}"
        row["paper_soft"] = f"{paper[3][2]:.2f}"
        row["paper_gain"] = f"{paper[3][2] - paper[2][2]:+.2f}"
        row["n"] = f"{len(hard_runs)}/{len(soft_runs)}"
        row["teachers"] = f"{teacher_backbone.upper()}++[k={soft_key.k}]"
        row["runs"] = _runs(hard_runs + soft_runs)
        row["_means"] = {
            f"{side}_{metric}": agg[metric][0]
            for side, agg in (("hard", hard), ("soft", soft))
            for metric in ("sp", "se", "score")
        }
        row["_paper"] = (paper[2][2], paper[3][2])
        if unc is not None:
            for side, agg, runs in (
                ("hard", hard, hard_runs),
                ("soft", soft, soft_runs),
            ):
                point = {m: agg[m][0] for m in METRICS}
                bounds = unc.columns(unc.pooled(runs), point)
                for metric in METRICS:
                    row[f"{side}_{metric}"] = _with_interval(
                        row[f"{side}_{metric}"], bounds, metric
                    )
            row["_scores"] = [
                unc.pooled(r)[:, 2] for r in (hard_runs, soft_runs)
            ]
            row.update(_gain_columns(*row["_scores"][::-1]))
        rows.append(row)
    if len(rows) > 1:
        means = pd.DataFrame([r["_means"] for r in rows]).mean()
        paper = pd.DataFrame([r["_paper"] for r in rows]).mean()
        average = {"backbone": "Average", "params": "", "paper_params": ""}
        average.update({name: f"{value:.2f}" for name, value in means.items()})
        average["gain"] = f"{means['soft_score'] - means['hard_score']:+.2f}"
        average["paper_hard"] = f"{paper[0]:.2f}"
        average["paper_soft"] = f"{paper[1]:.2f}"
        average["paper_gain"] = f"{paper[1] - paper[0]:+.2f}"
        if unc is not None:
            hard_soft = np.mean([r["_scores"] for r in rows], axis=0)
            average.update(_gain_columns(hard_soft[1], hard_soft[0]))
        rows.append(average)
    for row in rows:
        for private in ("_means", "_paper", "_scores"):
            row.pop(private, None)
    return rows


def _gain_columns(samples, baseline):
    """:func:`~speechbrain_rsc.uncertainty.paired_gain` as table columns:
    the numbers and ``gain_ci`` (``[low, high]``), ``p_no_gain``.
    """
    gain = paired_gain(samples, baseline)
    return {
        **gain,
        "gain_ci": f"[{_fmt(gain['gain_lo'])}, {_fmt(gain['gain_hi'])}]",
        "p_no_gain": _fmt(gain["p_not_positive"], 3),
    }


def gain_verdict(row, gain="gain"):
    """Words for a paired gain: within noise when its interval holds 0.

    Example
    -------
    >>> text = gain_verdict({"gain": "+1.00", "gain_lo": -0.5,
    ...     "gain_hi": 2.5, "p_not_positive": 0.2})
    >>> text.endswith("not positive in 20.0 % of resamples: within noise")
    True
    """
    low, high = row.get("gain_lo"), row.get("gain_hi")
    if low is None or low != low:
        return f"gain {row[gain]}: no interval (no resamples)"
    if low > 0:
        words = "a gain beyond noise"
    elif high < 0:
        words = "a loss beyond noise"
    else:
        words = "within noise"
    return (
        f"gain {row[gain]}, 95 % interval [{low:.2f}, {high:.2f}], not "
        f"positive in {100 * row['p_not_positive']:.1f} % of resamples: "
        f"{words}"
    )


def table3(groups, backbone, unc=None):
    """The teacher variants of Table 3 for one student backbone; with
    ``unc`` (an :class:`Uncertainty`), intervals, calibration and each
    variant's paired gain over the hard-label baseline (``gain``,
    ``gain_lo``, ``gain_hi``, ``p_not_positive``).
    """
    rows, runs_of = [], []
    students = students_of(groups, backbone)
    for mode, label in VARIANT_NAMES.items():
        keys = [key for key, _ in _by_k(students) if key.teacher_mode == mode]
        if mode == "single" and not keys:
            # one teacher: mean and random give the single-teacher targets
            keys = [
                k for k in students if k.teacher_mode == "mean" and k.k == 1
            ]
        for key in keys:
            with_k = mode in ("mean", "random", "curated")
            name = label + (f" (k={key.k})" if with_k else "")
            row = _row(name, students[key], unc=unc)
            if any(not b.info.get("converged", True) for b in students[key]):
                row["model"] += " [did not converge]"
            row["paper_bts"] = PAPER_TABLE3[mode]
            rows.append(row)
            runs_of.append(students[key])
    teachers = teachers_of(groups, backbone)
    if teachers and not any(k.teacher_mode == "hard" for k in students):
        row = _row(VARIANT_NAMES["hard"] + " (teachers)", teachers, unc=unc)
        row["paper_bts"] = PAPER_TABLE3["hard"]
        rows.insert(0, row)
        runs_of.insert(0, teachers)
    if unc is not None and rows and rows[0]["model"].startswith("Hard"):
        baseline = unc.pooled(runs_of[0])[:, 2]
        for row, runs in zip(rows[1:], runs_of[1:]):
            row["gain"] = f"{row['score_mean'] - rows[0]['score_mean']:+.2f}"
            row.update(_gain_columns(unc.pooled(runs)[:, 2], baseline))
    return rows


def loss_split(groups):
    """The split Figure 3's teacher loss is drawn on: the one that selected
    the checkpoints (test under the paper protocol).
    """
    splits = {b.info["select_on"] for banks in groups.values() for b in banks}
    return "test" if splits == {"test"} else "valid"


def k_curves(groups, backbone, split="valid"):
    """Per k: teacher ensemble Score and loss, student Score (mean/random).

    The loss is the cross-entropy of the first-k ensemble's mean logits
    against the labels of ``split`` (Figure 3's teacher validation loss).
    The hard-label students are the k = 0 point of both student curves,
    and the k = 1 mean-teacher students the k = 1 point of the random one
    (one teacher gives them the same targets).
    """
    teachers = teachers_of(groups, backbone)
    curves = {"k": [], "ensemble_score": [], "ensemble_loss": []}
    for k in range(1, len(teachers) + 1):
        chosen = select_banks(teachers, k=k)
        loss = math.nan
        score = _ensemble_score(chosen)["score"]
        if chosen[0].ids.get(split) and not math.isnan(score):
            _, logits, labels = ensemble_logits(chosen, split)
            one_hot = torch.nn.functional.one_hot(labels, N_CLASSES).float()
            loss = soft_cross_entropy(logits, one_hot).item()
        curves["k"].append(k)
        curves["ensemble_score"].append(score)
        curves["ensemble_loss"].append(loss)
    students = students_of(groups, backbone)
    for mode in ("mean", "random"):
        points = {}
        for key, banks in students.items():
            at = {mode: key.k, "hard": 0}.get(key.teacher_mode)
            if key.teacher_mode == "mean" and key.k == 1:
                at = 1
            if at is not None:
                agg = aggregate_runs([b.info["metrics"]["test"] for b in banks])
                points[at] = agg["score"]
        curves[mode] = dict(sorted(points.items()))
    return curves


def best_student(groups, split="valid"):
    """The student run with the best ``split`` Score (test if no valid)."""
    best, best_score = None, -math.inf
    for key, banks in groups.items():
        if key.role != "student":
            continue
        for bank in banks:
            metrics = bank.info["metrics"]
            score = metrics.get(split, {}).get("score", math.nan)
            if math.isnan(score):
                score = metrics["test"]["score"]
            if score > best_score:
                best, best_score = bank, score
    return best


def breakdown_tables(groups, backbone, unc=None):
    """Per-device and per-location Sp/Se/Score (test) of the all-"normal"
    baseline, the teachers (mean over seeds), their largest ensemble and
    each mean-teacher student group (mean over seeds); with ``unc`` (an
    :class:`Uncertainty`), the intervals of those means, resampling each
    group's patients.

    Returns
    -------
    dict
        ``"device"`` / ``"location"`` -> pandas.DataFrame.
    """
    models = [(BASELINE_NAME, None)]
    teachers = teachers_of(groups, backbone)
    name = backbone.upper()
    if teachers:
        models.append((f"{name} (hard labels)", [[b] for b in teachers]))
        models.append((f"{name}++[k={len(teachers)}]", [teachers]))
    for key, students in _by_k(students_of(groups, backbone, "mean")):
        models.append(
            (f"{name}-d[k={key.k}] (mean teacher)", [[b] for b in students])
        )
    tables = {}
    for by in GROUPS:
        frames = []
        for model, members in models:
            if members is None:
                runs = _baseline_breakdown(groups, by)
            else:
                runs = pd.concat(
                    [bank_breakdown(m)[by] for m in members],
                    ignore_index=True,
                )
            mean = runs.groupby(by, sort=True).agg(
                cycles=("cycles", "first"),
                sp=("sp", "mean"),
                se=("se", "mean"),
                score=("score", "mean"),
                n=("score", "size"),
            )
            mean = mean.reset_index().assign(model=model)
            if members is None:
                mean["n"] = ""
            if unc is not None:
                bounds = [
                    unc.group_interval(members, by, row[by], row)
                    for row in mean.to_dict("records")
                ]
                mean = pd.concat([mean, pd.DataFrame(bounds)], axis=1)
            frames.append(mean)
        columns = ["model", by, "n", "cycles", "sp", "se", "score"]
        if unc is not None:
            columns += [f"{m}_{end}" for m in METRICS for end in ("lo", "hi")]
        frames = frames if len(models) > 1 else []
        tables[by] = (
            pd.concat(frames, ignore_index=True)[columns]
            if frames
            else pd.DataFrame(columns=columns)
        )
    return tables


def _baseline_breakdown(groups, by):
    """:func:`~speechbrain_rsc.breakdown.scores_by` of predicting normal
    for every test cycle of the runs in ``groups``.
    """
    bank = next(b for runs in groups.values() for b in runs)
    labels = bank.labels["test"]
    normal = torch.zeros(len(labels), N_CLASSES)
    normal[:, 0] = 1.0
    return scores_by(bank.ids["test"], normal, labels, by)


def _markdown(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(row.get(c, "")) for c in columns) + " |"
        )
    return "\n".join(lines)


def plot_k_curves(curves, backbone, folder, loss_split="valid"):
    """Figure 2 (student Score vs k) and Figure 3 (ensemble Score, student
    Score and teacher loss on ``loss_split`` vs k) as PNGs.
    """
    import matplotlib  # only to draw a figure: optional and slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, marker in (("mean", "o"), ("random", "s")):
        points = curves[mode]
        if points:
            ks = list(points)
            means = [points[k][0] for k in ks]
            stds = [points[k][1] for k in ks]
            ax.errorbar(
                ks,
                means,
                yerr=stds,
                marker=marker,
                capsize=3,
                label=f"{mode} teacher",
            )
    ax.axhline(
        50.0, color="grey", linestyle=":", label='all "normal" (Score 50)'
    )
    ax.set_xlabel("number of teachers k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("student test Score (%)")
    ax.set_title(f"{backbone.upper()}-d: Score vs k (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(folder, f"figure2_{backbone}.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        curves["k"],
        curves["ensemble_score"],
        "o-",
        label=f"{backbone.upper()}++[k] ensemble",
    )
    if curves["mean"]:
        ks = list(curves["mean"])
        ax.plot(
            ks,
            [curves["mean"][k][0] for k in ks],
            "s-",
            label=f"{backbone.upper()}-d[k] mean-teacher student",
        )
    ax.axhline(
        50.0, color="grey", linestyle=":", label='all "normal" (Score 50)'
    )
    ax.set_xlabel("number of teachers k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test Score (%)")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(
        curves["k"],
        curves["ensemble_loss"],
        "^--",
        color="tab:red",
        label=f"teacher ensemble {loss_split} loss",
    )
    twin.set_ylabel(f"{loss_split} cross-entropy", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="best")
    ax.set_title(f"{backbone.upper()}: ensemble, student and loss vs k")
    fig.tight_layout()
    paths.append(os.path.join(folder, f"figure3_{backbone}.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def plot_reliability(models, path, bins=15):
    """Reliability diagrams side by side: per bin of the top-class
    probability, the accuracy against the confidence, with the ECE.

    Arguments
    ---------
    models : list of (str, numpy.ndarray, numpy.ndarray)
        Name, logits ``[n, 4]`` and labels of each model.
    path : str
        The PNG to write.
    bins : int
    """
    import matplotlib  # only to draw a figure: optional and slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(models), figsize=(3.6 * len(models), 3.8), squeeze=False
    )
    for ax, (name, logits, labels) in zip(axes[0], models):
        table = reliability(softmax(logits), labels, bins)
        cal = calibration(logits, labels, bins)
        width = 1.0 / bins
        ax.bar(
            table["edges"][:-1],
            np.nan_to_num(table["accuracy"]),
            width=width,
            align="edge",
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_title(
            f"{name}\nECE {cal['ece']:.2f} %, Brier {cal['brier']:.3f}",
            fontsize=8,
        )
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability_models(groups, unc):
    """The models of the reliability diagram: the best student, its
    teachers' ensemble and a hard-label model (the teacher of the
    student's seed, else the first hard-label run).

    Returns
    -------
    list of (str, numpy.ndarray, numpy.ndarray)
        Name, logits and labels (models without finite logits left out).
    """
    best = best_student(groups)
    if best is None:
        return []
    key = RunKey.from_info(best.info)
    chosen = [(f"best student {best.name} ({key.teacher_mode})", [best])]
    teachers = teachers_of(groups, key.teacher_backbone)
    members = [b for b in teachers if b.info.get("seed") in key.teacher_seeds]
    if members:
        name = f"{key.teacher_backbone.upper()}++[k={len(members)}] teachers"
        chosen.append((name, members))
    hard = teachers_of(groups, key.backbone) or [
        b
        for k, runs in groups.items()
        if k.teacher_mode == "hard"
        for b in runs
    ]
    if hard:
        same = [b for b in hard if b.info.get("seed") == best.info.get("seed")]
        run = (same or hard)[0]
        chosen.append((f"hard labels {run.name}", [run]))
    models = []
    for name, banks in chosen:
        logits, labels = unc.logits(banks)
        if np.isfinite(logits).all():
            models.append((name, logits, labels))
    return models


def plot_confusion(bank, path, split="test"):
    """Confusion matrix of one run's predictions as a PNG."""
    import matplotlib  # only to draw a figure: optional and slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(bank.logits[split].argmax(-1), bank.labels[split])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for t in range(N_CLASSES):
        for p in range(N_CLASSES):
            ax.text(
                p,
                t,
                int(matrix[t, p]),
                ha="center",
                va="center",
                color="white" if matrix[t, p] > matrix.max() / 2 else "black",
            )
    ax.set_xticks(range(N_CLASSES), CLASS_NAMES)
    ax.set_yticks(range(N_CLASSES), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    score = bank.score(split)["score"]
    ax.set_title(
        f"{bank.name} ({bank.info.get('targets', {}).get('mode', 'teacher')}), "
        f"{split} Score {score:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _data_line(groups):
    """What the runs of one experiment were made from: each preparation
    (key, sample rate, cycle counts) and how many runs read it.
    """
    counts = Counter()
    for banks in groups.values():
        for bank in banks:
            data = (bank.info.get("provenance") or {}).get("data") or {}
            cycles = data.get("cycles") or {}
            rate = (data.get("options") or {}).get("sample_rate", "?")
            split_counts = "/".join(
                str((cycles.get(s) or {}).get("count", "?"))
                for s in ("train", "valid", "test")
            )
            counts[(data.get("key"), rate, split_counts)] += 1
    return "; ".join(
        f"`{key}` at {rate} Hz, {c} cycles (train/valid/test), {n} runs"
        for (key, rate, c), n in counts.items()
    )


def _below_baseline(rows, name="model"):
    """Lines naming the rows that do not beat the all-"normal" baseline
    (Score 50), or whose 95 % interval reaches it.
    """
    below, unsure = [], []
    for row in rows:
        score = row.get("score_mean", row.get("score"))
        if row.get(name) == BASELINE_NAME or score is None or score != score:
            continue
        where = str(row[name]) + (
            f" ({row['_group']})" if "_group" in row else ""
        )
        if score <= 50.0:
            below.append(f"{where}: {score:.2f}")
        elif row.get("score_lo", math.inf) <= 50.0:
            unsure.append(f"{where}: {score:.2f} [{row['score_lo']:.2f}, ...]")
    lines = []
    if below:
        lines.append(
            '**Does not beat predicting "normal" for every cycle** (Score '
            "50): " + "; ".join(below) + "."
        )
    if unsure:
        lines.append(
            "Above 50, but the 95 % interval reaches 50 (not distinguishable "
            'from all "normal"): ' + "; ".join(unsure) + "."
        )
    if not lines and rows:
        lines.append('Every model beats predicting "normal" for every cycle.')
    return lines


UNCERTAINTY_TEXT = (
    "Brackets: 95 % interval of the number before them (for a row pooled "
    "over seeds, of its mean over seeds) from {resamples} resamples of the "
    "test **patients** (every cycle of a drawn patient together; seed "
    "{seed}); every model is scored on the same resamples. ECE: expected "
    "calibration error of the top-class probability, 15 equal-width bins, "
    "in %; Brier: multi-class Brier score (0 best, 2 worst); both means "
    "over seeds for pooled rows. The first row of Table 1 predicts "
    '"normal" for every cycle: Sp 100, Se 0, Score 50 on any split.'
)


def _experiment_section(groups, backbones, table2_k, folder, suffix, unc=None):
    """Markdown lines, CSVs and figures of one experiment."""
    protocol, data = next(iter(groups)).experiment
    select_on = next(iter(groups.values()))[0].info["select_on"]
    stats = ["ece", "brier"] if unc else []
    cols = ["model", "n", "sp", "se", "score", *stats, "runs"]
    parts = [
        f"Data `{data}` (the same split at any sample rate); "
        f"preparations: {_data_line(groups)}.",
        f"Protocol: {protocol} (checkpoints selected, and curated teachers "
        f"ranked, on the {select_on} split).",
        "",
    ]
    if unc:
        text = UNCERTAINTY_TEXT.format(resamples=unc.resamples, seed=unc.seed)
        parts += [text, ""]
    parts += ["Run groups (replicas differ only by seed):", ""]
    for key, banks in sorted(groups.items(), key=lambda kv: kv[0].describe()):
        seeds = " ".join(str(b.info.get("seed")) for b in banks)
        parts.append(f"- {key.describe()}: runs of seeds {seeds}")
    parts.append("")
    gain_cols = ["gain", "gain_ci", "p_no_gain"] if unc else []
    for backbone in backbones:
        rows1 = table1(groups, backbone, unc)
        rows3 = table3(groups, backbone, unc)
        write_csv(rows1, os.path.join(folder, f"table1_{backbone}{suffix}.csv"))
        write_csv(rows3, os.path.join(folder, f"table3_{backbone}{suffix}.csv"))
        parts += [f"### Table 1 ({backbone})", "", _markdown(rows1, cols), ""]
        parts += _below_baseline(rows1) + [""]
        parts += [
            f"### Table 3: teacher variants ({backbone} student)",
            "",
            _markdown(rows3, cols[:-1] + gain_cols + ["paper_bts", "runs"]),
            "",
        ]
        if gain_cols and rows3:
            parts += [
                f"Against {rows3[0]['model']} (paired bootstrap, seed "
                "means on the same resampled patients):",
                "",
            ]
            parts += [
                f"- {row['model']}: {gain_verdict(row)}"
                for row in rows3[1:]
                if "gain_lo" in row
            ]
            parts.append("")
        parts += _below_baseline(rows3) + [""]
        split = loss_split(groups)
        curves = k_curves(groups, backbone, split)
        if curves["k"]:
            for path in plot_k_curves(
                curves, backbone + suffix, folder, loss_split=split
            ):
                name = os.path.basename(path)
                parts += [f"![{name}]({name})", ""]
        tables = breakdown_tables(groups, backbone, unc)
        for by, table in tables.items():
            write_csv(
                table.to_dict("records"),
                os.path.join(folder, f"by_{by}_{backbone}{suffix}.csv"),
            )
            parts += [
                f"### Test Sp/Se/Score per {by} ({backbone}; mean over "
                "runs, n/a where a group has no normal or no abnormal "
                "cycle)",
                "",
                markdown_table(table),
                "",
            ]
            records = [
                {**r, "score_mean": r["score"], "_group": r[by]}
                for r in table.to_dict("records")
            ]
            parts += _below_baseline(records) + [""]
    teacher_backbone = backbones[0] if backbones else None
    rows2 = table2(groups, teacher_backbone, table2_k, unc) if backbones else []
    write_csv(rows2, os.path.join(folder, f"table2{suffix}.csv"))
    parts += ["### Table 2: hard vs soft labels per backbone", ""]
    if not rows2:
        parts += [
            "No backbone has both hard-label runs and students of "
            f"{teacher_backbone}++[k={table2_k or 'any'}] as mean teacher.",
            "",
        ]
    parts += [
        _markdown(
            rows2,
            [
                "backbone",
                "params",
                "paper_params",
                "hard_sp",
                "hard_se",
                "hard_score",
                "soft_sp",
                "soft_se",
                "soft_score",
                *(gain_cols or ["gain"]),
                "paper_hard",
                "paper_soft",
                "paper_gain",
                "n",
                "teachers",
            ],
        ),
        "",
        "paper_soft is the paper's k=5 mean teacher for every backbone: "
        "for BTS its BTS-d[k=5] of Tables 1 and 3 (64.38), not the k=15 "
        "random teacher its Table 2 prints (64.39).",
        "",
    ]
    if unc and rows2:
        parts += [
            "Gain = soft - hard Score, as a paired bootstrap (seed means of "
            "both sides on the same resampled patients):",
            "",
        ]
        parts += [f"- {row['backbone']}: {gain_verdict(row)}" for row in rows2]
        parts.append("")
    best = best_student(groups)
    if best is not None:
        path = plot_confusion(
            best,
            os.path.join(folder, f"confusion_best_student{suffix}.png"),
        )
        parts += [
            f"### Confusion matrix of the best student "
            f"({os.path.dirname(best.source)})",
            "",
            f"![confusion]({os.path.basename(path)})",
            "",
        ]
    models = reliability_models(groups, unc) if unc else []
    if models:
        path = plot_reliability(
            models, os.path.join(folder, f"reliability{suffix}.png")
        )
        parts += [
            "### Reliability diagram (test; are the probabilities what "
            "they say?)",
            "",
            "Per bin of the top-class probability, the share of cycles "
            "classified right; a calibrated model follows the diagonal. "
            + "; ".join(
                f"{name}: ECE {cal['ece']:.2f} %, Brier {cal['brier']:.3f}"
                for name, cal in (
                    (name, calibration(logits, labels))
                    for name, logits, labels in models
                )
            )
            + ".",
            "",
            f"![reliability]({os.path.basename(path)})",
            "",
        ]
    return parts


def write_report(
    results_folder,
    report_folder,
    backbones=None,
    table2_k=None,
    bootstrap=1000,
    bootstrap_seed=0,
):
    """Write ``report.md``, one CSV per table and the PNG figures.

    Arguments
    ---------
    results_folder : str
        Folder holding the runs (searched recursively for banks).
    report_folder : str
        Output folder.
    backbones : list of str, optional
        Backbones of Tables 1 and 3 (default: every one found); the first
        is the teachers' backbone of Table 2.
    table2_k : int, optional
        Teachers of Table 2's soft-label students (default: the largest k).
    bootstrap : int
        Patient resamples of the 95 % intervals and paired gains (0: no
        intervals, no calibration, no reliability diagram).
    bootstrap_seed : int
        Seed of the resamples.

    Returns
    -------
    str
        Path of ``report.md``.
    """
    os.makedirs(report_folder, exist_ok=True)
    groups = collect_runs(results_folder)
    experiments = defaultdict(dict)
    for key, banks in groups.items():
        experiments[key.experiment][key] = banks
    backbones = backbones or sorted({key.backbone for key in groups})
    parts = [
        "# Results",
        "",
        "Test split, mean ± std over seeds (n runs); ensembles are one run.",
        "",
    ]
    if len(experiments) > 1:
        parts += [
            f"**{len(experiments)} experiments** (prepared data x protocol) "
            "are in this folder; each has its own section and file suffix, "
            "and no run is averaged with another experiment's.",
            "",
        ]
    for i, (experiment, members) in enumerate(sorted(experiments.items())):
        suffix = f"_{i + 1}" if len(experiments) > 1 else ""
        protocol, data = experiment
        parts += [
            f"## Experiment {i + 1}: protocol {protocol}, data {data}",
            "",
        ]
        unc = Uncertainty.of(members, bootstrap, bootstrap_seed)
        parts += _experiment_section(
            members, backbones, table2_k, report_folder, suffix, unc
        )
    report = os.path.join(report_folder, "report.md")
    write_text_atomically(report, lambda file: file.write("\n".join(parts)))
    return report
