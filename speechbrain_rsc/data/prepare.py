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
  the audio and split options, ``END_TOLERANCE`` and the content
  fingerprints of the recordings and of the split, demographics and
  diagnosis files), and holding:

  - ``train.csv``, ``valid.csv``, ``test.csv``: one row per cycle
    (``MANIFEST_COLUMNS``), readable by ``DynamicItemDataset.from_csv``;
  - ``summary.json``: the ``key``, the ``options``, the input paths of
    the run that wrote it (``sources``), counts per split and class,
    renamed-stem matches, recordings missing from disk, and every skip
    with its reason, file and line;

- ``.prepare.lock``: the lock file of concurrent preparations (kept).

The content fingerprint of the recordings covers, for every ``.wav`` and
``.txt``, its name relative to the audio folder, its size, the whole
``.txt`` and the first and last 64 KiB of the ``.wav``; the other files
are hashed whole. No path or modification time enters a key, so a moved or
copied data folder is the same data, and other audio under the same names
is other data. Several data folders or option sets can therefore share one
``save_folder``: each gets its own ``manifests_<key>``, and callers must use
the paths ``prepare_icbhi`` returns.

Reuse and concurrency
---------------------
A call whose ``manifests_<key>`` exists returns at once if every cycle its
manifests list exists in the current cache folder. If not (the save folder
was moved or copied, so the manifests point to the old place, or cycles
were deleted), the reason is logged and the manifests are written again,
reusing the cycles found in the cache. A call with other options writes
another ``manifests_<key>``, reusing cycles cut with the same audio
options.

Preparations of one ``save_folder`` are serialised by an advisory lock
(``fcntl.flock`` on ``.prepare.lock``) where ``fcntl`` exists, so two runs
never cut the same cycles twice; the later run waits, then finds the work
done. A ``manifests_<key>`` folder is written in a temporary folder beside
it and renamed into place in one step, so a reader never sees half of one;
if another process published the same key first (possible only without the
lock), its folder is kept and this one discarded. Cycles are written to
temporary files and renamed, and the cache counts as complete only once
``cache_options.json`` is written after its last cycle. Temporary files
left by a killed run are removed by the next run that holds the lock. The
pool workers that cut the cycles die with the preparing process on Linux,
even if it is killed with SIGKILL.

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

import contextlib
import csv
import ctypes
import errno
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
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

try:
    import fcntl
except ImportError:  # Windows: the atomic publish alone keeps runs apart
    fcntl = None

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
CACHE_VERSION = 2  # bump when the cutting or the fingerprints change
END_TOLERANCE = 0.05  # seconds an annotation may overrun the audio
SUMMARY_FILE = "summary.json"
CACHE_DONE_FILE = "cache_options.json"
MANIFESTS_PREFIX = "manifests_"
LOCK_FILE = ".prepare.lock"
FINGERPRINT_BYTES = 64 * 1024  # hashed at each end of every .wav
MAX_WORKERS = 2  # about 1.5-2x faster than serial on 2 CPUs
POOL_MIN_RECORDINGS = 100  # below this a pool costs more than it saves
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
    _check_save_folder(save_folder)
    layout = find_layout(data_folder, split_file)
    files = discover_recordings(layout.audio_folder)
    options = _options(
        layout, files, sample_rate, duration, pad, valid_fraction, seed
    )
    key = prepare_key(options)
    cache = save_folder / f"cycles_{_cache_key(options)}"
    target = save_folder / f"{MANIFESTS_PREFIX}{key}"
    outputs = _outputs(target)
    if _not_done_because(target, cache, options, key) is None:
        logger.info(
            "ICBHI already prepared in %s with these options; skipping", target
        )
        return outputs
    # Malformed metadata is an error before anything is written.
    tables = (
        read_split(layout.split_file),
        read_demographics(layout.demographics_file),
        read_diagnoses(layout.diagnosis_file),
    )
    with contextlib.ExitStack() as stack:
        with _writing(save_folder):
            save_folder.mkdir(parents=True, exist_ok=True)
            locked = stack.enter_context(_lock(save_folder))
        why = _not_done_because(target, cache, options, key)
        if why is None:  # another run finished it while this one waited
            logger.info("ICBHI prepared in %s by another run; using it", target)
            return outputs
        stale = target.exists()
        if stale:
            logger.warning("Preparing %s again: %s", target, why)
        if locked:
            with _writing(save_folder):
                _remove_leftovers(save_folder)
        _prepare(layout, files, tables, options, cache, target, stale)
    return outputs


def _prepare(layout, files, tables, options, cache, target, stale):
    """Cut what is missing from ``cache``; publish ``target``.

    ``tables`` holds the read split, demographics and diagnosis files.
    """
    logger.info(
        "Preparing ICBHI from %s (%s layout) into %s",
        layout.audio_folder,
        layout.name,
        target,
    )
    split, patients, diagnoses = tables
    jobs, skips, renamed, missing = plan_recordings(split, files, layout)
    valid_patients = choose_valid_patients(
        jobs, options["valid_fraction"], options["seed"]
    )
    sample_rate = options["sample_rate"]
    length = int(round(options["duration"] * sample_rate))
    with _writing(cache):
        cache.mkdir(exist_ok=True)
        _note_others(target.parent, cache, target)
        results = cut_all(jobs, cache, sample_rate, length, options["pad"])

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
    with _writing(cache):
        _write_json(cache / CACHE_DONE_FILE, _cache_options(options))
    left_out = {
        "renamed": renamed,
        "missing": missing,
        "skips": skips,
        "clamped": clamped,
    }
    summary = _summary(
        options,
        prepare_key(options),
        layout,
        cache,
        by_split,
        left_out,
        (valid_patients, patients, diagnoses),
    )
    with _writing(target.parent):
        _publish(target, by_split, summary, stale)
    logger.info(
        "ICBHI prepared: %s cycles (train/valid/test), %d skipped; see %s",
        "/".join(str(len(by_split[s])) for s in SPLITS),
        len(skips),
        target / SUMMARY_FILE,
    )


def _outputs(target):
    outputs = {split: str(target / f"{split}.csv") for split in SPLITS}
    outputs["summary"] = str(target / SUMMARY_FILE)
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


def _content_sample(path, size):
    """The bytes of ``path`` the fingerprint covers (see the module doc)."""
    try:
        with open(path, "rb") as file:
            if path.suffix.lower() != ".wav" or size <= 2 * FINGERPRINT_BYTES:
                return file.read()
            head = file.read(FINGERPRINT_BYTES)
            file.seek(size - FINGERPRINT_BYTES)
            return head + file.read(FINGERPRINT_BYTES)
    except OSError as error:
        # Such a recording is skipped later, with the reason, by
        # inspect_recording; the fingerprint only has to be stable.
        return f"unreadable: {error.strerror}".encode()


def _recordings_fingerprint(files, audio_folder):
    """SHA-256 of the names, sizes and content samples of every file.

    Example
    -------
    >>> from speechbrain_rsc.data.icbhi import discover_recordings
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "101_1b1_Al_sc_Meditron.txt").write_text("0 1 0 0")
    >>> first = _recordings_fingerprint(discover_recordings(folder), folder)
    >>> _ = (folder / "101_1b1_Al_sc_Meditron.txt").write_text("0 1 1 0")
    >>> first == _recordings_fingerprint(discover_recordings(folder), folder)
    False
    """
    digest = hashlib.sha256()
    for stem_files in files.values():
        for path in (stem_files.wav, stem_files.txt):
            if path is None:
                continue
            size = path.stat().st_size
            sample = _content_sample(path, size)
            rel = path.relative_to(audio_folder).as_posix()
            digest.update(f"{rel}\t{size}\t{len(sample)}\n".encode())
            digest.update(sample)
    return digest.hexdigest()


def _file_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _options(layout, files, sample_rate, duration, pad, valid_fraction, seed):
    """Everything the outputs depend on, as a JSON-ready dict (no path)."""
    return {
        "version": CACHE_VERSION,
        "layout": layout.name,
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


def _hash_json(data, length):
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def prepare_key(options):
    """The key of the ``manifests_<key>`` folder of a preparation.

    Arguments
    ---------
    options : dict
        ``summary["options"]`` of the preparation.

    Returns
    -------
    str
        16 hex digits.

    Example
    -------
    >>> len(prepare_key({"seed": 1}))
    16
    """
    return _hash_json(options, 16)


def _cache_options(options):
    """The options that change the cached audio."""
    keys = ("version", "sample_rate", "duration", "pad")
    cache = {key: options[key] for key in keys}
    cache["recordings"] = options["fingerprints"]["recordings"]
    return cache


def _cache_key(options):
    return _hash_json(_cache_options(options), 12)


def _not_done_because(target, cache, options, key):
    """``None`` if ``target`` is a finished preparation usable as it is.

    Otherwise a sentence saying why not.
    """
    if not target.is_dir():
        return "not prepared yet"
    try:
        summary = json.loads((target / SUMMARY_FILE).read_text("utf-8"))
        stored = (summary.get("key"), summary.get("options"))
        if stored != (key, json.loads(json.dumps(options))):
            return f"{target / SUMMARY_FILE} is of other options"
        if not (cache / CACHE_DONE_FILE).is_file():
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


@contextlib.contextmanager
def _lock(save_folder):
    """Hold the advisory lock of ``save_folder``; yield whether it is held.

    Without ``fcntl``, or on a file system that refuses ``flock``, nothing
    is locked: the atomic publish alone keeps concurrent runs correct (they
    may then cut the same cycles twice).
    """
    if fcntl is None:
        yield False
        return
    fd = os.open(save_folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info(
                "Waiting for another preparation in %s to finish", save_folder
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            logger.warning(
                "Cannot lock %s (%s); preparing without the lock",
                save_folder / LOCK_FILE,
                error.strerror,
            )
            yield False
            return
        try:
            yield True
        finally:
            # Unlock explicitly: a process forked meanwhile shares the fd,
            # and closing ours alone would leave the lock held.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_leftovers(save_folder):
    """Remove the temporary files of killed runs (call under the lock)."""
    leftovers = list(save_folder.glob(f".{MANIFESTS_PREFIX}*.tmp"))
    leftovers += save_folder.glob("cycles_*/*.tmp")
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if leftovers:
        logger.info(
            "Removed %d temporary files left in %s by an interrupted run",
            len(leftovers),
            save_folder,
        )


@contextlib.contextmanager
def _writing(folder):
    """Turn a refused write or a full disk into an error naming ``folder``."""
    try:
        yield
    except OSError as error:
        explained = _explain_write_error(error, folder)
        if explained is None:
            raise
        raise explained from error


def _explain_write_error(error, folder):
    """A clearer ``OSError`` for a write refused under ``folder``, or None.

    Example
    -------
    >>> error = OSError(errno.ENOSPC, "No space left on device")
    >>> str(_explain_write_error(error, Path("/")))  # doctest: +ELLIPSIS
    '[Errno 28] the disk is full: cannot write to /: ... free on its disk...
    """
    what = error.strerror or str(error)
    if error.filename:
        what = f"{what}: {error.filename}"
    if error.errno in NOT_WRITABLE:
        return PermissionError(
            error.errno,
            f"{folder} is not writable ({what}); fix its permissions or "
            "choose another save_folder",
        )
    if error.errno in DISK_FULL:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        return OSError(
            errno.ENOSPC,
            f"the disk is full: cannot write to {folder}: {_size(free)} free "
            f"on its disk ({what}); free some space or choose a save_folder "
            "on another disk. No manifest was published; the cycles cut so "
            "far are complete and will be reused",
        )
    return None


def _size(n_bytes):
    """Readable byte count.

    Example
    -------
    >>> _size(512), _size(3 * 2**20), _size(5 * 2**30)
    ('512 B', '3.0 MiB', '5.0 GiB')
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


def _publish(target, by_split, summary, stale):
    """Write the manifests and the summary beside ``target``; rename.

    A ``stale`` target (checked under the lock) is replaced; a target that
    another process published meanwhile is kept and this one discarded.
    """
    tmp = target.with_name(f".{target.name}.{_token()}.tmp")
    tmp.mkdir()
    try:
        for name in SPLITS:
            _write_manifest(tmp / f"{name}.csv", by_split[name])
        _write_json(tmp / SUMMARY_FILE, summary)
        if stale:
            _discard(target)
        try:
            os.rename(tmp, target)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            logger.info(
                "%s was published by another run first; keeping it", target
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder):
    """Remove a folder: renamed away first, so it vanishes in one step."""
    aside = folder.with_name(f".{folder.name}.{_token()}.old.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.rename(folder, aside)
        shutil.rmtree(aside)


def _token():
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _note_others(save_folder, cache, target):
    others = sorted(
        p.name
        for pattern in ("cycles_*", f"{MANIFESTS_PREFIX}*")
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
    old = [s for s in SPLITS if (save_folder / f"{s}.csv").exists()]
    if old:
        logger.warning(
            "%s holds %s from an older version of prepare_icbhi; they are "
            "not updated any more (the manifests are now in %s): delete them",
            save_folder,
            ", ".join(f"{s}.csv" for s in old),
            target.name,
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

    A pool of up to ``MAX_WORKERS`` forked processes (never more than the
    CPUs) is used for ``POOL_MIN_RECORDINGS`` recordings or more when the
    cache is not complete yet; results keep the order of ``jobs``. On
    Linux the workers die with this process (:func:`_init_worker`).

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
        initializer=_init_worker,
        initargs=(os.getpid(),),
    ) as pool:
        try:
            return list(pool.map(work, jobs, chunksize=8))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_worker(parent_pid):
    """Set up a pool worker: one torch thread, and death with the parent.

    On Linux the worker asks for SIGKILL when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so that killing the preparation does not
    leave workers running under PID 1, and exits at once if the parent died
    before that request. The signal comes when the forking thread ends,
    which is the one blocked in :func:`cut_all` for the pool's life.

    Arguments
    ---------
    parent_pid : int
        The pid of the process that made the pool.
    """
    torch.set_num_threads(1)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed (%s): worker %d would outlive "
            "a killed preparation",
            os.strerror(ctypes.get_errno()),
            os.getpid(),
        )
    if os.getppid() != parent_pid:
        os._exit(1)


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
    """Write a manifest CSV (into the temporary folder of a publish)."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(
            file, fieldnames=MANIFEST_COLUMNS, lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path, data):
    write_text_atomically(
        path, lambda file: file.write(json.dumps(data, indent=2) + "\n")
    )


def _summary(options, key, layout, cache, by_split, left_out, tables):
    """Counts, options and every left-out item, for summary.json.

    ``tables`` is ``(valid_patients, patients, diagnoses)``.
    """
    valid_patients, patients, diagnoses = tables
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
        "key": key,
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
