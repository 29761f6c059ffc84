"""Publishing into a shared save folder: lock, atomic rename, clear errors.

Preparations of one save folder are serialised by an advisory lock
(``fcntl.flock`` on ``.prepare.lock``, kept) where ``fcntl`` exists, so
two runs never cut the same cycles twice; the later run waits, then finds
the work done. A folder is published by writing it in a temporary folder
beside it and renaming that into place in one step, so a reader never
sees half of one; if another process published the same folder first
(possible only without the lock), its folder is kept and this one
discarded. Temporary files left by a killed run are removed by the next
run that holds the lock (:func:`remove_leftovers`).

A write refused under a folder (:func:`writing`) becomes an error naming
the folder and what to do: a ``PermissionError`` saying that it is not
writable, or an ``OSError`` (``errno.ENOSPC``) saying that the disk is
full and how much space is free.

Example
-------
>>> folder = getfixture("tmp_path")
>>> with lock(folder) as held:
...     publish(folder / "done", lambda tmp: (tmp / "a").touch(), False)
>>> sorted(p.name for p in folder.iterdir())
['.prepare.lock', 'done']
"""

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil

from speechbrain_rsc.atomic import write_text_atomically

try:
    import fcntl
except ImportError:  # Windows: the atomic publish alone keeps runs apart
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_FILE = ".prepare.lock"
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
