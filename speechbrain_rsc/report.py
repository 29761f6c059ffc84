"""Tables and figures in the shapes of the paper, from a results folder.

Every trained run leaves ``<run>/bank.safetensors`` whose header says what
it is (role, backbone, seed, teacher mode, teachers); the report finds them
all, groups them, and writes Markdown and CSV tables (every row names the
runs it comes from) and PNG figures.

Example
-------
>>> run_key({"role": "student", "backbone": "cnn6", "teacher_mode": "mean",
...          "teacher_seeds": [1, 2, 3], "teacher_backbone": "cnn6"})
('student', 'cnn6', 'cnn6', 'mean', 3)
"""

import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import (
    BANK_FILENAME,
    LogitBank,
    bank_order,
    select_banks,
)
from speechbrain_rsc.distillation import soft_cross_entropy
from speechbrain_rsc.ensemble import ensemble_logits, evaluate_banks, write_csv
from speechbrain_rsc.metrics import (
    aggregate_runs,
    confusion_matrix,
    format_mean_std,
)

logger = logging.getLogger(__name__)

PAPER_TABLE2 = {  # backbone: (hard Score, soft Score, params in M)
    "resnet18": (55.09, 56.26, 11.7),
    "efficientnet_b0": (56.33, 57.68, 5.3),
    "cnn6": (57.17, 58.17, 4.8),
    "ast": (59.55, 61.08, 87.7),
    "audio_clap": (62.56, 63.63, 28.0),
    "bts": (63.54, 64.39, 153.0),
}
PAPER_TABLE3 = {  # row: BTS Score in the paper
    "hard": "63.54 ± 0.80",
    "noise": "62.71 ± 0.47",
    "teacher_noise": "62.00 ± 1.06",
    "single": "63.90",
    "mean": "64.38 (k=5)",
    "random": "64.39 (k=15)",
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


def run_key(info):
    """Group key of a run: (role, backbone, teacher backbone, mode, k)."""
    if info.get("role") != "student":
        return ("teacher", info["backbone"], None, None, None)
    k = len(info.get("teacher_seeds") or [])
    return (
        "student",
        info["backbone"],
        info.get("teacher_backbone"),
        info["teacher_mode"],
        k,
    )


def collect_runs(results_folder):
    """Every bank under ``results_folder``, grouped by :func:`run_key`."""
    groups = defaultdict(list)
    for path in sorted(Path(results_folder).glob(f"**/{BANK_FILENAME}")):
        bank = LogitBank.load(path)
        groups[run_key(bank.info)].append(bank)
    for banks in groups.values():
        banks.sort(key=bank_order)
    return dict(groups)


def _row(name, banks, split="test"):
    results = [b.info["metrics"][split] for b in banks]
    agg = aggregate_runs(results)
    return {
        "model": name,
        "n": agg["n"],
        "sp": format_mean_std(agg["sp"]),
        "se": format_mean_std(agg["se"]),
        "score": format_mean_std(agg["score"]),
        "score_mean": agg["score"][0],
        "runs": " ".join(os.path.dirname(b.source) for b in banks),
    }


def _ensemble_row(name, banks, split="test"):
    result = evaluate_banks(banks, split)
    return {
        "model": name,
        "n": 1,
        "sp": f"{result['sp']:.2f}",
        "se": f"{result['se']:.2f}",
        "score": f"{result['score']:.2f}",
        "score_mean": result["score"],
        "runs": " ".join(os.path.dirname(b.source) for b in banks),
    }


def table1(groups, backbone):
    """Our rows of Table 1: teachers, X++[k], X-d[k], X-d++[k]."""
    rows = []
    teachers = groups.get(("teacher", backbone, None, None, None), [])
    name = backbone.upper()
    if teachers:
        rows.append(_row(f"{name} (hard labels)", teachers))
        for k in range(2, len(teachers) + 1):
            rows.append(_ensemble_row(f"{name}++[k={k}]", teachers[:k]))
    for key in sorted(
        k for k in groups if k[0] == "student" and k[1] == backbone
    ):
        _, _, _, mode, k = key
        if mode not in ("mean", "random", "curated"):
            continue
        students = groups[key]
        label = f"{name}-d[k={k}] ({mode} teacher)"
        rows.append(_row(label, students))
        if mode == "mean" and len(students) > 1:
            rows.append(
                _ensemble_row(
                    f"{name}-d++[k={len(students)}] "
                    f"(students of k={k} mean teacher)",
                    students,
                )
            )
    return rows


def table2(groups):
    """Hard vs soft (mean teacher, largest k) per backbone, beside the paper."""
    rows = []
    for backbone, (paper_hard, paper_soft, params) in PAPER_TABLE2.items():
        teachers = groups.get(("teacher", backbone, None, None, None))
        means = [
            key
            for key in groups
            if key[0] == "student" and key[1] == backbone and key[3] == "mean"
        ]
        if not teachers:
            continue
        hard = _row("hard", teachers)
        soft = (
            _row("soft", groups[max(means, key=lambda k: k[4])])
            if means
            else None
        )
        rows.append(
            {
                "backbone": backbone,
                "params_paper_M": params,
                "hard": hard["score"],
                "soft": soft["score"] if soft else "",
                "paper_hard": paper_hard,
                "paper_soft": paper_soft,
                "runs": hard["runs"] + (" " + soft["runs"] if soft else ""),
            }
        )
    return rows


def table3(groups, backbone):
    """The teacher variants of Table 3 for one student backbone."""
    rows = []
    teachers = groups.get(("teacher", backbone, None, None, None), [])
    students = {
        key: banks
        for key, banks in groups.items()
        if key[0] == "student" and key[1] == backbone
    }
    for mode, label in VARIANT_NAMES.items():
        keys = sorted(k for k in students if k[3] == mode)
        if mode == "single" and not keys:
            # one teacher: mean and random give the single-teacher targets
            keys = [k for k in students if k[3] == "mean" and k[4] == 1]
        for key in keys:
            k = key[4]
            name = label + (
                f" (k={k})" if mode in ("mean", "random", "curated") else ""
            )
            row = _row(name, students[key])
            if any(not b.info.get("converged", True) for b in students[key]):
                row["model"] += " [did not converge]"
            row["paper_bts"] = PAPER_TABLE3[mode]
            rows.append(row)
    if teachers and not any(k[3] == "hard" for k in students):
        row = _row(VARIANT_NAMES["hard"] + " (teachers)", teachers)
        row["paper_bts"] = PAPER_TABLE3["hard"]
        rows.insert(0, row)
    return rows


def k_curves(groups, backbone, split="valid"):
    """Per k: teacher ensemble Score and loss, student Score (mean/random).

    The loss is the cross-entropy of the first-k ensemble's mean logits
    against the labels of ``split`` (Figure 3's teacher validation loss).
    """
    teachers = groups.get(("teacher", backbone, None, None, None), [])
    curves = {"k": [], "ensemble_score": [], "ensemble_loss": []}
    for k in range(1, len(teachers) + 1):
        chosen = select_banks(teachers, k=k)
        score = evaluate_banks(chosen, "test")["score"]
        loss = math.nan
        if chosen[0].ids.get(split):
            _, v_logits, v_labels = ensemble_logits(chosen, split)
            one_hot = torch.nn.functional.one_hot(v_labels, 4).float()
            loss = soft_cross_entropy(v_logits, one_hot).item()
        curves["k"].append(k)
        curves["ensemble_score"].append(score)
        curves["ensemble_loss"].append(loss)
    for mode in ("mean", "random"):
        points = {}
        for key, banks in groups.items():
            if key[0] == "student" and key[1] == backbone and key[3] == mode:
                agg = aggregate_runs([b.info["metrics"]["test"] for b in banks])
                points[key[4]] = agg["score"]
        curves[mode] = dict(sorted(points.items()))
    return curves


def best_student(groups, split="valid"):
    """The student run with the best ``split`` Score (test if no valid)."""
    best, best_score = None, -math.inf
    for key, banks in groups.items():
        if key[0] != "student":
            continue
        for bank in banks:
            metrics = bank.info["metrics"]
            score = metrics.get(split, {}).get("score", math.nan)
            if math.isnan(score):
                score = metrics["test"]["score"]
            if score > best_score:
                best, best_score = bank, score
    return best


def _markdown(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(row.get(c, "")) for c in columns) + " |"
        )
    return "\n".join(lines)


def plot_k_curves(curves, backbone, folder):
    """Figure 2 (student Score vs k) and Figure 3 (ensemble Score, student
    Score and teacher validation loss vs k) as PNGs.
    """
    import matplotlib

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
        label="teacher ensemble valid loss",
    )
    twin.set_ylabel("validation cross-entropy", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="best")
    ax.set_title(f"{backbone.upper()}: ensemble, student and loss vs k")
    fig.tight_layout()
    paths.append(os.path.join(folder, f"figure3_{backbone}.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def plot_confusion(bank, path, split="test"):
    """Confusion matrix of one run's predictions as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from speechbrain_rsc.data.schema import CLASS_NAMES

    matrix = confusion_matrix(bank.logits[split].argmax(-1), bank.labels[split])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for t in range(4):
        for p in range(4):
            ax.text(
                p,
                t,
                int(matrix[t, p]),
                ha="center",
                va="center",
                color="white" if matrix[t, p] > matrix.max() / 2 else "black",
            )
    ax.set_xticks(range(4), CLASS_NAMES)
    ax.set_yticks(range(4), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    score = bank.score(split)["score"]
    ax.set_title(
        f"{bank.name} ({bank.info.get('teacher_mode', 'teacher')}), "
        f"{split} Score {score:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results_folder, report_folder, backbones=None):
    """Write ``report.md``, one CSV per table and the PNG figures.

    Arguments
    ---------
    results_folder : str
        Folder holding the runs (searched recursively for banks).
    report_folder : str
        Output folder.
    backbones : list of str, optional
        Student backbones to report (default: every one found).

    Returns
    -------
    str
        Path of ``report.md``.
    """
    os.makedirs(report_folder, exist_ok=True)
    groups = collect_runs(results_folder)
    found = sorted({key[1] for key in groups})
    backbones = backbones or found
    cols = ["model", "n", "sp", "se", "score", "runs"]
    parts = [
        "# Results",
        "",
        "Test split, mean ± std over seeds (n runs); ensembles are one run.",
        "Checkpoints were selected on: "
        + ", ".join(
            sorted(
                {
                    str(b.info.get("select_on"))
                    for bs in groups.values()
                    for b in bs
                }
            )
        )
        + ".",
        "",
    ]
    for backbone in backbones:
        rows1 = table1(groups, backbone)
        rows3 = table3(groups, backbone)
        write_csv(rows1, os.path.join(report_folder, f"table1_{backbone}.csv"))
        write_csv(rows3, os.path.join(report_folder, f"table3_{backbone}.csv"))
        parts += [f"## Table 1 ({backbone})", "", _markdown(rows1, cols), ""]
        parts += [
            f"## Table 3: teacher variants ({backbone} student)",
            "",
            _markdown(rows3, cols[:-1] + ["paper_bts", "runs"]),
            "",
        ]
        curves = k_curves(groups, backbone)
        if curves["k"]:
            for path in plot_k_curves(curves, backbone, report_folder):
                parts += [
                    f"![{os.path.basename(path)}]({os.path.basename(path)})",
                    "",
                ]
    rows2 = table2(groups)
    write_csv(rows2, os.path.join(report_folder, "table2.csv"))
    parts += [
        "## Table 2: hard vs soft labels per backbone",
        "",
        _markdown(
            rows2,
            [
                "backbone",
                "hard",
                "soft",
                "paper_hard",
                "paper_soft",
                "params_paper_M",
            ],
        ),
        "",
    ]
    best = best_student(groups)
    if best is not None:
        path = plot_confusion(
            best, os.path.join(report_folder, "confusion_best_student.png")
        )
        run = os.path.dirname(best.source)
        parts += [
            f"## Confusion matrix of the best student ({run})",
            "",
            f"![confusion]({os.path.basename(path)})",
            "",
        ]
    report = os.path.join(report_folder, "report.md")
    write_text_atomically(report, lambda file: file.write("\n".join(parts)))
    return report
