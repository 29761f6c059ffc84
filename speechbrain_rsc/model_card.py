"""A model card (``README.md``) for a published model folder.

:func:`model_card` fills :data:`TEMPLATE` from what a trained model
records about itself (``model.json``'s ``info``, or an ensemble's
``ensemble.json``): the data and the protocol that selected the
checkpoint, the test scores, per-device scores when given, how the
teachers made the targets, the citation, and a "Not a medical device"
section. :func:`write_model_card` writes it beside the weights;
:func:`speechbrain_rsc.export.save_trained` and
:func:`speechbrain_rsc.export.export_ensemble` call it. The YAML front
matter is the Hugging Face hub's model metadata.

Example
-------
>>> card = model_card({"backbone": "cnn6", "role": "student",
...     "protocol": "validation", "select_on": "valid",
...     "targets": {"mode": "mean", "uses_teachers": True, "text": "..."},
...     "teacher_backbone": "bts", "teacher_seeds": [1, 2, 3, 4, 5],
...     "metrics": {"test": {"sp": 80.0, "se": 40.0, "score": 60.0}}})
>>> "| test | 80.00 | 40.00 | 60.00 |" in card
True
>>> "## Not a medical device; research use only" in card
True
"""

import json
import math
from pathlib import Path
from string import Template

import pandas as pd

from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.breakdown import markdown_table
from speechbrain_rsc.ensemble import evaluate_banks
from speechbrain_rsc.trained_model import read_config

CARD_FILE = "README.md"
ENSEMBLE_FILE = "ensemble.json"

TEMPLATE = Template(
    """\
---
library_name: speechbrain
license: apache-2.0
datasets:
- $dataset_id
pipeline_tag: audio-classification
tags:
- audio-classification
- respiratory-sound-classification
- icbhi
- knowledge-distillation
- speechbrain
---

# $title

$summary

## Not a medical device; research use only

This model is **not a medical device**. It has not been cleared or
approved by any regulator nor validated in a clinical study. Do not use it
to diagnose, screen, monitor or treat anyone, nor to inform any decision
about a person's care. It is a research artefact for benchmarking
respiratory sound classification on ICBHI 2017; its scores describe that
benchmark only and say little about other patients, devices or
recording conditions.

## Use

```python
from speechbrain_rsc.inference import RespiratoryClassifier

classifier = RespiratoryClassifier.from_hparams(source="$source")
out_prob, score, index, text_lab = classifier.classify_file("cycle.wav")
```

or, from a shell: `rsc-classify cycle.wav --model $source`. Install
speechbrain-rsc first: it is not on PyPI, so install it from a checkout of
its source (`pip install .` in that folder; its README names the tested
torch set). Loading runs no code from this folder: the network is rebuilt
from `model.json` (`ensemble.json`) and the safetensors weights
`*.ckpt`; `hyperparams.yaml` is for SpeechBrain's own loading
(`trust_remote_code=True`).

Input: one respiratory cycle, mono audio of any sample rate and format
that soundfile reads (WAV, FLAC, ...), resampled to $sample_rate Hz and
$pad_text to $duration s. Output: the class (normal, crackle, wheeze or
both) and its four probabilities.$prompt_note

## Data

$data

## Training

$training

## Results

$results

## Citation

$citation
"""
)

# What selecting on each split means, by the split a bank records
# (``select_on``; speechbrain_rsc.recipe.Protocol decides it)
SELECTION_TEXT = {
    "valid": (
        "The checkpoint was selected (and curated "
        "teachers were ranked) on a patient-disjoint validation split carved "
        "from the official training patients; the official test split was "
        "used only to report the scores below."
    ),
    "test": (
        "As in the paper and its reference code, the "
        "checkpoint was selected (and curated teachers were ranked) on the "
        "official **test** split; there is no validation split. The test "
        "scores below are therefore optimistic, and comparable only to "
        "numbers selected the same way."
    ),
}

PAPER_CITATION = """\
M. Toikkanen and J.-W. Kim, "Improving Respiratory Sound Classification
with Architecture-Agnostic Knowledge Distillation from Ensembles". Code:
<https://github.com/RSC-Toolkit/rsc-ensemble-kd>.

```bibtex
@misc{toikkanen_kim_ensemble_kd,
  title  = {Improving Respiratory Sound Classification with
            Architecture-Agnostic Knowledge Distillation from Ensembles},
  author = {Toikkanen, Miika and Kim, June-Woo},
  note   = {Code: https://github.com/RSC-Toolkit/rsc-ensemble-kd}
}
```

The data: B. Rocha et al., "A respiratory sound database for the
development of automated classification," in *Precision Medicine Powered
by pHealth and Connected Health: ICBHI 2017*, Springer, 2018, pp. 33-37."""

BTS_CITATION = """

BTS: J.-W. Kim, M. Toikkanen, Y. Choi, S.-E. Moon and H.-Y. Jung, "BTS:
Bridging text and sound modalities for metadata-aided respiratory sound
classification," in *Interspeech 2024*, 2024, pp. 1690-1694."""

DATA_TEXT = (
    "ICBHI 2017 Respiratory Sound Database: 920 recordings of 126 "
    "patients, 6898 respiratory cycles labelled normal, crackle, wheeze or "
    "both. Official split: train 539 recordings (4142 cycles), test 381 "
    "recordings (2756 cycles). In the official split the devices differ "
    "between the splits: its test recordings are AKGC417L (285), Litt3200 "
    "(55) and Meditron (41), while all LittC2SE recordings and only 5 "
    "Litt3200 ones are in train."
)
SYNTHETIC_TEXT = (
    "**Not ICBHI data**: the built-in synthetic ICBHI-format dataset of "
    "speechbrain-rsc (generated signals in the official file layout, no "
    "patient recordings; `data_folder: synthetic`). It exercises the "
    "recipe; the scores below say nothing about respiratory sounds."
)
DATASET_IDS = {"synthetic": "speechbrain-rsc-synthetic-icbhi"}


OFFICIAL_CYCLES = {"train": 4142, "test": 2756}


def _data_text(info):
    """The data section: ICBHI, and the cycles this run really used.

    Example
    -------
    >>> cycles = {"train": {"count": 40}, "test": {"count": 20}}
    >>> text = _data_text({"provenance": {"data": {"cycles": cycles}}})
    >>> "train 40, test 20" in text, "not the full official" in text
    (True, True)
    """
    data = (info.get("provenance") or {}).get("data") or {}
    cycles = data.get("cycles")
    base = SYNTHETIC_TEXT if data.get("dataset") == "synthetic" else DATA_TEXT
    if not cycles:
        return base
    counts = {split: c.get("count") for split, c in cycles.items()}
    listed = ", ".join(f"{split} {n}" for split, n in counts.items())
    text = f"{base}\n\nCycles prepared for this run: {listed}."
    train = (counts.get("train") or 0) + (counts.get("valid") or 0)
    if base is DATA_TEXT and (train, counts.get("test")) != tuple(
        OFFICIAL_CYCLES.values()
    ):
        text += (
            " **This is not the full official split** (train 4142, test 2756 "
            "cycles): the scores are not comparable to published ICBHI "
            "numbers."
        )
    return text


def _fmt(value):
    """A score with two decimals, ``n/a`` when missing or NaN.

    Example
    -------
    >>> _fmt(63.5), _fmt(None), _fmt(float("nan"))
    ('63.50', 'n/a', 'n/a')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.2f}"


def _seeds(seeds):
    return " ".join(str(s) for s in seeds) if seeds else "not recorded"


def _teachers(info):
    """One sentence on how the targets were made: the description a
    student's bank records (``targets``, from
    :meth:`speechbrain_rsc.distillation.Targets.describe`).
    """
    if info.get("role") != "student":
        return "Trained on the hard (one-hot) labels."
    targets = info.get("targets")
    if targets is None:
        return "How the targets were made is not recorded."
    mode, text = targets["mode"], targets["text"]
    if not targets["uses_teachers"]:
        return f"Distillation mode `{mode}`: targets were {text}."
    seeds = info.get("teacher_seeds") or []
    backbone = info.get("teacher_backbone") or "not recorded"
    return (
        f"Distilled with soft labels, mode `{mode}`: targets were {text}. "
        f"Teachers: k = {len(seeds)} {backbone} models, seeds "
        f"{_seeds(seeds)}. The hard labels were not used by the student."
    )


def _weights_text(info):
    """Where training started from (the bank's ``weights`` record).

    Example
    -------
    >>> _weights_text({"weights": None})
    'Started from random weights.'
    >>> _weights_text({"weights": {"source": "org/x", "revision": "abc",
    ...                            "sha256": "0123456789abcdef"}})
    'Started from the pretrained weights org/x (revision abc, sha256 \
0123456789ab...).'
    """
    if "weights" not in info:
        return "The weights training started from are not recorded."
    record = info["weights"]
    if record is None:
        return "Started from random weights."
    details = [
        f"revision {record['revision']}" if record.get("revision") else "",
        f"sha256 {record['sha256'][:12]}..." if record.get("sha256") else "",
    ]
    details = ", ".join(d for d in details if d)
    return (
        f"Started from the pretrained weights {record.get('source')}"
        + (f" ({details})" if details else "")
        + "."
    )


def _with_interval(metrics, key):
    """``63.50 [61.00, 66.00]`` when ``metrics`` holds the interval.

    Example
    -------
    >>> _with_interval({"sp": 80.0, "sp_lo": 75.0, "sp_hi": 85.0}, "sp")
    '80.00 [75.00, 85.00]'
    """
    text = _fmt(metrics.get(key))
    if metrics.get(f"{key}_lo") is None:
        return text
    low, high = metrics[f"{key}_lo"], metrics[f"{key}_hi"]
    return f"{text} [{_fmt(low)}, {_fmt(high)}]"


INTERVAL_TEXT = (
    "\n\nBrackets: 95 % interval from a bootstrap that resamples the test "
    "**patients** (all cycles of a drawn patient together): the test split "
    "holds a few dozen patients, so a difference of about one point "
    "between two models is often within noise. ECE: expected calibration "
    "error of the top-class probability (15 equal-width bins, %); Brier: "
    "multi-class Brier score (0 best, 2 worst). Predicting normal for every "
    "cycle scores Sp 100, Se 0, Score 50."
)


def _scores_table(metrics):
    splits = [s for s in ("test", "valid", "train") if s in (metrics or {})]
    if not splits:
        return "No scores were recorded with this model."
    calibrated = any("ece" in metrics[s] for s in splits)
    extra = " ECE | Brier |" if calibrated else ""
    rows = [f"| split | Sp | Se | Score |{extra}", "|---|---|---|---|"]
    rows[1] += "---|---|" if calibrated else ""
    for split in splits:
        m = metrics[split]
        cells = [_with_interval(m, key) for key in ("sp", "se", "score")]
        if calibrated:
            cells += [_fmt(m.get("ece")), _fmt(m.get("brier"))]
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    intervals = any("score_lo" in metrics[s] for s in splits)
    return "\n".join(rows) + (INTERVAL_TEXT if intervals else "")


def _per_device_table(per_device):
    """A markdown table of a DataFrame or a list of dicts, or ``""``."""
    if per_device is None:
        return ""
    table = pd.DataFrame(per_device)
    if table.empty:
        return ""
    return (
        "\n\nPer recording device (test split; see Data for how the devices "
        "are spread over the splits):\n\n" + markdown_table(table)
    )


def _member_lines(members):
    lines = []
    for member in members:
        info = member.get("info", {})
        seeds = info.get("teacher_seeds")
        extra = f", teacher seeds {_seeds(seeds)}" if seeds else ""
        lines.append(
            f"- `{member.get('name')}`: run `{member.get('run')}`, "
            f"{member.get('backbone')} {info.get('role', 'model')}, seed "
            f"{info.get('seed', 'not recorded')}{extra}"
        )
    return "\n".join(lines)


def model_card(info, per_device=None, source="<folder or org/name>"):
    """The markdown model card of a model from what it records.

    Arguments
    ---------
    info : dict
        ``backbone``, ``sample_rate``, ``duration``, ``pad``, ``role``
        (``teacher``, ``student`` or ``ensemble``), ``seed``, ``epoch``,
        ``parameters``, ``protocol``, ``metrics`` (split -> ``sp``, ``se``,
        ``score`` in %), ``select_on``, for a student ``targets``,
        ``teacher_backbone``, ``teacher_seeds``, for an ensemble
        ``members`` (list of ``name``, ``run``, ``backbone``, ``info``).
        Missing facts are written as not recorded.
    per_device : pandas.DataFrame or list of dict, optional
        Per-device test scores, e.g.
        ``speechbrain_rsc.ensemble.bank_breakdown(banks)["device"]``.
    source : str
        The folder or hub ID shown in the usage example.

    Returns
    -------
    str

    Example
    -------
    >>> card = model_card({"backbone": "bts", "protocol": "paper",
    ...     "select_on": "test"},
    ...     per_device=[{"device": "Meditron", "sp": 90.0, "score": 70.0}])
    >>> "| Meditron | 90.00 | 70.00 |" in card, "optimistic" in card
    (True, True)
    """
    role = info.get("role", "model")
    backbone = info.get("backbone", "unknown backbone")
    members = info.get("members") or []
    if role == "ensemble":
        title = f"{backbone}++[k={len(members)}] ensemble for ICBHI 2017"
        summary = (
            f"An ensemble of {len(members)} {backbone} models: their logits "
            "are averaged and the class is the argmax of the mean.\n\n"
            f"Members:\n\n{_member_lines(members)}"
        )
        training = _teachers(members[0].get("info", {})) if members else ""
    else:
        title = f"{backbone} {role} for ICBHI 2017"
        summary = (
            f"A {backbone} {role} classifying respiratory cycles into "
            "normal, crackle, wheeze and both, trained with the "
            "speechbrain-rsc recipe (SpeechBrain)."
        )
        facts = [
            f"{key} {info[key]}"
            for key in ("seed", "epoch")
            if info.get(key) is not None
        ]
        if isinstance(info.get("parameters"), int):
            facts.append(f"{info['parameters']:,} parameters")
        facts = ", ".join(facts)
        training = (
            f"{_teachers(info)}\n\nRun: {facts or 'not recorded'}.\n\n"
            f"{_weights_text(info)}"
        )
        if info.get("converged") is False:
            training += " **Training did not converge.**"
    protocol = info.get("protocol")
    if info.get("select_on") in SELECTION_TEXT:
        protocol_text = (
            f"Protocol: **{protocol}**. {SELECTION_TEXT[info['select_on']]}"
        )
    else:
        protocol_text = (
            f"Protocol: {protocol or 'not recorded'}. Which split selected "
            "the checkpoint is not one known protocol, so read the test "
            "scores with care."
        )
    data_info = members[0].get("info", {}) if members else info
    uses_prompts = "bts" in backbone.split("+")
    prompt_note = (
        "\n\nBTS reads the recording's metadata as a text prompt: chest "
        "location and device (from an ICBHI file name or given), age and "
        "sex. Missing metadata are reported with each result."
        if uses_prompts
        else ""
    )
    results = _scores_table(info.get("metrics"))
    results += _per_device_table(per_device)
    dataset = ((data_info.get("provenance") or {}).get("data") or {}).get(
        "dataset"
    )
    return TEMPLATE.substitute(
        dataset_id=DATASET_IDS.get(dataset, "icbhi-2017"),
        title=title,
        summary=summary,
        source=source,
        sample_rate=info.get("sample_rate", "the model's"),
        duration=info.get("duration", 8.0),
        pad_text=(
            "zero-padded"
            if info.get("pad") == "zero"
            else "cut or tiled (repeated)"
        ),
        prompt_note=prompt_note,
        data=f"{_data_text(data_info)}\n\n{protocol_text}",
        training=training,
        results=results,
        citation=PAPER_CITATION + (BTS_CITATION if uses_prompts else ""),
    )


def folder_facts(folder):
    """What a model folder records about itself, for :func:`model_card`.

    Reads ``ensemble.json`` if present, else ``model.json``.

    Raises
    ------
    FileNotFoundError
        Naming the folder, when it holds neither.
    """
    folder = Path(folder)
    if (folder / ENSEMBLE_FILE).is_file():
        return json.loads((folder / ENSEMBLE_FILE).read_text("utf-8"))
    config = read_config(folder)
    return {
        **config.get("info", {}),
        "backbone": config["name"],
        "sample_rate": config.get("sample_rate"),
    }


def _with_bank_intervals(folder, facts, bootstrap):
    """``facts`` with the test and valid intervals, ECE and Brier of the
    run's bank (``<run>/bank.safetensors`` beside a ``<run>/model``
    folder), when there is one and the metrics lack them.
    """
    metrics = facts.get("metrics") or {}
    bank_path = Path(folder).parent / BANK_FILENAME
    if any("score_lo" in m for m in metrics.values()):
        return facts
    if Path(folder).name != "model" or not bank_path.is_file():
        return facts
    bank = LogitBank.open(bank_path)
    for split in ("test", "valid"):
        if bank.ids.get(split) and bank.logits[split].isfinite().all():
            metrics[split] = evaluate_banks([bank], split, bootstrap)
    return {**facts, "metrics": metrics}


def write_model_card(
    folder, info=None, per_device=None, source=None, bootstrap=1000
):
    """Write the model card ``README.md`` of a model folder.

    Arguments
    ---------
    folder : str or Path
        A folder written by ``save_trained`` or ``export_ensemble``.
    info : dict, optional
        Facts that replace or add to what the folder records (e.g. the
        ``metrics`` of an evaluation made later).
    per_device : pandas.DataFrame or list of dict, optional
        Per-device test scores.
    source : str, optional
        The hub ID it will be published under, for the usage example.
    bootstrap : int
        Patient resamples of the 95 % intervals shown when the run's bank
        is beside the folder (``<run>/bank.safetensors``); 0: none.

    Returns
    -------
    Path
        The card.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_rsc.export import save_trained
    >>> from speechbrain_rsc.models.cnn6 import CNN6
    >>> model = CNN6(channels=[4, 8, 8, 8])
    >>> folder = tempfile.mkdtemp()
    >>> save_trained(model, folder, {"seed": 3})
    >>> card = write_model_card(folder, {"metrics": {"test": {"score": 61}}})
    >>> "| test | n/a | n/a | 61.00 |" in card.read_text()
    True
    """
    facts = {**folder_facts(folder), **(info or {})}
    if bootstrap:
        facts = _with_bank_intervals(folder, facts, bootstrap)
    text = model_card(facts, per_device, source or "<folder or org/name>")
    path = Path(folder) / CARD_FILE
    write_atomically(path, lambda p: Path(p).write_text(text, "utf-8"))
    return path
