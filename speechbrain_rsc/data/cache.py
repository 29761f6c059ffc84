"""The cache of prepared data: keys, digests, lock, publishing, manifests.

A save folder holds, for every preparation, in the order they are made:

- ``cycles_<key>/``: the cycle cache, one WAV per cycle
  (:func:`~speechbrain_rsc.data.cycles.cut_all`), shared by every
  preparation with the same audio options; it counts as complete only
  once ``cache_options.json`` is written after its last cycle
  (:func:`mark_cache_complete`);
- ``manifests_<key>/``: one finished preparation, holding ``train.csv``,
  ``valid.csv``, ``test.csv`` (one row per cycle, ``MANIFEST_COLUMNS``,
  readable by ``DynamicItemDataset.from_csv``) and ``summary.json``
  (the ``key``, the ``options``, the input paths of the run that wrote it,
  counts, every left-out item and the SHA-256 of each manifest,
  ``manifest_sha256``);
- ``.recording_digests.json``: the recordings' digests (:class:`DigestCache`);
- ``.prepare.lock``: the lock of concurrent preparations (kept).

Keys
----
The options of a preparation (:func:`preparation_options`, stored as
``summary["options"]``) hold everything its files are made from: the
version, the audio and split options, ``END_TOLERANCE`` and the content
fingerprints of the recordings and of the split, demographics and
diagnosis files. :func:`prepare_key` hashes them into the name of its
``manifests_<key>`` folder; :func:`cache_key` hashes the part that changes
the cut audio (:func:`cache_options`) into the name of its ``cycles_<key>``
folder.

The content fingerprint of the recordings covers, for every ``.wav`` and
``.txt``, its name relative to the audio folder, its size and the SHA-256
of its whole content; the other files are hashed whole. No path or
modification time enters a key, so a moved or copied data folder is the
same data, and other audio under the same names is other data.

Hashing 1.7 GB of recordings takes seconds, so a :class:`DigestCache`
keeps each file's SHA-256 in ``save_folder/.recording_digests.json``,
keyed by its absolute path, size, modification and change times (ns) and
inode: a file written since (even to the same size, with its modification
time set back) has a new change time and is hashed again. A file changed
less than :data:`RACY_SECONDS` before it was hashed is not remembered, as
a write within the same clock tick would leave its times unchanged.

Lock and publishing
-------------------
Preparations of one save folder are serialised by an advisory lock
(``fcntl.flock`` on ``.prepare.lock``) where ``fcntl`` exists, so two
runs never cut the same cycles twice; the later run waits, then finds the
work done. A folder is published by writing it in a temporary folder
beside it and renaming that into place in one step, so a reader never
sees half of one; if another process published the same folder first
(possible only without the lock), its folder is kept and this one
discarded. Temporary files left by a killed run are removed by the next
run that holds the lock (:func:`remove_leftovers`).

A write refused under a folder (:func:`writing`) becomes an error naming
the folder and what to do: a ``PermissionError`` saying that it is not
writable, or an ``OSError`` (``errno.ENOSPC``) saying that the disk is
full and how much space is free.

Reuse
-----
:func:`not_done_because` says whether a ``manifests_<key>`` folder can be
used as it is; :func:`check_unchanged` refuses a manifest edited after it
was written.

Example
-------
>>> folder = getfixture("tmp_path")
>>> with lock(folder) as held:
...     publish(folder / "done", lambda tmp: (tmp / "a").touch(), False)
>>> sorted(p.name for p in folder.iterdir())
['.prepare.lock', 'done']
>>> sorted(manifest_paths(Path("manifests_0")))
['summary', 'test', 'train', 'valid']
"""

import contextlib
import csv
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.data.cycles import END_TOLERANCE
from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.hashing import sha256_file

try:
    import fcntl
except ImportError:  # Windows: the atomic publish alone keeps runs apart
    fcntl = None

logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when the cutting or the fingerprints change
CACHE_PREFIX = "cycles_"
CACHE_DONE_FILE = "cache_options.json"
MANIFESTS_PREFIX = "manifests_"
SUMMARY_FILE = "summary.json"
DIGESTS = "manifest_sha256"  # summary key: manifest file name -> SHA-256
DIGESTS_FILE = ".recording_digests.json"
DIGESTS_FORMAT = 1
RACY_SECONDS = 2.0
LOCK_FILE = ".prepare.lock"
# What a killed run may leave in a save folder (see publish, write_cycle).
LEFTOVERS = (
    f".{MANIFESTS_PREFIX}*.tmp",
    f"{CACHE_PREFIX}*/*.tmp",
    f".{DIGESTS_FILE}.*.tmp",
)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
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


def preparation_options(
    layout,
    files,
    sample_rate,
    duration,
    pad,
    valid_fraction,
    seed,
    digests=None,
):
    """Everything the outputs depend on, as a JSON-ready dict (no path).

    Arguments
    ---------
    layout : Layout
        The ICBHI copy (:func:`~speechbrain_rsc.data.icbhi.find_layout`).
    files : dict
        Stem -> RecordingFiles of its audio folder.
    sample_rate, duration, pad, valid_fraction, seed
        As for :func:`~speechbrain_rsc.data.prepare.prepare_icbhi`.
    digests : DigestCache, optional
        Known digests of the recordings (default: hash every file).

    Returns
    -------
    dict
        ``summary["options"]``.
    """
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
            "recordings": recordings_fingerprint(
                files, layout.audio_folder, digests
            ),
            "split_file": sha256_file(layout.split_file),
            "demographics_file": sha256_file(layout.demographics_file),
            "diagnosis_file": sha256_file(layout.diagnosis_file),
        },
    }


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


def cache_options(options):
    """The options that change the cut audio, from the preparation's.

    Example
    -------
    >>> cache_options({"version": 2, "sample_rate": 16000, "duration": 8.0,
    ...                "pad": "repeat", "fingerprints": {"recordings": "ab"}})
    {'version': 2, 'sample_rate': 16000, 'duration': 8.0, 'pad': 'repeat', \
'recordings': 'ab'}
    """
    keys = ("version", "sample_rate", "duration", "pad")
    cache = {key: options[key] for key in keys}
    cache["recordings"] = options["fingerprints"]["recordings"]
    return cache


def cache_key(options):
    """The key of the ``cycles_<key>`` folder, from the preparation's options.

    Example
    -------
    >>> options = {"version": 2, "sample_rate": 16000, "duration": 8.0,
    ...            "pad": "zero", "seed": 1, "fingerprints": {"recordings": ""}}
    >>> cache_key(options) == cache_key({**options, "seed": 2})
    True
    """
    return _hash_json(cache_options(options), 12)


def recordings_fingerprint(files, audio_folder, digests=None):
    """SHA-256 of the names, sizes and content digests of every file.

    Arguments
    ---------
    files : dict
        Stem -> RecordingFiles.
    audio_folder : Path
        The folder the names are relative to.
    digests : DigestCache, optional
        Where known digests are looked up and new ones kept.

    Example
    -------
    >>> from speechbrain_rsc.data.icbhi import discover_recordings
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "101_1b1_Al_sc_Meditron.txt").write_text("0 1 0 0")
    >>> first = recordings_fingerprint(discover_recordings(folder), folder)
    >>> _ = (folder / "101_1b1_Al_sc_Meditron.txt").write_text("0 1 1 0")
    >>> first == recordings_fingerprint(discover_recordings(folder), folder)
    False
    """
    digests = DigestCache() if digests is None else digests
    paths = [
        path
        for stem_files in files.values()
        for path in (stem_files.wav, stem_files.txt)
        if path is not None
    ]
    found = digests.sha256_all(paths)
    digest = hashlib.sha256()
    for path, (size, content) in zip(paths, found):
        rel = path.relative_to(audio_folder).as_posix()
        digest.update(f"{rel}\t{size}\t{content}\n".encode())
    return digest.hexdigest()


class DigestCache:
    """SHA-256 of whole files, remembered in a JSON file by the file's
    absolute path, size, modification and change times and inode (see the
    module doc).

    Arguments
    ---------
    path : Path, optional
        The JSON file (default: nothing is remembered across calls).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "a.txt").write_text("a")
    >>> cache = DigestCache(folder / DIGESTS_FILE)
    >>> cache.sha256_all([folder / "a.txt"])[0][1][:12]
    'ca978112ca1b'
    """

    def __init__(self, path=None):
        self.path = None if path is None else Path(path)
        self.known = self._load()
        self.fresh = {}

    def _load(self):
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if data.get("format") == DIGESTS_FORMAT:
                return {k: tuple(v) for k, v in data["files"].items()}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass
        # A digest file that cannot be read only costs a full hashing.
        logger.info("%s is unreadable; hashing every recording", self.path)
        return {}

    def sha256_all(self, paths):
        """``(size, sha256)`` of each file of ``paths``, in that order;
        files not known as they are now are hashed (in parallel).
        """
        results, todo = [None] * len(paths), []
        for i, path in enumerate(paths):
            key, stamp = _stamp(path)
            known = self.known.get(key)
            if stamp is not None and known is not None and known[:-1] == stamp:
                results[i] = (stamp[0], known[-1])
            else:
                todo.append(i)
        workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
        with ThreadPoolExecutor(workers) as pool:
            hashed = pool.map(self._hash, [paths[i] for i in todo])
            for i, result in zip(todo, hashed):
                results[i] = result
        return results

    def _hash(self, path):
        """``(size, sha256)`` of ``path``, hashed now, remembered if the
        file kept its stamp while it was read and was not changed just
        before.
        """
        started = time.time_ns()
        key, before = _stamp(path)
        try:
            with open(path, "rb") as file:
                content = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError as error:
            # Such a recording is skipped later, with the reason, by
            # inspect_recording; the fingerprint only has to be stable.
            return (None, f"unreadable: {error.strerror}")
        key, after = _stamp(path)
        if after is not None and after == before:
            newest = max(after[1], after[2])
            if started - newest > RACY_SECONDS * 1e9:
                self.fresh[key] = (*after, content)
        return (before[0] if before else None, content)

    def save(self):
        """Write the digests known now, if any is new: those of other
        files are kept. A digest file that cannot be written is only
        logged (the next call hashes again).
        """
        if self.path is None or not self.fresh:
            return
        files = {**self.known, **self.fresh}
        data = {"format": DIGESTS_FORMAT, "files": files}
        try:
            write_text_atomically(self.path, lambda file: json.dump(data, file))
        except OSError as error:
            logger.warning(
                "could not keep the recordings' digests in %s (%s); the "
                "next preparation hashes them again",
                self.path,
                error,
            )
            return
        self.known, self.fresh = files, {}


def _stamp(path):
    """The key and ``(size, mtime_ns, ctime_ns, inode)`` of ``path``;
    ``None`` as stamp if it cannot be read.
    """
    key = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return key, None
    return key, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_json(data, length):
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cache_is_complete(cache):
    """Whether every cycle of ``cache`` was written (its marker exists).

    Example
    -------
    >>> cache_is_complete(getfixture("tmp_path"))
    False
    """
    return (cache / CACHE_DONE_FILE).is_file()


def mark_cache_complete(cache, options):
    """Mark ``cache`` complete by writing its ``options`` beside the cycles."""
    write_json(cache / CACHE_DONE_FILE, options)


@contextlib.contextmanager
def lock(save_folder):
    """Make ``save_folder``, hold its advisory lock; yield whether it is held.

    Without ``fcntl``, or on a file system that refuses ``flock``, nothing
    is locked: the atomic publish alone keeps concurrent runs correct (they
    may then cut the same cycles twice).
    """
    with writing(save_folder):
        save_folder.mkdir(parents=True, exist_ok=True)
        fd = _acquire(save_folder)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            try:
                # Unlock explicitly: a process forked meanwhile shares the
                # fd, and closing ours alone would leave the lock held.
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _acquire(save_folder):
    """The fd holding the lock of ``save_folder``, or ``None`` if none."""
    if fcntl is None:
        return None
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
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_leftovers(save_folder, patterns):
    """Remove the temporary files of killed runs (call under the lock).

    Arguments
    ---------
    save_folder : Path
        The locked folder.
    patterns : tuple of str
        Glob patterns, relative to ``save_folder``, of the leftovers.
    """
    leftovers = [p for pattern in patterns for p in save_folder.glob(pattern)]
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


def publish(target, write, replace):
    """Fill a temporary folder beside ``target`` with ``write``; rename it.

    Arguments
    ---------
    target : Path
        The folder to publish.
    write : callable
        Writes the content into the temporary folder it is given.
    replace : bool
        Whether an existing ``target`` is stale (checked under the lock) and
        replaced. Otherwise a ``target`` that another process published
        meanwhile is kept and this one discarded.
    """
    tmp = target.with_name(f".{target.name}.{_token()}.tmp")
    tmp.mkdir()
    try:
        write(tmp)
        if replace:
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


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomically(
        path, lambda file: file.write(json.dumps(data, indent=2) + "\n")
    )


@contextlib.contextmanager
def writing(folder):
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
    >>> from pathlib import Path
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


def manifest_paths(target):
    """The paths of the manifests and summary in ``target``, by name."""
    outputs = {split: str(target / f"{split}.csv") for split in SPLITS}
    outputs["summary"] = str(target / SUMMARY_FILE)
    return outputs


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
    speechbrain_rsc.data.cache.ManifestError: .../test.csv was changed ...
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
            f"({error!r}), so it cannot be checked (unreadable or edited): "
            f"delete {path.parent} and prepare again (icbhi_prepare.py)"
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
