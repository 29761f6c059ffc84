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
``.txt``, its name relative to the audio folder, its size, the whole
``.txt`` and the first and last 64 KiB of the ``.wav``; the other files
are hashed whole. No path or modification time enters a key, so a moved or
copied data folder is the same data, and other audio under the same names
is other data.

Example
-------
>>> cache_options({"version": 2, "sample_rate": 16000, "duration": 8.0,
...                "pad": "repeat", "fingerprints": {"recordings": "ab"}})
{'version': 2, 'sample_rate': 16000, 'duration': 8.0, 'pad': 'repeat', \
'recordings': 'ab'}
"""

import hashlib
import json

from speechbrain_rsc.data.cutting import END_TOLERANCE
from speechbrain_rsc.hashing import sha256_file

CACHE_VERSION = 2  # bump when the cutting or the fingerprints change
FINGERPRINT_BYTES = 64 * 1024  # hashed at each end of every .wav


def preparation_options(
    layout, files, sample_rate, duration, pad, valid_fraction, seed
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
            "recordings": recordings_fingerprint(files, layout.audio_folder),
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


def recordings_fingerprint(files, audio_folder):
    """SHA-256 of the names, sizes and content samples of every file.

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


def _hash_json(data, length):
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
