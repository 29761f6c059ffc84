"""File hashes, each file hashed once per version.

Pretrained weights (hundreds of MB) and teacher banks are hashed to record
what a run was made from; ``run_paper.py`` checks the same banks for every
student, so a hash is kept per (path, size, mtime, algorithm).
"""

import hashlib
from pathlib import Path

_HASHES = {}


def sha256_file(path):
    """The sha256 of a file, computed once per file version per process.

    Example
    -------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/empty"
    >>> _ = open(path, "wb").close()
    >>> sha256_file(path)[:16]
    'e3b0c44298fc1c14'
    """
    return file_hash(path, "sha256")


def file_hash(path, algorithm="sha256"):
    """The ``hashlib`` digest ``algorithm`` (``"sha256"``, ``"md5"`` ...)
    of a file, computed once per file version per process.

    Example
    -------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/empty"
    >>> _ = open(path, "wb").close()
    >>> file_hash(path, "md5")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _HASHES:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
