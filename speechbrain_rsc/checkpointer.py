"""A SpeechBrain checkpointer that resumes past a half-written checkpoint.

A crash while saving (a full disk, a killed job) can leave the newest
``CKPT+...`` folder half-written: its ``CKPT.yaml`` empty or cut short, or
a recoverable's file such as ``model.ckpt`` truncated. SpeechBrain's
:class:`~speechbrain.utils.checkpoints.Checkpointer` then fails on every
resume. :class:`Checkpointer` skips such folders with a warning that names
them, and recovers from the next checkpoint in SpeechBrain's own order.

Example
-------
>>> import tempfile
>>> from speechbrain.utils.epoch_loop import EpochCounter
>>> counter = EpochCounter(5)
>>> ckpts = Checkpointer(tempfile.mkdtemp(), {"counter": counter})
>>> for epoch in (1, 2):
...     counter.current = epoch
...     newest = ckpts.save_checkpoint()
>>> _ = (newest.path / "counter.ckpt").write_text("")  # half-written
>>> ckpts.recover_if_possible().path != newest.path, counter.current
(True, 1)
"""

import logging

import yaml
from speechbrain.utils.checkpoints import METAFNAME, PARAMFILE_EXT, Checkpoint
from speechbrain.utils.checkpoints import Checkpointer as _SBCheckpointer

from speechbrain_rsc.atomic import write_failures_named
from speechbrain_rsc.errors import WriteError

logger = logging.getLogger(__name__)


def read_meta(ckpt_dir):
    """The meta of a checkpoint folder, checked to be usable for ranking.

    Arguments
    ---------
    ckpt_dir : pathlib.Path
        A ``CKPT+...`` folder.

    Returns
    -------
    dict
        The parsed ``CKPT.yaml``.

    Raises
    ------
    ValueError
        If the file is not a mapping with a numeric ``unixtime`` (an empty
        or truncated file: SpeechBrain writes ``unixtime`` last).
    OSError
        If the file cannot be read.
    """
    with open(ckpt_dir / METAFNAME, encoding="utf-8") as meta_file:
        try:
            meta = yaml.load(meta_file, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            raise ValueError(f"not valid YAML: {error}") from error
    if not isinstance(meta, dict):
        raise ValueError(f"holds {meta!r}, not a mapping")
    unixtime = meta.get("unixtime")
    if not isinstance(unixtime, (int, float)) or isinstance(unixtime, bool):
        raise ValueError(f"has no numeric 'unixtime' (got {unixtime!r})")
    return meta


class Checkpointer(_SBCheckpointer):
    """SpeechBrain's checkpointer, resuming from the newest readable one.

    Takes the same arguments as
    :class:`speechbrain.utils.checkpoints.Checkpointer`. Differences:

    * :meth:`list_checkpoints` (and so finding, saving and deleting)
      skips folders whose ``CKPT.yaml`` cannot be read, with a warning.
    * :meth:`recover_if_possible` tries the candidates in SpeechBrain's
      order; when one fails to load, it warns naming the folder and the
      error and tries the next one. Folders that failed are left alone
      (never loaded again nor deleted by this checkpointer).
    * If checkpoints exist but none loads, it raises: starting afresh over
      partly loaded recoverables would be a silent wrong result.
    * A checkpoint that cannot be written raises an ``OSError`` naming the
      folder and the space left (torch names neither on a full disk).
    """

    def __init__(self, checkpoints_dir, *args, **kwargs):
        try:
            super().__init__(checkpoints_dir, *args, **kwargs)
        except OSError as error:
            raise WriteError(
                f"cannot write in output_folder: the checkpoints folder "
                f"{checkpoints_dir} cannot be made ({error}); choose a folder "
                "you can write to with --output_folder"
            ) from error
        self._unloadable = set()
        self._warned = set()

    def _warn_once(self, path, message):
        if path not in self._warned:
            self._warned.add(path)
            logger.warning(message)

    def save_checkpoint(self, *args, **kwargs):
        """SpeechBrain's save; a failed write (a full disk, a read-only
        folder) is a ``WriteError`` naming the folder and the free space.
        """
        with write_failures_named(self.checkpoints_dir):
            return super().save_checkpoint(*args, **kwargs)

    def list_checkpoints(self):
        """All readable checkpoints in the checkpoints folder.

        Returns
        -------
        list
            :class:`~speechbrain.utils.checkpoints.Checkpoint` tuples; a
            folder whose meta cannot be read, or that failed to load in
            :meth:`recover_if_possible`, is left out.
        """
        checkpoints = []
        for ckpt_dir in self._list_checkpoint_dirs():
            if ckpt_dir in self._unloadable:
                continue
            try:
                meta = read_meta(ckpt_dir)
            except (OSError, ValueError) as error:
                self._warn_once(
                    ckpt_dir,
                    f"Skipping checkpoint {ckpt_dir}: its {METAFNAME} cannot "
                    f"be read ({error}), probably half-written by a crash. "
                    f"Delete {ckpt_dir} to silence this warning.",
                )
                continue
            paramfiles = {
                path.stem: path
                for path in ckpt_dir.iterdir()
                if path.suffix == PARAMFILE_EXT
            }
            checkpoints.append(Checkpoint(ckpt_dir, meta, paramfiles))
        return checkpoints

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Recover from the best checkpoint that loads, if there is one.

        Arguments are those of SpeechBrain's ``recover_if_possible``; they
        rank the candidates, which are tried best first.

        Arguments
        ---------
        importance_key : callable, optional
            Ranks checkpoints, highest first.
        max_key : str, optional
            Rank by this meta key, highest first.
        min_key : str, optional
            Rank by this meta key, lowest first.
        ckpt_predicate : callable, optional
            Only checkpoints for which it is true are candidates.

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded, or ``None`` when there is none.

        Raises
        ------
        RuntimeError
            If checkpoints exist but none of them loads.
        """
        candidates = self.find_checkpoints(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
        )
        if not candidates:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        broken = []
        for ckpt in candidates:
            try:
                self.load_checkpoint(ckpt)
            except Exception as error:
                self._unloadable.add(ckpt.path)
                broken.append(str(ckpt.path))
                logger.warning(
                    f"Cannot load checkpoint {ckpt.path} "
                    f"({type(error).__name__}: {error}), probably "
                    "half-written by a crash; trying the next one."
                )
                continue
            if broken:
                logger.warning(
                    f"Resuming from {ckpt.path} instead; delete "
                    f"{', '.join(broken)}."
                )
            return ckpt
        raise RuntimeError(
            f"No checkpoint in {self.checkpoints_dir} can be loaded (tried "
            f"{', '.join(broken)}), so this run cannot resume: delete these "
            "folders (or the whole output folder) to start it afresh."
        )
