"""The manifests of a preparation: their rows, ``summary.json``, reuse.

A finished preparation is a folder ``manifests_<key>/`` holding:

- ``train.csv``, ``valid.csv``, ``test.csv``: one row per cycle
  (``MANIFEST_COLUMNS``), readable by ``DynamicItemDataset.from_csv``;
- ``summary.json``: the ``key``, the ``options``, the input paths of the
  run that wrote it (``sources``), counts per split and class,
  renamed-stem matches, recordings missing from disk, every skip with
  its reason, file and line, and the SHA-256 of each manifest
  (``manifest_sha256``).

:func:`not_done_because` says whether such a folder can be used as it is;
:func:`check_unchanged` refuses a manifest edited after it was written.

Example
-------
>>> sorted(manifest_paths(Path("manifests_0")))
['summary', 'test', 'train', 'valid']
"""

import csv
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from speechbrain_rsc.data.cutting import cache_is_complete
from speechbrain_rsc.data.fingerprints import prepare_key
from speechbrain_rsc.data.prompts import PromptWriter
from speechbrain_rsc.data.publishing import write_json
from speechbrain_rsc.data.schema import CLASS_NAMES, age_group
from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST_COLUMNS = (
    "ID",
    "duration",
    "wav",
    "label",
    "crackle",
    "wheeze",
    "patient",
    "recording",
    "start",
    "end",
    "location",
    "mode",
    "device",
    "source_sample_rate",
    "age",
    "age_group",
    "sex",
    "diagnosis",
    "prompt",
)
MANIFESTS_PREFIX = "manifests_"
SUMMARY_FILE = "summary.json"
DIGESTS = "manifest_sha256"  # summary key: manifest file name -> SHA-256


@dataclass(frozen=True)
class LeftOut:
    """Everything the manifests leave out, as ``summary.json`` lists it.

    ``renamed`` and ``missing`` are those of the
    :class:`~speechbrain_rsc.data.planning.Plan`; ``skips`` are the
    plan's, then those of each recording cut; ``clamped`` lists the cycles
    whose end was clamped to the audio.
    """

    renamed: list
    missing: list
    skips: list
    clamped: list

    @classmethod
    def gather(cls, plan, results):
        """Collect the left-out items of a plan and of its cut results."""
        skips = list(plan.skips)
        clamped = []
        for result in results:
            skips.extend(result.skips)
            clamped.extend(result.clamped)
        return cls(plan.renamed, plan.missing, skips, clamped)


def manifest_paths(target):
    """The paths of the manifests and summary in ``target``, by name."""
    outputs = {split: str(target / f"{split}.csv") for split in SPLITS}
    outputs["summary"] = str(target / SUMMARY_FILE)
    return outputs


def assemble_manifests(
    jobs, results, tables, valid_patients, write_prompt=None
):
    """The manifest rows of every split, in the order of ``jobs``.

    Arguments
    ---------
    jobs : list of Job
        The recordings cut.
    results : list of CutResult
        Their cycles, in the same order.
    tables : Tables
        The demographics and diagnoses.
    valid_patients : set of int
        The train patients moved to ``valid``.
    write_prompt : PromptWriter, optional
        Writes the BTS prompts (default: each recording's own location).

    Returns
    -------
    dict
        Split -> list of rows (dicts with ``MANIFEST_COLUMNS``).
    """
    write_prompt = write_prompt or PromptWriter()
    by_split = {name: [] for name in SPLITS}
    for job, result in zip(jobs, results):
        split, fields = recording_fields(
            job, tables, valid_patients, write_prompt
        )
        by_split[split].extend({**fields, **row} for row in result.rows)
    return by_split


def recording_fields(job, tables, valid_patients, write_prompt):
    """The split of one recording and the manifest fields it gives a cycle.

    Returns
    -------
    split : str
        ``"train"``, ``"valid"`` or ``"test"``.
    fields : dict
        Patient, recording, stem and demographic fields, and the prompt.
    """
    stem = job.stem
    patient = tables.patients.get(stem.patient)
    age = None if patient is None else patient.age
    sex = "" if patient is None else patient.sex
    group = age_group(age)
    split = job.split
    if split == "train" and stem.patient in valid_patients:
        split = "valid"
    return split, {
        "patient": stem.patient,
        "recording": stem.name,
        "location": stem.location,
        "mode": stem.mode,
        "device": stem.device,
        "age": "" if age is None else f"{age:g}",
        "age_group": group,
        "sex": sex,
        "diagnosis": tables.diagnoses.get(stem.patient, ""),
        "prompt": write_prompt(stem, group, sex),
    }


def make_summary(
    options, layout, cache, by_split, left_out, valid_patients, tables
):
    """Counts, options and every left-out item, for ``summary.json``.

    Arguments
    ---------
    options : dict
        The preparation's options
        (:func:`~speechbrain_rsc.data.fingerprints.preparation_options`).
    layout : Layout
        The ICBHI copy read.
    cache : Path
        The cycle cache folder.
    by_split : dict
        Split -> manifest rows.
    left_out : LeftOut
        What the manifests leave out.
    valid_patients : set of int
        The train patients moved to ``valid``.
    tables : Tables
        The demographics and diagnoses.

    Returns
    -------
    dict
    """
    used = sorted({r["patient"] for rows in by_split.values() for r in rows})
    no_demo = [p for p in used if p not in tables.patients]
    no_diag = [p for p in used if p not in tables.diagnoses]
    for what, ids in (("demographics", no_demo), ("diagnosis", no_diag)):
        if ids:
            logger.warning(
                "%d patient(s) have no %s line (e.g. %d); their fields are "
                "left empty",
                len(ids),
                what,
                ids[0],
            )
    per_split = {}
    all_rows = [row for rows in by_split.values() for row in rows]
    for split, rows in (*by_split.items(), ("total", all_rows)):
        recordings = {r["recording"]: r["source_sample_rate"] for r in rows}
        classes = Counter(int(r["label"]) for r in rows)
        per_split[split] = {
            "recordings": len(recordings),
            "patients": len({r["patient"] for r in rows}),
            "cycles": len(rows),
            "classes": {
                name: classes.get(i, 0) for i, name in enumerate(CLASS_NAMES)
            },
            "source_sample_rates": {
                str(rate): n
                for rate, n in sorted(Counter(recordings.values()).items())
            },
        }
    skips = left_out.skips
    return {
        "key": prepare_key(options),
        "options": options,
        "sources": {
            "audio_folder": str(layout.audio_folder),
            "split_file": str(layout.split_file),
            "demographics_file": str(layout.demographics_file),
            "diagnosis_file": str(layout.diagnosis_file),
        },
        "cache_folder": str(cache),
        "splits": per_split,
        "valid_patients": sorted(valid_patients),
        "renamed": left_out.renamed,
        "missing_from_disk": {
            "count": len(left_out.missing),
            "stems": left_out.missing,
        },
        "skips": {
            "count": len(skips),
            "by_reason": dict(sorted(Counter(s.reason for s in skips).items())),
            "items": [s.as_dict() for s in skips],
        },
        "clamped": left_out.clamped,
        "patients_without_demographics": no_demo,
        "patients_without_diagnosis": no_diag,
        "official_split": official_split_check(per_split),
    }


# Cycles of the official ICBHI 2017 split (the challenge paper and FACTS).
OFFICIAL_CYCLES = {"train": 4142, "test": 2756}


def official_split_check(per_split):
    """Whether the cycles prepared are those of the official split: train
    (with the validation split carved out of it) 4142, test 2756.

    Example
    -------
    >>> counts = {"train": {"cycles": 3500}, "valid": {"cycles": 642},
    ...           "test": {"cycles": 2756}}
    >>> official_split_check(counts)["matches"]
    True
    >>> official_split_check({"train": {"cycles": 6}, "valid": {"cycles": 0},
    ...                       "test": {"cycles": 91}})["found"]
    {'train': 6, 'test': 91}
    """
    found = {
        "train": per_split["train"]["cycles"] + per_split["valid"]["cycles"],
        "test": per_split["test"]["cycles"],
    }
    return {
        "expected": dict(OFFICIAL_CYCLES),
        "found": found,
        "matches": found == OFFICIAL_CYCLES,
    }


def write_manifests(folder, by_split, summary):
    """Write the manifests and ``summary.json`` into ``folder``; the
    summary records each manifest's SHA-256 (``manifest_sha256``) for
    :func:`check_unchanged`.
    """
    digests = {}
    for name in SPLITS:
        path = folder / f"{name}.csv"
        write_manifest(path, by_split[name])
        digests[path.name] = _sha256(path)
    write_json(folder / SUMMARY_FILE, {**summary, DIGESTS: digests})


class ManifestError(RecipeError, ValueError):
    """A manifest a run cannot use: edited since its preparation wrote
    it, or with a row whose label or cycle is unusable.
    """


def check_unchanged(csv_path):
    """Refuse a prepared manifest that differs from what its preparation
    wrote (by the SHA-256 its ``summary.json`` records).

    A manifest with no ``summary.json`` beside it was not written by
    :func:`~speechbrain_rsc.data.prepare.prepare_icbhi` and is not
    checked here.

    Raises
    ------
    ManifestError
        Naming the file, and saying to delete its folder and prepare again.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> write_manifests(folder, {s: [] for s in SPLITS}, {})
    >>> check_unchanged(folder / "test.csv")
    >>> _ = (folder / "test.csv").write_text("edited")
    >>> check_unchanged(folder / "test.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_rsc.data.manifests.ManifestError: .../test.csv was changed ...
    """
    path = Path(csv_path)
    summary_path = path.parent / SUMMARY_FILE
    if not summary_path.is_file():
        return
    try:
        summary = json.loads(summary_path.read_text("utf-8"))
        recorded = summary[DIGESTS][path.name]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(
            f"{summary_path} does not record the SHA-256 of {path.name} "
            f"({error!r}), so it cannot be checked (unreadable, or prepared "
            f"by an older version): delete {path.parent} and prepare again "
            "(icbhi_prepare.py)"
        ) from None
    found = _sha256(path)
    if found != recorded:
        raise ManifestError(
            f"{path} was changed after its preparation wrote it (SHA-256 "
            f"{found[:16]}..., {SUMMARY_FILE} records {str(recorded)[:16]}"
            "...): a hand-edited manifest would train and score on labels "
            f"or cycles its provenance does not show; delete {path.parent} "
            "and prepare again (icbhi_prepare.py), or prepare into a fresh "
            "save_folder"
        )


def _sha256(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_manifest(path, rows):
    """Write one manifest CSV (into the temporary folder of a publish)."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(
            file, fieldnames=MANIFEST_COLUMNS, lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)


def not_done_because(target, cache, options):
    """``None`` if ``target`` is a finished preparation usable as it is.

    Otherwise a sentence saying why not: it is absent, of other options,
    unreadable, its cycle cache is incomplete, or its manifests list cycles
    that are not in ``cache``.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> not_done_because(tmp / "manifests_0", tmp / "cycles_0", {})
    'not prepared yet'
    """
    if not target.is_dir():
        return "not prepared yet"
    try:
        summary = json.loads((target / SUMMARY_FILE).read_text("utf-8"))
        stored = (summary.get("key"), summary.get("options"))
        if stored != (prepare_key(options), json.loads(json.dumps(options))):
            return f"{target / SUMMARY_FILE} is of other options"
        if DIGESTS not in summary:
            return f"{target / SUMMARY_FILE} records no manifest checksums"
        if not cache_is_complete(cache):
            return f"the cycle cache {cache} is incomplete"
        for split in SPLITS:
            problem = _manifest_problem(target / f"{split}.csv", cache)
            if problem:
                return problem
    except (OSError, ValueError) as error:
        return f"{target} is incomplete or unreadable ({error})"
    return None


def _manifest_problem(path, cache):
    """Why the cycles ``path`` lists are not all in ``cache``, or ``None``."""
    checked = set()
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            return f"{path} does not have the manifest columns"
        for row in reader:
            if not row["wav"]:
                return (
                    f"{path} has a row without a wav (line {reader.line_num})"
                )
            wav = Path(row["wav"])
            if wav.parent not in checked:
                if not (
                    wav.parent.is_dir() and os.path.samefile(wav.parent, cache)
                ):
                    return (
                        f"{path} lists cycles in {wav.parent}, not in the "
                        f"cycle cache {cache} (the save folder was moved or "
                        "copied?)"
                    )
                checked.add(wav.parent)
            if not wav.is_file():
                return f"{path} lists {wav}, which does not exist"
    return None
