"""Prepare ICBHI 2017 for SpeechBrain: cached cycles and CSV manifests.

``prepare_icbhi`` reads an ICBHI copy (official or Kaggle layout, see
:mod:`speechbrain_rsc.data.icbhi`), applies the train/test split, carves an
optional patient-disjoint validation split out of train, cuts every cycle
once as the de facto pipeline does (:mod:`speechbrain_rsc.data.cycles`) and
writes, in ``save_folder``:

- ``cycles_<hash>/<ID>.wav``: one float32 WAV per cycle of exactly
  ``duration * sample_rate`` samples; the hash covers every option that
  changes the audio and a fingerprint (names, sizes, mtimes) of the input
  audio and annotation files;
- ``train.csv``, ``valid.csv``, ``test.csv``: one row per cycle
  (``MANIFEST_COLUMNS``), readable by ``DynamicItemDataset.from_csv``;
- ``summary.json``: counts per split and class, the options, renamed-stem
  matches, recordings missing from disk, and every skip with its reason,
  file and line;
- ``prepare_options.json``: the options of the finished run, written last.

A second call with the same options (and unchanged input files) returns at
once; a call with other options redoes what they change, reusing cycles
already cut with the same audio options. Cycles, manifests and the summary
are written to temporary files and renamed, and the cache folder counts as
complete only once ``cache_options.json`` is written after its last cycle,
so a crash never leaves a half-written file under a final name.

What is an error and what is a skip
-----------------------------------
Errors (:class:`~speechbrain_rsc.data.icbhi.ICBHIFormatError`, a
``ValueError``, naming the file and line) are for problems that make the
dataset untrustworthy as a whole: no or two recognised layouts; a missing
split file (always for the Kaggle layout unless ``split_file`` is given),
demographics file or diagnosis file; a malformed line in any of these; a
stem listed in both splits; a patient listed twice; the same stem stored
twice on disk; no cycle left at all.

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
  the end of the audio; end beyond the audio by more than
  ``END_TOLERANCE`` seconds. An end beyond the audio by at most
  ``END_TOLERANCE`` is clamped, as the pipeline does, and listed under
  ``clamped``.

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

import csv
import functools
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.data.cycles import (
    PADS,
    RecordingError,
    cut,
    fade,
    fade_length,
    inspect_recording,
    read_recording,
    resample,
    standardise,
    write_cycle,
)
from speechbrain_rsc.data.icbhi import (
    ICBHIFormatError,
    Skip,
    discover_recordings,
    find_layout,
    match_renamed,
    read_annotations,
    read_demographics,
    read_diagnoses,
    read_split,
)
from speechbrain_rsc.data.prompts import bts_prompt
from speechbrain_rsc.data.schema import CLASS_NAMES, age_group, parse_stem

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
CACHE_VERSION = 1  # bump when the cutting changes
END_TOLERANCE = 0.05  # seconds an annotation may overrun the audio
OPTIONS_FILE = "prepare_options.json"
SUMMARY_FILE = "summary.json"
CACHE_DONE_FILE = "cache_options.json"
MAX_WORKERS = 2  # about 1.5-2x faster than serial on 2 CPUs
POOL_MIN_RECORDINGS = 100  # below this a pool costs more than it saves


@dataclass(frozen=True)
class Job:
    """One recording to cut: its parsed stem, split and files."""

    stem: object  # schema.Stem
    split: str
    wav: Path
    txt: Path


def prepare_icbhi(
    data_folder,
    save_folder,
    sample_rate=16000,
    duration=8.0,
    pad="repeat",
    valid_fraction=0.15,
    seed=1234,
    split_file=None,
    skip_prep=False,
):
    """Cut and cache the ICBHI cycles and write the split manifests.

    Arguments
    ---------
    data_folder : str or Path
        The ICBHI copy (official download or Kaggle archive).
    save_folder : str or Path
        Where the manifests, the summary and the cycle cache go.
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
    skip_prep : bool
        If True, only return the paths.

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` (CSV paths) and ``summary`` (JSON).

    Raises
    ------
    ICBHIFormatError
        See the module docstring.
    ValueError
        On an invalid option.

    Example
    -------
    >>> from speechbrain_rsc.data.synthetic import make_synthetic_icbhi
    >>> tmp = getfixture("tmp_path")
    >>> root = make_synthetic_icbhi(tmp / "icbhi", recordings=2)
    >>> out = prepare_icbhi(root, tmp / "prepared", valid_fraction=0)
    >>> sorted(out)
    ['summary', 'test', 'train', 'valid']
    """
    save_folder = Path(save_folder).absolute()
    outputs = {split: str(save_folder / f"{split}.csv") for split in SPLITS}
    outputs["summary"] = str(save_folder / SUMMARY_FILE)
    if skip_prep:
        return outputs
    _check_options(sample_rate, duration, pad, valid_fraction, save_folder)
    layout = find_layout(data_folder, split_file)
    files = discover_recordings(layout.audio_folder)
    options = _options(
        layout, files, sample_rate, duration, pad, valid_fraction, seed
    )
    cache = save_folder / f"cycles_{_cache_key(options)}"
    if _already_done(save_folder, cache, options):
        logger.info(
            "ICBHI already prepared in %s with these options; skipping",
            save_folder,
        )
        return outputs
    logger.info(
        "Preparing ICBHI from %s (%s layout)", layout.audio_folder, layout.name
    )
    save_folder.mkdir(parents=True, exist_ok=True)
    # Until the new options file is written last, the run is unfinished.
    (save_folder / OPTIONS_FILE).unlink(missing_ok=True)
    cache.mkdir(exist_ok=True)
    _note_other_caches(save_folder, cache)

    split = read_split(layout.split_file)
    patients = read_demographics(layout.demographics_file)
    diagnoses = read_diagnoses(layout.diagnosis_file)
    jobs, skips, renamed, missing = plan_recordings(split, files, layout)
    valid_patients = choose_valid_patients(jobs, valid_fraction, seed)
    length = int(round(duration * sample_rate))
    results = cut_all(jobs, cache, sample_rate, length, pad)

    by_split = {name: [] for name in SPLITS}
    clamped = []
    for job, result in zip(jobs, results):
        for skip in result["skips"]:
            logger.warning("Skipped %s", skip)
        skips.extend(result["skips"])
        clamped.extend(result["clamped"])
        meta = _metadata(job, patients, diagnoses, valid_patients)
        by_split[meta.pop("_split")].extend(
            {**meta, **row} for row in result["rows"]
        )
    if not any(by_split.values()):
        raise ICBHIFormatError(
            f"{layout.audio_folder}: no usable cycle ({len(skips)} skips, "
            f"{len(missing)} listed recordings missing)"
        )
    _write_json(cache / CACHE_DONE_FILE, _cache_options(options))
    for name in SPLITS:
        _write_manifest(outputs[name], by_split[name])
    left_out = {
        "renamed": renamed,
        "missing": missing,
        "skips": skips,
        "clamped": clamped,
    }
    summary = _summary(
        options, cache, by_split, left_out, valid_patients, patients, diagnoses
    )
    _write_json(outputs["summary"], summary)
    _write_json(save_folder / OPTIONS_FILE, options)
    logger.info(
        "ICBHI prepared: %s cycles (train/valid/test), %d skipped; see %s",
        "/".join(str(len(by_split[s])) for s in SPLITS),
        len(skips),
        outputs["summary"],
    )
    return outputs


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


def _hash(data):
    return hashlib.sha1(data).hexdigest()


def _file_hash(path):
    return _hash(Path(path).read_bytes())


def _recordings_fingerprint(files, audio_folder):
    """Hash of the names, sizes and mtimes of every .wav and .txt."""
    entries = []
    for stem_files in files.values():
        for path in (stem_files.wav, stem_files.txt):
            if path is not None:
                stat = path.stat()
                rel = str(path.relative_to(audio_folder))
                entries.append(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return _hash("\n".join(entries).encode())


def _options(layout, files, sample_rate, duration, pad, valid_fraction, seed):
    """Everything the outputs depend on, as a JSON-ready dict."""
    return {
        "version": CACHE_VERSION,
        "layout": layout.name,
        "audio_folder": str(layout.audio_folder),
        "split_file": str(layout.split_file),
        "demographics_file": str(layout.demographics_file),
        "diagnosis_file": str(layout.diagnosis_file),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
        "pad": pad,
        "valid_fraction": float(valid_fraction),
        "seed": int(seed),
        "end_tolerance": END_TOLERANCE,
        "fingerprints": {
            "recordings": _recordings_fingerprint(files, layout.audio_folder),
            "split_file": _file_hash(layout.split_file),
            "demographics_file": _file_hash(layout.demographics_file),
            "diagnosis_file": _file_hash(layout.diagnosis_file),
        },
    }


def _cache_options(options):
    """The options that change the cached audio."""
    keys = ("version", "audio_folder", "sample_rate", "duration", "pad")
    cache = {key: options[key] for key in keys}
    cache["recordings"] = options["fingerprints"]["recordings"]
    return cache


def _cache_key(options):
    text = json.dumps(_cache_options(options), sort_keys=True)
    return _hash(text.encode())[:12]


def _already_done(save_folder, cache, options):
    """True if a finished run with exactly these options is on disk."""
    needed = [save_folder / f"{split}.csv" for split in SPLITS]
    needed += [save_folder / SUMMARY_FILE, cache / CACHE_DONE_FILE]
    if not all(path.is_file() for path in needed):
        return False
    try:
        stored = json.loads((save_folder / OPTIONS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stored == json.loads(json.dumps(options))


def _note_other_caches(save_folder, cache):
    others = sorted(
        p.name
        for p in save_folder.glob("cycles_*")
        if p.is_dir() and p != cache
    )
    if others:
        logger.info(
            "%s also holds cycle caches for other options (%s); delete "
            "them if they are no longer needed",
            save_folder,
            ", ".join(others),
        )


def plan_recordings(split, files, layout):
    """Pair each on-disk recording with its split; list what is left out.

    Arguments
    ---------
    split : dict
        Stem -> ``"train"`` / ``"test"`` (:func:`read_split`).
    files : dict
        Stem -> RecordingFiles (:func:`discover_recordings`).
    layout : Layout
        For messages.

    Returns
    -------
    jobs : list of Job
        Recordings to cut, sorted by stem.
    skips : list of Skip
        Recordings left out, with the reason.
    renamed : list of dict
        ``{"split_file_stem", "disk_stem"}`` for every device-renamed match.
    missing : list of str
        Stems listed in the split file and absent from disk.
    """
    matches, missing = match_renamed(split, files)
    listed_as = {stem: stem for stem in split if stem in files}
    listed_as.update({disk: listed for listed, disk in matches.items()})
    for listed, disk in matches.items():
        logger.warning(
            "%s lists %s, absent on disk; using %s (differs only in the "
            "device)",
            layout.split_file,
            listed,
            disk,
        )
    if missing:
        logger.warning(
            "%s lists %d recordings absent from %s (e.g. %s); they are left "
            "out (all listed in summary.json)",
            layout.split_file,
            len(missing),
            layout.audio_folder,
            missing[0],
        )
    jobs, skips = [], []
    for stem, found in files.items():
        where = str(found.wav or found.txt)
        try:
            parsed = parse_stem(stem)
        except ValueError as error:
            skips.append(Skip("bad file name", where, None, str(error)))
            continue
        if stem not in listed_as:
            skips.append(
                Skip("not in split file", where, None, str(layout.split_file))
            )
        elif found.wav is None:
            skips.append(Skip("missing wav", where))
        elif found.txt is None:
            skips.append(Skip("missing annotation file", where))
        else:
            jobs.append(
                Job(parsed, split[listed_as[stem]], found.wav, found.txt)
            )
    for skip in skips:
        logger.warning("Skipped recording %s", skip)
    renamed = [
        {"split_file_stem": listed, "disk_stem": disk}
        for listed, disk in matches.items()
    ]
    return jobs, skips, renamed, missing


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


def _check_bounds(cycle, audio_seconds, sample_rate, txt):
    """Return ``(skip, clamped)`` for a cycle against the audio length."""
    where = (str(txt), cycle.line)
    if cycle.end > audio_seconds + END_TOLERANCE:
        detail = f"end {cycle.end} s, audio {audio_seconds:.4f} s"
        return Skip("end beyond the audio", *where, detail), False
    if cycle.start >= audio_seconds:
        detail = f"start {cycle.start} s, audio {audio_seconds:.4f} s"
        return Skip("start beyond the audio", *where, detail), False
    if int(cycle.end * sample_rate) <= int(cycle.start * sample_rate):
        detail = f"shorter than one sample at {sample_rate} Hz"
        return Skip("zero-length cycle", *where, detail), False
    return None, cycle.end > audio_seconds


def cut_recording(job, cache, sample_rate, length, pad):
    """Cut, standardise and cache every valid cycle of one recording.

    The recording is decoded, resampled and faded only if one of its
    cycles is not cached yet. Nothing is logged here (this may run in a
    worker process): the caller logs the returned skips.

    Arguments
    ---------
    job : Job
        The recording.
    cache : Path
        The cycle cache folder.
    sample_rate : int
        Target rate.
    length : int
        Samples per standardised cycle.
    pad : str
        ``"repeat"`` or ``"zero"``.

    Returns
    -------
    dict
        ``rows`` (manifest fields of each kept cycle), ``skips`` and
        ``clamped`` (cycles whose end was clamped to the audio).
    """
    result = {"rows": [], "skips": [], "clamped": []}
    try:
        info = inspect_recording(job.wav)
        cycles, line_skips = read_annotations(job.txt)
        if not cycles and not line_skips:
            raise ICBHIFormatError(f"{job.txt}: no cycle annotated")
    except (RecordingError, ICBHIFormatError) as error:
        result["skips"].append(
            Skip("unusable recording", str(job.wav), None, str(error))
        )
        return result
    result["skips"].extend(line_skips)
    audio_seconds = info.frames / info.samplerate
    kept = []
    for cycle in cycles:
        skip, clamped = _check_bounds(
            cycle, audio_seconds, sample_rate, job.txt
        )
        if skip is not None:
            result["skips"].append(skip)
            continue
        if clamped:
            result["clamped"].append(
                {
                    "file": str(job.txt),
                    "line": cycle.line,
                    "end": cycle.end,
                    "audio_end": audio_seconds,
                }
            )
        kept.append(cycle)
    paths = [cache / f"{job.stem.name}_{c.index}.wav" for c in kept]
    todo = [(c, p) for c, p in zip(kept, paths) if not p.is_file()]
    try:
        _write_cycles(job.wav, todo, sample_rate, length, pad)
    except RecordingError as error:
        result["skips"].append(
            Skip("unusable recording", str(job.wav), None, str(error))
        )
        return result
    for cycle, path in zip(kept, paths):
        result["rows"].append(
            {
                "ID": path.stem,
                "duration": length / sample_rate,
                "wav": str(path),
                "label": cycle.label,
                "crackle": cycle.crackle,
                "wheeze": cycle.wheeze,
                "start": cycle.start,
                "end": cycle.end,
                "source_sample_rate": info.samplerate,
            }
        )
    return result


def _write_cycles(wav, todo, sample_rate, length, pad):
    """Decode, resample and fade ``wav`` once; write each (cycle, path)."""
    if not todo:
        return
    try:
        signal, rate = read_recording(wav)
    except RecordingError:
        raise
    except Exception as error:  # a decoder error past the header checks
        raise RecordingError(f"{wav}: cannot decode ({error})") from error
    signal = resample(signal, rate, sample_rate)
    signal = fade(signal, fade_length(sample_rate))
    for cycle, path in todo:
        segment = cut(signal, cycle.start, cycle.end, sample_rate)
        if len(segment) == 0:  # _check_bounds rules this out
            raise RecordingError(f"{wav}: empty cut for line {cycle.line}")
        out = standardise(segment, length, pad, fade_length(sample_rate))
        write_cycle(path, out, sample_rate)


def cut_all(jobs, cache, sample_rate, length, pad):
    """Run :func:`cut_recording` on every job, in parallel when it pays.

    A pool of up to ``MAX_WORKERS`` processes (never more than the CPUs)
    is used for ``POOL_MIN_RECORDINGS`` recordings or more when the cache
    is not complete yet; results keep the order of ``jobs``.

    Returns
    -------
    list of dict
    """
    work = functools.partial(
        cut_recording,
        cache=cache,
        sample_rate=sample_rate,
        length=length,
        pad=pad,
    )
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    complete = (cache / CACHE_DONE_FILE).is_file()
    if workers < 2 or len(jobs) < POOL_MIN_RECORDINGS or complete:
        return [work(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    # fork, as DataLoader workers: no re-import of torch in every worker.
    context = multiprocessing.get_context(
        "fork" if "fork" in methods else "spawn"
    )
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=torch.set_num_threads,
        initargs=(1,),
    ) as pool:
        return list(pool.map(work, jobs, chunksize=8))


def _metadata(job, patients, diagnoses, valid_patients):
    """Per-recording manifest fields, and the split (``_split``)."""
    stem = job.stem
    patient = patients.get(stem.patient)
    age = None if patient is None else patient.age
    sex = "" if patient is None else patient.sex
    group = age_group(age)
    split = job.split
    if split == "train" and stem.patient in valid_patients:
        split = "valid"
    return {
        "_split": split,
        "patient": stem.patient,
        "recording": stem.name,
        "location": stem.location,
        "mode": stem.mode,
        "device": stem.device,
        "age": "" if age is None else f"{age:g}",
        "age_group": group,
        "sex": sex,
        "diagnosis": diagnoses.get(stem.patient, ""),
        "prompt": bts_prompt(stem.location, group, sex, stem.device),
    }


def _write_manifest(path, rows):
    def write(file):
        writer = csv.DictWriter(
            file, fieldnames=MANIFEST_COLUMNS, lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)

    write_text_atomically(path, write)


def _write_json(path, data):
    write_text_atomically(
        path, lambda file: file.write(json.dumps(data, indent=2) + "\n")
    )


def _summary(
    options, cache, by_split, left_out, valid_patients, patients, diagnoses
):
    """Counts, options and every left-out item, for summary.json."""
    used = sorted({r["patient"] for rows in by_split.values() for r in rows})
    no_demo = [p for p in used if p not in patients]
    no_diag = [p for p in used if p not in diagnoses]
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
    skips = left_out["skips"]
    return {
        "options": options,
        "cache_folder": str(cache),
        "splits": per_split,
        "valid_patients": sorted(valid_patients),
        "renamed": left_out["renamed"],
        "missing_from_disk": {
            "count": len(left_out["missing"]),
            "stems": left_out["missing"],
        },
        "skips": {
            "count": len(skips),
            "by_reason": dict(sorted(Counter(s.reason for s in skips).items())),
            "items": [s.as_dict() for s in skips],
        },
        "clamped": left_out["clamped"],
        "patients_without_demographics": no_demo,
        "patients_without_diagnosis": no_diag,
    }
