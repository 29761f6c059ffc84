"""Prepare ICBHI 2017 for SpeechBrain: cached cycles and CSV manifests.

``prepare_icbhi`` reads an ICBHI copy (official or Kaggle layout, see
:mod:`speechbrain_rsc.data.icbhi`), applies the train/test split, carves an
optional patient-disjoint validation split out of train, cuts every cycle
once as the de facto pipeline does (:mod:`speechbrain_rsc.data.cycles`) and
writes, in ``save_folder``:

- ``cycles_<hash>/<ID>.wav``: one float32 WAV per cycle of exactly
  ``duration * sample_rate`` samples, shared by every preparation with the
  same audio options; the hash covers those options (version, sample rate,
  duration, pad) and the content fingerprint of the recordings;
- ``manifests_<key>/``: one finished preparation, where ``key`` hashes
  everything its files are made from (``summary["options"]``: the version,
  the audio and split options, ``overrun``, ``END_TOLERANCE`` and the content
  fingerprints of the recordings and of the split, demographics and
  diagnosis files), and holding:

  - ``train.csv``, ``valid.csv``, ``test.csv``: one row per cycle
    (``MANIFEST_COLUMNS``), readable by ``DynamicItemDataset.from_csv``;
  - ``summary.json``: the ``key``, the ``options``, the input paths of
    the run that wrote it (``sources``), counts per split and class,
    renamed-stem matches, recordings missing from disk, and every skip
    with its reason, file and line;

- ``.prepare.lock``: the lock file of concurrent preparations (kept);
- ``.recording_digests.json``: the SHA-256 of every recording hashed, so
  that an unchanged database is not read again
  (:class:`~speechbrain_rsc.data.cache.DigestCache`).

No path or modification time enters a key, so a moved or copied data
folder is the same data, and other audio under the same names is other
data. Several data folders or option sets can therefore share one
``save_folder``: each gets its own ``manifests_<key>``, and callers must
use the paths ``prepare_icbhi`` returns.

:func:`prepare_icbhi` reads top-down through three modules:

1. the ICBHI format: find the layout and the recordings, read the split,
   demographics and diagnosis files, pair each recording with its split
   (:mod:`speechbrain_rsc.data.icbhi`);
2. the cache: fingerprint the inputs, derive the options and the keys,
   check whether the preparation is done already
   (:mod:`speechbrain_rsc.data.cache`);
3. choose the validation patients (:func:`choose_valid_patients`);
4. the cycles: cut what the cycle cache lacks
   (:mod:`speechbrain_rsc.data.cycles`);
5. assemble the manifest rows (:func:`assemble_manifests`, prompts from
   :mod:`speechbrain_rsc.data.prompts`) and the summary
   (:func:`make_summary`);
6. publish them into the cache (:func:`speechbrain_rsc.data.cache.publish`).

Reuse and concurrency
---------------------
A call whose ``manifests_<key>`` exists returns at once if every cycle its
manifests list exists in the current cache folder and each manifest still
has the SHA-256 its ``summary.json`` records; an edited manifest is
refused (:class:`~speechbrain_rsc.data.cache.ManifestError`), naming
it, until its folder is deleted. If not (the save folder
was moved or copied, so the manifests point to the old place, or cycles
were deleted), the reason is logged and the manifests are written again,
reusing the cycles found in the cache. A call with other options writes
another ``manifests_<key>``, reusing cycles cut with the same audio
options.

Preparations of one ``save_folder`` are serialised by an advisory lock
where ``fcntl`` exists, so two runs never cut the same cycles twice; the
later run waits, then finds the work done. A ``manifests_<key>`` folder is
published by one atomic rename, so a reader never sees half of one; if
another process published the same key first (possible only without the
lock), its folder is kept (:mod:`speechbrain_rsc.data.cache`).
Cycles are written to temporary files and renamed, and the cache counts as
complete only once ``cache_options.json`` is written after its last cycle.
Temporary files left by a killed run are removed by the next run that
holds the lock. The pool workers that cut the cycles die with the
preparing process on Linux, even if it is killed with SIGKILL
(:mod:`speechbrain_rsc.data.cycles`).

What is an error and what is a skip
-----------------------------------
Errors (:class:`~speechbrain_rsc.data.icbhi.ICBHIFormatError`, a
``ValueError``, naming the file and line) are for problems that make the
dataset untrustworthy as a whole: no or two recognised layouts; a missing
split file (always for the Kaggle layout unless ``split_file`` is given),
demographics file or diagnosis file; a malformed line in any of these; a
stem listed in both splits; a patient listed twice; the same stem stored
twice on disk; no cycle left at all.

The save folder gives errors too, naming the folder and what to do: a
``save_folder`` (or a parent of it) that is an existing file is a
``ValueError``; a folder that cannot be written is a ``PermissionError``
saying so; a full disk is an ``OSError`` (``errno.ENOSPC``) saying that
the disk is full and how much space is free. After either, no
``manifests_<key>`` is published and no temporary file is left; the
cycles cut so far are complete and reused by the next call.

Skips (logged as warnings, counted and listed in ``summary.json`` with
reason, file and line) are for problems of one recording or one cycle:

- recording: file name not an ICBHI stem or with an unknown location,
  mode or device code; ``.wav`` without ``.txt`` or the reverse; audio
  unreadable, not PCM WAV, not mono or truncated (shorter than its header
  declares); annotation file not text; on disk but absent from the split
  file;
- cycle: malformed annotation line (not four fields, a non-number, a flag
  other than 0/1); negative start; end before start; zero-length cycle
  (also: shorter than one sample at the target rate); start at or after
  the end of the audio; with ``overrun="skip"``, end beyond the audio by
  more than ``END_TOLERANCE`` seconds. An end beyond the audio by at most
  ``END_TOLERANCE`` (by any amount with ``overrun="clamp"``, as the
  reference code does) is clamped to it and listed under ``clamped``.

Recordings that the split file lists but that are absent from disk (the
shared sample holds 10 of 920) are not errors: one warning gives their
count, and ``summary.json`` lists them. A listed stem absent on disk that
differs from exactly one unlisted on-disk stem only in the device part is
matched to it; each match is logged and listed under ``renamed``.
Missing demographics (``NA``, patient 223, or a patient absent from the
file) leave ``age``, ``age_group``, ``sex`` empty and the prompt without
them; the cycles are kept.

Example
-------
>>> sorted(SPLITS)
['test', 'train', 'valid']
"""

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechbrain_rsc.data.cache import (
    CACHE_PREFIX,
    DIGESTS_FILE,
    LEFTOVERS,
    MANIFESTS_PREFIX,
    SPLITS,
    SUMMARY_FILE,
    DigestCache,
    cache_is_complete,
    cache_key,
    cache_options,
    check_unchanged,
    lock,
    manifest_paths,
    mark_cache_complete,
    not_done_because,
    preparation_options,
    prepare_key,
    publish,
    remove_leftovers,
    write_manifests,
    writing,
)
from speechbrain_rsc.data.cycles import OVERRUNS, PADS, cut_all
from speechbrain_rsc.data.icbhi import (
    ICBHIFormatError,
    discover_recordings,
    find_layout,
    plan_recordings,
    read_tables,
)
from speechbrain_rsc.data.prompts import PromptWriter
from speechbrain_rsc.data.schema import CLASS_NAMES, age_group

logger = logging.getLogger(__name__)


def prepare_icbhi(
    data_folder,
    save_folder,
    sample_rate=16000,
    duration=8.0,
    pad="repeat",
    valid_fraction=0.15,
    seed=1234,
    split_file=None,
    prompt_location="recording",
    prompt_metadata_file=None,
    overrun="skip",
):
    """Cut and cache the ICBHI cycles and write the split manifests.

    Arguments
    ---------
    data_folder : str or Path
        The ICBHI copy (official download or Kaggle archive).
    save_folder : str or Path
        Where the cycle caches and the ``manifests_<key>`` folders go; it
        may be shared by preparations of other data or options.
    sample_rate : int
        Rate of the cached cycles (16000 for CNNs/AST, 48000 for CLAP/BTS).
    duration : float
        Length in seconds every cycle is standardised to.
    pad : str
        ``"repeat"`` (the pipeline's default) or ``"zero"``.
    valid_fraction : float
        Fraction of the train patients moved to a patient-disjoint
        validation split (0 gives an empty ``valid.csv``).
    seed : int
        Seed of the validation draw.
    split_file : str or Path, optional
        A ``stem<TAB>train|test`` file replacing the official one; required
        for the Kaggle layout.
    prompt_location : str
        Where the BTS prompt's chest location comes from: ``"recording"``
        (its file name) or ``"patient"`` (the reference's one location per
        patient, from ``prompt_metadata_file``); see
        :class:`~speechbrain_rsc.data.prompts.PromptWriter`. Part of the key.
    prompt_metadata_file : str or Path, optional
        The reference's per-patient metadata (Patch-Mix's
        ``data/icbhi_dataset/metadata.txt``), for ``"patient"``; its hash
        is part of the key.
    overrun : str
        What becomes of a cycle whose end is beyond its recording's:
        ``"clamp"`` cuts it at the audio's end, as the reference code
        does; ``"skip"`` skips it if it overruns by more than
        ``END_TOLERANCE`` seconds and clamps it otherwise. Part of the key;
        ``summary.json``'s ``official_split`` says whether the counts are
        the official 4142 / 2756.

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` (CSV paths) and ``summary`` (JSON),
        all in ``save_folder/manifests_<key>``.

    Raises
    ------
    ICBHIFormatError
        See the module docstring.
    ValueError
        On an invalid option, or a ``save_folder`` that is a file.
    PermissionError
        If ``save_folder`` cannot be written.
    OSError
        With ``errno.ENOSPC`` if the disk is full.

    Example
    -------
    >>> from speechbrain_rsc.data.synthetic import make_synthetic_icbhi
    >>> tmp = getfixture("tmp_path")
    >>> root = make_synthetic_icbhi(tmp / "icbhi", recordings=2)
    >>> out = prepare_icbhi(root, tmp / "prepared", valid_fraction=0)
    >>> sorted(out)
    ['summary', 'test', 'train', 'valid']
    >>> Path(out["train"]).parent.name.startswith(MANIFESTS_PREFIX)
    True
    """
    save_folder = Path(save_folder).absolute()
    _check_options(sample_rate, duration, pad, valid_fraction, save_folder)
    if overrun not in OVERRUNS:
        raise ValueError(f"overrun must be one of {OVERRUNS}, not {overrun!r}")
    _check_save_folder(save_folder)
    write_prompt = PromptWriter(prompt_location, prompt_metadata_file)
    layout = find_layout(data_folder, split_file)
    files = discover_recordings(layout.audio_folder)
    digests = DigestCache(save_folder / DIGESTS_FILE)
    options = preparation_options(
        layout, files, sample_rate, duration, pad, valid_fraction, seed, digests
    )
    options["prompts"] = write_prompt.options()
    options["overrun"] = overrun
    try:
        return _prepare_or_reuse(
            layout, files, options, save_folder, write_prompt
        )
    finally:
        digests.save()


def _prepare_or_reuse(layout, files, options, save_folder, write_prompt):
    """The outputs of a finished preparation of ``options``, prepared now
    if there is none.
    """
    cache = save_folder / f"{CACHE_PREFIX}{cache_key(options)}"
    target = save_folder / f"{MANIFESTS_PREFIX}{prepare_key(options)}"
    if not_done_because(target, cache, options) is None:
        logger.info(
            "ICBHI already prepared in %s with these options; skipping", target
        )
        return _unchanged(target)
    tables = read_tables(layout)  # malformed: an error before any write
    with lock(save_folder) as locked:
        why = not_done_because(target, cache, options)
        if why is None:  # another run finished it while this one waited
            logger.info("ICBHI prepared in %s by another run; using it", target)
            return _unchanged(target)
        stale = target.exists()
        if stale:
            logger.warning("Preparing %s again: %s", target, why)
        if locked:
            with writing(save_folder):
                remove_leftovers(save_folder, LEFTOVERS)
        _prepare(
            layout, files, tables, options, cache, target, stale, write_prompt
        )
    return manifest_paths(target)


def _unchanged(target):
    """The paths of a finished preparation, each manifest checked against
    the SHA-256 its summary records.
    """
    outputs = manifest_paths(target)
    for split in SPLITS:
        check_unchanged(outputs[split])
    return outputs


def _prepare(
    layout, files, tables, options, cache, target, stale, write_prompt
):
    """Plan, cut what is missing from ``cache``, publish ``target``.

    Runs under the lock; a ``stale`` target is replaced.
    """
    logger.info(
        "Preparing ICBHI from %s (%s layout) into %s",
        layout.audio_folder,
        layout.name,
        target,
    )
    plan = plan_recordings(tables.split, files, layout)
    valid_patients = choose_valid_patients(
        plan.jobs, options["valid_fraction"], options["seed"]
    )
    results = _cut(plan.jobs, cache, target, options)
    by_split = assemble_manifests(
        plan.jobs, results, tables, valid_patients, write_prompt
    )
    left_out = LeftOut.gather(plan, results)
    if not any(by_split.values()):
        raise ICBHIFormatError(
            f"{layout.audio_folder}: no usable cycle "
            f"({len(left_out.skips)} skips, "
            f"{len(left_out.missing)} listed recordings missing)"
        )
    with writing(cache):
        mark_cache_complete(cache, cache_options(options))
    summary = make_summary(
        options, layout, cache, by_split, left_out, valid_patients, tables
    )
    with writing(target.parent):
        publish(
            target, lambda tmp: write_manifests(tmp, by_split, summary), stale
        )
    logger.info(
        "ICBHI prepared: %s cycles (train/valid/test), %d skipped; see %s",
        "/".join(str(len(by_split[s])) for s in SPLITS),
        len(left_out.skips),
        target / SUMMARY_FILE,
    )


def _cut(jobs, cache, target, options):
    """Cut the cycles of ``jobs`` that ``cache`` lacks; the cut results."""
    sample_rate = options["sample_rate"]
    length = int(round(options["duration"] * sample_rate))
    with writing(cache):
        cache.mkdir(exist_ok=True)
        _note_others(target.parent, cache, target)
        return cut_all(
            jobs,
            cache,
            sample_rate,
            length,
            options["pad"],
            options["overrun"],
            parallel=not cache_is_complete(cache),
        )


def choose_valid_patients(jobs, fraction, seed):
    """Draw the train patients that form the validation split.

    ``round(fraction * n)`` of the ``n`` train patients (at least one when
    ``fraction > 0``, and never all of them) are drawn with ``seed``,
    preferably among patients with no test recording. The same inputs
    always give the same patients.

    Returns
    -------
    set of int

    Example
    -------
    >>> from speechbrain_rsc.data.icbhi import Job
    >>> from speechbrain_rsc.data.schema import parse_stem
    >>> jobs = [
    ...     Job(parse_stem(f"{p}_1b1_Al_sc_Meditron"), "train", None, None)
    ...     for p in range(101, 111)
    ... ]
    >>> len(choose_valid_patients(jobs, 0.2, seed=1))
    2
    >>> choose_valid_patients(jobs, 0.0, seed=1)
    set()
    """
    train = sorted({j.stem.patient for j in jobs if j.split == "train"})
    test = {j.stem.patient for j in jobs if j.split == "test"}
    if fraction == 0:
        return set()
    count = min(max(1, round(fraction * len(train))), len(train) - 1)
    if count <= 0:
        logger.warning(
            "valid_fraction %s: only %d train patient(s), the validation "
            "split is empty",
            fraction,
            len(train),
        )
        return set()
    pool = [p for p in train if p not in test]
    if len(pool) < count:
        pool = train
    rng = np.random.default_rng(seed)
    return {int(p) for p in rng.choice(pool, size=count, replace=False)}


@dataclass(frozen=True)
class LeftOut:
    """Everything the manifests leave out, as ``summary.json`` lists it.

    ``renamed`` and ``missing`` are those of the
    :class:`~speechbrain_rsc.data.icbhi.Plan`; ``skips`` are the
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
        (:func:`~speechbrain_rsc.data.cache.preparation_options`).
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


def _check_options(sample_rate, duration, pad, valid_fraction, save_folder):
    """Raise ``ValueError`` on an option that cannot work."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int: {sample_rate}")
    if not duration * sample_rate >= 1:
        raise ValueError(f"duration must be positive: {duration}")
    if pad not in PADS:
        raise ValueError(f"pad must be one of {PADS}, not {pad!r}")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1): {valid_fraction}")
    if "$" in str(save_folder):
        # DynamicItemDataset.from_csv would read "$x" as a variable.
        raise ValueError(f"save_folder may not contain '$': {save_folder}")


def _check_save_folder(save_folder):
    """Raise ``ValueError`` if ``save_folder`` or a parent is a file."""
    for folder in (save_folder, *save_folder.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            where = "is" if folder == save_folder else f"is inside {folder},"
            raise ValueError(
                f"save_folder {save_folder} {where} an existing file, not a "
                "folder; move that file away or choose another save_folder"
            )
        return


def _note_others(save_folder, cache, target):
    """Log the other preparations and cycle caches in ``save_folder``."""
    others = sorted(
        p.name
        for pattern in (f"{CACHE_PREFIX}*", f"{MANIFESTS_PREFIX}*")
        for p in save_folder.glob(pattern)
        if p.is_dir() and p not in (cache, target)
    )
    if others:
        logger.info(
            "%s also holds preparations and cycle caches of other data or "
            "options (%s); delete those no longer needed",
            save_folder,
            ", ".join(others),
        )
