"""Writing files so that a crash never leaves half a file under its name.

Example
-------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "a.txt"
>>> write_atomically(path, lambda tmp: Path(tmp).write_text("done"))
>>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
('done', ['a.txt'])
"""

import os
import tempfile
from pathlib import Path


def write_atomically(path, write):
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename.

    The temporary file is removed if ``write`` fails, and the folder of
    ``path`` is created if needed.

    Arguments
    ---------
    path : str or Path
        The final file.
    write : callable
        Writes the whole content to the path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomically(path, write):
    """As :func:`write_atomically`, giving ``write`` an open text file."""

    def to_file(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            write(file)

    write_atomically(path, to_file)
