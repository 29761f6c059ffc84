"""One process per run folder at a time.

Two ``train_teacher.py`` runs with the same seed and output folder would
both train, interleave their checkpoints and double the train log. The
first to start holds an exclusive ``flock`` on ``<folder>/.lock`` until it
exits (the kernel releases it even after a kill); the second is refused,
naming the process that holds it.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> lock_run_folder(folder)
>>> lock_run_folder(folder)  # the same process may lock again
"""

import fcntl
import os
import socket
from pathlib import Path

from speechbrain_rsc.errors import RecipeError, WriteError

LOCK_FILE = ".lock"
_held = {}  # resolved folder -> open lock file, kept until the process ends


class RunFolderBusy(RecipeError, RuntimeError):
    """Another process is running in the same output folder."""


def lock_run_folder(folder):
    """Hold ``folder``'s lock for the rest of this process.

    Arguments
    ---------
    folder : str or Path
        The run's output folder (created if needed).

    Raises
    ------
    RunFolderBusy
        Naming the process that holds the folder.
    OSError
        Naming the folder, if it cannot be written.
    """
    folder = Path(folder).resolve()
    if folder in _held:
        return
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise WriteError(
            f"cannot write in output_folder {folder} ({error}); choose a "
            "folder you can write to with --output_folder"
        ) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderBusy(
            f"{folder} is in use by {holder}: wait for that run to end, or "
            "give this one another --output_folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held[folder] = handle
