"""A trained model on disk: its weights, its ``model.json``, loading it.

A model folder holds:

- ``model.ckpt``: the weights, a state dict in the safetensors format
  (reading it runs no code, unlike a pickle; the name is the one
  SpeechBrain's ``Pretrainer`` fetches, ``<loadable>.ckpt``);
- ``model.json``: how to rebuild the network (backbone name and options,
  sample rate) and what the run recorded (``info``: seed, metrics,
  teachers, protocol, duration, ...).

:func:`save_model` writes both, :func:`load_trained` rebuilds the
network from them. Publishing a folder (its ``hyperparams.yaml`` for
SpeechBrain and its model card) is :mod:`speechbrain_rsc.export`.

Example
-------
>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 4)
>>> model.backbone_config = {"name": "linear", "options": {}}
>>> folder = tempfile.mkdtemp()
>>> save_model(model, folder, {"seed": 1})["info"]
{'seed': 1}
>>> read_config(folder)["info"]
{'seed': 1}
>>> sorted(p.name for p in Path(folder).iterdir())
['model.ckpt', 'model.json']
"""

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.bank import BANK_FILENAME
from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.models import build_backbone
from speechbrain_rsc.models.checkpoints import CheckpointError
from speechbrain_rsc.provenance import PROVENANCE_FILE

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.ckpt"
DEFAULT_DURATION = 8.0
DEFAULT_PAD = "repeat"


def save_model(model, folder, info):
    """Write ``model``'s weights and ``model.json`` into ``folder``.

    Arguments
    ---------
    model : torch.nn.Module
        A :class:`~speechbrain_rsc.models.backbone.Backbone` (it carries
        ``backbone_config``); a DDP wrapper is unwrapped.
    folder : str or Path
        Output folder, made if missing.
    info : dict
        Extra JSON-able facts (seed, epoch, metrics, teachers, ...).

    Returns
    -------
    dict
        The ``model.json`` written.
    """
    model = getattr(model, "module", model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(model.backbone_config)
    config["sample_rate"] = getattr(model, "sample_rate", None)
    config["info"] = info
    save_weights(model.state_dict(), folder / WEIGHTS_FILE)
    text = json.dumps(config, indent=2, default=str)
    write_atomically(
        folder / CONFIG_FILE, lambda p: Path(p).write_text(text, "utf-8")
    )
    return config


def save_weights(state, path):
    """Write a state dict as a safetensors file, atomically.

    Tensors are copied to the CPU, contiguous and unshared (safetensors
    refuses tensors that share memory).
    """
    tensors = {
        k: v.detach().cpu().contiguous().clone() for k, v in state.items()
    }
    write_atomically(path, lambda p: save_file(tensors, p, {"format": "pt"}))


def read_weights(path):
    """The state dict of a weights file written by :func:`save_weights`.

    Raises
    ------
    CheckpointError
        Naming the file, when it is not a safetensors file (for example a
        pickle, which could run code when read: never unpickled here).

    Example
    -------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/model.ckpt"
    >>> save_weights({"w": torch.ones(2)}, path)
    >>> read_weights(path)["w"].tolist()
    [1.0, 1.0]
    >>> torch.save({"w": torch.ones(2)}, path)  # a pickle
    >>> read_weights(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_rsc.models.checkpoints.CheckpointError: .../model.ckpt is ...
    """
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a safetensors weights file ({error}): model "
            "folders hold safetensors weights so that loading them runs no "
            "code; re-export the model with save_trained, or, if you trust "
            "this file, load it yourself"
        ) from error


def read_config(folder):
    """The ``model.json`` of a trained model folder."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no trained model ({CONFIG_FILE} missing)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_trained(folder, map_location="cpu"):
    """Rebuild a trained backbone from its folder, in eval mode.

    Returns
    -------
    model : torch.nn.Module
    config : dict
        The folder's ``model.json``.
    """
    folder = Path(folder)
    config = read_config(folder)
    model = rebuild(config["name"], config["options"], folder / WEIGHTS_FILE)
    return model.to(map_location), config


def rebuild(name, options, weights):
    """Backbone ``name`` built with ``options``, the weights of the
    safetensors file ``weights`` loaded strictly, in eval mode.
    """
    model = build_backbone(name, options)
    model.load_state_dict(read_weights(weights))
    return model.eval()


class NoModelError(RecipeError, FileNotFoundError):
    """A folder that holds no trained model where one was expected."""


def model_folders(folder):
    """The trained-model folders under ``folder``: itself, the ``model/``
    of a run folder, or every run's ``model/`` in a folder of runs.

    Raises
    ------
    NoModelError
        When there is none, or when a run of a folder of runs has no
        model (an unfinished run would silently shrink the ensemble).
    """
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return [folder]
    if (folder / "model" / CONFIG_FILE).is_file():
        return [folder / "model"]
    runs = sorted(p.parent for p in folder.glob(f"*/model/{CONFIG_FILE}"))
    if not runs:
        raise NoModelError(
            f"{folder} holds no trained model ({CONFIG_FILE}) nor runs "
            f"with <run>/model/{CONFIG_FILE}"
        )
    unfinished = sorted(
        run.parent
        for marker in (PROVENANCE_FILE, BANK_FILENAME)
        for run in folder.glob(f"*/{marker}")
        if not (run.parent / "model" / CONFIG_FILE).is_file()
    )
    if unfinished:
        names = ", ".join(str(p) for p in dict.fromkeys(unfinished))
        raise NoModelError(
            f"{folder} is a folder of runs, but {names} holds no "
            f"model/{CONFIG_FILE} (an unfinished run): finish it or move it "
            "away, or give the model folders you want"
        )
    return runs


def preparation(config):
    """How a model prepares its input: sample rate, duration, padding.

    Example
    -------
    >>> preparation({"sample_rate": 16000, "info": {"duration": 4.0}})
    {'sample_rate': 16000, 'duration': 4.0, 'pad': 'repeat'}
    """
    info = config.get("info") or {}
    return {
        "sample_rate": config.get("sample_rate"),
        "duration": float(info.get("duration", DEFAULT_DURATION)),
        "pad": info.get("pad", DEFAULT_PAD),
    }


def check_members(folders, configs):
    """Refuse an ensemble whose members prepare their input differently.

    Arguments
    ---------
    folders : list of str or Path
        The members' model folders, to name them.
    configs : list of dict
        Their ``model.json``.

    Returns
    -------
    dict
        The shared :func:`preparation`.

    Raises
    ------
    ValueError
        Naming every member and its value of the first fact that differs.

    Example
    -------
    >>> a = {"sample_rate": 16000, "info": {"duration": 8.0}}
    >>> b = {"sample_rate": 16000, "info": {"duration": 4.0}}
    >>> check_members(["runs/1/model", "runs/2/model"], [a, b])
    Traceback (most recent call last):
    ValueError: ensemble members expect different duration: \
runs/1/model 8.0, runs/2/model 4.0; an ensemble needs members trained on \
the same prepared data: leave out the odd ones
    """
    preps = [preparation(c) for c in configs]
    for key in ("sample_rate", "duration", "pad"):
        if len({p[key] for p in preps}) > 1:
            values = ", ".join(
                f"{folder} {prep[key]}" for folder, prep in zip(folders, preps)
            )
            raise ValueError(
                f"ensemble members expect different {key}: {values}; an "
                "ensemble needs members trained on the same prepared data: "
                "leave out the odd ones"
            )
    return preps[0]
