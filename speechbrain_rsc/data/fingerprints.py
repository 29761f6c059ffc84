"""What identifies a preparation: content fingerprints, options and keys.

The options of a preparation (:func:`preparation_options`, stored as
``summary["options"]``) hold everything its files are made from: the
version, the audio and split options, ``END_TOLERANCE`` and the content
fingerprints of the recordings and of the split, demographics and
diagnosis files. :func:`prepare_key` hashes them into the name of its
``manifests_<key>`` folder; :func:`cache_key` hashes the part that changes
the cut audio (:func:`cache_options`) into the name of its ``cycles_<key>``
folder, shared by every preparation with the same audio options.

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

Example
-------
>>> cache_options({"version": 2, "sample_rate": 16000, "duration": 8.0,
...                "pad": "repeat", "fingerprints": {"recordings": "ab"}})
{'version': 2, 'sample_rate': 16000, 'duration': 8.0, 'pad': 'repeat', \
'recordings': 'ab'}
"""

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.data.cutting import END_TOLERANCE
from speechbrain_rsc.hashing import sha256_file

logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when the cutting or the fingerprints change
DIGESTS_FILE = ".recording_digests.json"
DIGESTS_FORMAT = 1
RACY_SECONDS = 2.0


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
    """The options that change the cut audio, from the preparation's."""
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
