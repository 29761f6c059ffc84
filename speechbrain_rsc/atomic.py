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
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from speechbrain_rsc.errors import WriteError


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
        with write_failures_named(path):
            write(tmp)
            with_umask_mode(tmp)  # after: some writers replace the file
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def with_umask_mode(path):
    """Give a file made by ``mkstemp`` (mode 0600) or a folder made by
    ``mkdtemp`` (0700) the mode an ordinary ``open`` or ``mkdir`` gives:
    0666 or 0777 less the umask (0644 / 0755 under umask 022), so that
    colleagues on a shared filesystem can read what a run wrote.

    Example
    -------
    >>> import stat, tempfile
    >>> old = os.umask(0o022)
    >>> folder = tempfile.mkdtemp()
    >>> with_umask_mode(folder)
    >>> _ = os.umask(old)
    >>> oct(stat.S_IMODE(os.stat(folder).st_mode))
    '0o755'
    """
    mask = os.umask(0)
    os.umask(mask)
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~mask)


def write_text_atomically(path, write):
    """As :func:`write_atomically`, giving ``write`` an open text file."""

    def to_file(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            write(file)

    write_atomically(path, to_file)


FULL_DISK_MIB = 64  # less free space than this: the disk is full


@contextmanager
def write_failures_named(path):
    """Re-raise a failed write of ``path`` as a :class:`WriteError` that
    names the file, the cause and the space left on its filesystem (a full
    disk shows in torch as ``basic_ios::clear: iostream error``, which
    names neither). An ``OSError`` always is one; a ``RuntimeError`` only
    when the disk is full, else it is a bug and keeps its traceback.

    Example
    -------
    >>> import tempfile
    >>> try:
    ...     with write_failures_named(tempfile.mkdtemp()):
    ...         raise OSError("Read-only file system")
    ... except WriteError as error:
    ...     print(str(error))  # doctest: +ELLIPSIS
    could not write /...: Read-only file system (... MiB free on ...)
    """
    try:
        yield
    except (OSError, RuntimeError) as error:
        path = Path(path)
        where = next((p for p in (path, *path.parents) if p.exists()), path)
        try:
            free_mib = shutil.disk_usage(where).free / 2**20
        except OSError:
            free_mib = None
        full = free_mib is not None and free_mib < FULL_DISK_MIB
        if isinstance(error, RuntimeError) and not full:
            raise
        space = (
            ""
            if free_mib is None
            else f" ({free_mib:.0f} MiB free on the filesystem of {where})"
        )
        hint = (
            f"; the disk holding {where} is full: free space and rerun (the "
            "run resumes from its last complete checkpoint)"
            if full
            else ""
        )
        raise WriteError(
            f"could not write {path}: {error}{space}{hint}"
        ) from error
