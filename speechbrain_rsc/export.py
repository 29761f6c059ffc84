"""A trained model on disk: ``model.json`` (how to rebuild it) beside
``model.ckpt`` (its weights, a plain state dict).

The inference interface and the ensemble model read this folder; neither
needs the training YAML.

Example
-------
>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 4)
>>> model.backbone_config = {"name": "linear", "options": {}}
>>> folder = tempfile.mkdtemp()
>>> save_trained(model, folder, {"seed": 1})
>>> read_config(folder)["info"]
{'seed': 1}
"""

import json
from pathlib import Path

import torch

from speechbrain_rsc.atomic import write_atomically

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.ckpt"


def save_trained(model, folder, info):
    """Write ``model``'s weights and rebuild recipe into ``folder``.

    Arguments
    ---------
    model : torch.nn.Module
        A backbone built by ``build_backbone`` (it carries
        ``backbone_config``); a DDP wrapper is unwrapped.
    folder : str or Path
        Output folder.
    info : dict
        Extra JSON-able facts (seed, epoch, metrics, teachers, ...).
    """
    model = getattr(model, "module", model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(model.backbone_config)
    config["sample_rate"] = getattr(model, "sample_rate", None)
    config["info"] = info
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_atomically(folder / WEIGHTS_FILE, lambda p: torch.save(state, p))
    text = json.dumps(config, indent=2, default=str)
    write_atomically(
        folder / CONFIG_FILE,
        lambda p: Path(p).write_text(text, encoding="utf-8"),
    )


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
    from speechbrain_rsc.models import build_backbone

    config = read_config(folder)
    model = build_backbone(config["name"], config["options"])
    state = torch.load(
        Path(folder) / WEIGHTS_FILE,
        map_location=map_location,
        weights_only=True,
    )
    model.load_state_dict(state)
    return model.eval(), config
