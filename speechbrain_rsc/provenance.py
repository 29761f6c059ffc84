"""What a run was made from, recorded beside it and checked on every start.

Every run folder holds ``provenance.json``, written before training starts:

- ``data``: the prepared data, as :func:`data_identity` gives it (the
  preparation key, the audio and split options, content fingerprints of the
  recordings and the split, demographics and diagnosis files, and the
  fingerprint and count of every split's cycle IDs);
- ``teachers`` (students only): every teacher bank used, with its run
  folder name, seed and the SHA-256 of the file (:func:`teacher_identity`;
  not its path, so that a moved results tree is the same teachers);
- ``run``: what defines the run itself (:func:`run_identity`): the seed,
  the model and its weights' source, the training options (epochs,
  learning rate, batch, ...), the teacher selection.

A run started again in a folder whose ``provenance.json`` differs, or in a
folder that holds checkpoints or a bank but no ``provenance.json``, is
refused by :func:`check_run` with the list of what differs; nothing in the
folder is touched. ``run_paper.py`` checks the same record before it skips
a finished run. Another seed, learning rate or number of epochs makes
another run (the cosine schedule depends on the epochs): give it its own
folder.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> check_run(folder, {"data": {"key": "a"}})
False
>>> record_run(folder, {"data": {"key": "a"}})
>>> check_run(folder, {"data": {"key": "a"}})
True
>>> try:
...     check_run(folder, {"data": {"key": "b"}})
... except ProvenanceMismatch as error:
...     print(str(error).splitlines()[1])
  - data.key: was 'a', now 'b'
"""

import json
from pathlib import Path

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.bank import BANK_FILENAME, ids_fingerprint, read_manifest
from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.hashing import sha256_file

PROVENANCE_FILE = "provenance.json"
# Options of the preparation that change what a model sees; paths are left
# out so that a moved copy of the same data is the same data.
DATA_OPTIONS = (
    "version",
    "layout",
    "sample_rate",
    "duration",
    "pad",
    "valid_fraction",
    "seed",
    "end_tolerance",
)


# Keys of a recipe YAML that do not change what a run trains: paths (the
# data and the teachers are identified by content), speed knobs and the
# intervals' resampling.
NOT_RUN_DEFINING = frozenset(
    {
        "output_folder",
        "save_folder",
        "train_log",
        "data_folder",
        "prepare_folder",
        "synthetic_folder",
        "synthetic_recordings",
        "split_file",
        "teacher_bank",
        "num_workers",
        "channels_last",
        "test_dataloader_opts",
        # how the bank's intervals are computed, not what is trained
        "bootstrap",
        "bootstrap_seed",
    }
)


class ProvenanceMismatch(RecipeError, RuntimeError):
    """A run folder was made from other data or other teachers."""


def data_identity(manifests, summary_file):
    """Identify prepared data by content, not by path.

    Arguments
    ---------
    manifests : dict
        Split name -> manifest CSV written by ``prepare_icbhi``.
    summary_file : str or Path
        Its ``summary.json``.

    Returns
    -------
    dict
        ``key``, ``options``, ``fingerprints`` and ``cycles`` (split ->
        ``{"count", "ids"}``, the ID fingerprint).
    """
    summary = json.loads(Path(summary_file).read_text(encoding="utf-8"))
    options = summary["options"]
    cycles = {}
    for split, path in sorted(manifests.items()):
        ids, _ = read_manifest(path)
        cycles[split] = {"count": len(ids), "ids": ids_fingerprint(ids)}
    return {
        "key": summary.get("key"),
        "options": {k: options[k] for k in DATA_OPTIONS if k in options},
        "fingerprints": options["fingerprints"],
        "cycles": cycles,
    }


def run_identity(plain_hparams):
    """What defines a run: a recipe YAML's plain values (as
    :func:`speechbrain_rsc.recipe.read_plain_hparams` reads them, overrides
    applied) less paths and speed knobs (:data:`NOT_RUN_DEFINING`, at any
    depth) and SpeechBrain's ``__`` keys.

    Example
    -------
    >>> run_identity({"seed": 1, "output_folder": "r/1", "__set_seed": None,
    ...               "opts": {"batch_size": 8, "num_workers": 2}})
    {'seed': 1, 'opts': {'batch_size': 8}}
    """

    def keep(value):
        if isinstance(value, dict):
            return {
                k: keep(v)
                for k, v in value.items()
                if k not in NOT_RUN_DEFINING and not str(k).startswith("__")
            }
        return value

    return keep(dict(plain_hparams))


def teacher_identity(banks):
    """The teacher banks a student is made from: file, seed and hash.

    Arguments
    ---------
    banks : list of speechbrain_rsc.bank.LogitBank
        Loaded from files (their ``source`` is the path).

    Returns
    -------
    list of dict
    """
    return [
        {
            "run": Path(bank.source).parent.name,
            "seed": bank.info.get("seed"),
            "backbone": bank.info.get("backbone"),
            "sha256": sha256_file(bank.source),
        }
        for bank in banks
    ]


def differences(recorded, current, prefix=""):
    """Readable lines for every value that differs between two records.

    Example
    -------
    >>> differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    ['a.c: was 2, now 3']
    >>> differences({"t": [{"s": 1}, {"s": 2}]}, {"t": [{"s": 1}, {"s": 5}]})
    ['t[1].s: was 2, now 5']
    """
    if isinstance(recorded, dict) and isinstance(current, dict):
        lines = []
        for key in sorted(set(recorded) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in current:
                lines.append(f"{name}: was {recorded[key]!r}, now absent")
            elif key not in recorded:
                lines.append(f"{name}: absent before, now {current[key]!r}")
            else:
                lines += differences(recorded[key], current[key], name)
        return lines
    if (
        isinstance(recorded, list)
        and isinstance(current, list)
        and len(recorded) == len(current)
    ):
        lines = []
        for i, (was, now) in enumerate(zip(recorded, current)):
            lines += differences(was, now, f"{prefix}[{i}]")
        return lines
    if recorded != current:
        return [f"{prefix}: was {recorded!r}, now {current!r}"]
    return []


def read_run(folder):
    """The ``provenance.json`` of a run folder, or None if it has none."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ProvenanceMismatch(
            f"{path} is unreadable ({error}); delete {folder} to start this "
            "run afresh"
        ) from error


def _leftovers(folder):
    """Files that show a run was started in ``folder``."""
    folder = Path(folder)
    found = [folder / BANK_FILENAME, folder / "model"]
    found = [path for path in found if path.exists()]
    return found + sorted(folder.glob("*/CKPT*"))[:1]


def check_run(folder, provenance, keys=None):
    """Refuse to resume or reuse ``folder`` if it was made from other inputs.

    Arguments
    ---------
    folder : str or Path
        The run's output folder.
    provenance : dict
        What this run is made from (JSON-able).
    keys : tuple of str, optional
        Compare only these entries (a check made before the data is
        prepared, with what is known so far).

    Returns
    -------
    bool
        True if the folder holds a run made from the same inputs, False if
        it holds no run yet.

    Raises
    ------
    ProvenanceMismatch
        Naming each difference and how to proceed.
    """
    recorded = read_run(folder)
    current = json.loads(json.dumps(provenance))
    if recorded is None:
        leftovers = _leftovers(folder)
        if leftovers:
            raise ProvenanceMismatch(
                f"{folder} holds a run ({leftovers[0]}) but no "
                f"{PROVENANCE_FILE}, so what it was made from is unknown; "
                "choose another output_folder, or delete this one to start "
                "the run afresh"
            )
        return False
    if keys is not None:
        recorded = {k: recorded.get(k) for k in keys}
        current = {k: current.get(k) for k in keys}
    lines = differences(recorded, current)
    if lines:
        raise ProvenanceMismatch(
            f"{folder} was made from other inputs:\n"
            + "\n".join(f"  - {line}" for line in lines)
            + "\nIts checkpoints and bank belong to those inputs: choose "
            "another output_folder, or delete this one to start afresh."
        )
    return True


def record_run(folder, provenance):
    """Write ``provenance.json`` into ``folder`` (atomically)."""
    text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    write_text_atomically(
        Path(folder) / PROVENANCE_FILE, lambda file: file.write(text)
    )
