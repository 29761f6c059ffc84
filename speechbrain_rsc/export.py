"""A trained model published: a folder SpeechBrain loads.

``save_trained`` writes a model folder: the weights and ``model.json`` of
:func:`~speechbrain_rsc.trained_model.save_model`, and

- ``hyperparams.yaml``: the same network for SpeechBrain, so that
  ``RespiratoryClassifier.from_hparams(source=<folder or hub ID>)`` loads
  it as any SpeechBrain model;
- ``README.md``: the model card (:mod:`speechbrain_rsc.model_card`).

``export_ensemble`` writes the same for an ensemble of trained runs: one
``member_<i>.ckpt`` per member, ``ensemble.json`` and a
``hyperparams.yaml`` that builds every member and joins them in an
:class:`~speechbrain_rsc.brains.EnsembleModel` (fused for inference by
the classifier). A published folder is flat because SpeechBrain's
``Pretrainer`` fetches each loadable as ``<source>/<name>.ckpt``, from a
folder and from a Hugging Face repository alike; that is also why the
YAML names no ``paths``: a relative path such as ``model.ckpt`` would be
read from the current directory (``Pretrainer.split_path`` gives it the
source ``./``), not from the model's folder or repository.

The weights are loaded strictly (:func:`load_weights`), not with
SpeechBrain's default hook, which only warns about missing or unexpected
tensors.

Example
-------
>>> import tempfile
>>> from speechbrain_rsc.models.cnn6 import CNN6
>>> model = CNN6(channels=[4, 8, 8, 8])
>>> folder = tempfile.mkdtemp()
>>> save_trained(model, folder, {"seed": 1})
>>> read_config(folder)["info"]
{'seed': 1}
>>> sorted(p.name for p in Path(folder).iterdir())
['README.md', 'hyperparams.yaml', 'model.ckpt', 'model.json']
"""

import json
import shutil
from pathlib import Path

from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.brains import EnsembleModel
from speechbrain_rsc.ensemble import bank_breakdown, evaluate_banks
from speechbrain_rsc.model_card import ENSEMBLE_FILE, write_model_card
from speechbrain_rsc.models import BACKBONES
from speechbrain_rsc.trained_model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_members,
    model_folders,
    preparation,
    read_config,
    read_weights,
    rebuild,
    save_model,
)

HPARAMS_FILE = "hyperparams.yaml"


def _write_text(path, text):
    write_atomically(path, lambda p: Path(p).write_text(text, "utf-8"))


def save_trained(model, folder, info, per_device=None):
    """Write ``model``'s weights, rebuild recipe, SpeechBrain
    ``hyperparams.yaml`` and model card into ``folder``.

    Arguments
    ---------
    model : torch.nn.Module
        A :class:`~speechbrain_rsc.models.backbone.Backbone` (it carries
        ``backbone_config``); a DDP wrapper is unwrapped.
    folder : str or Path
        Output folder.
    info : dict
        Extra JSON-able facts (seed, epoch, metrics, teachers, ...).
    per_device : pandas.DataFrame or list of dict, optional
        Per-device test scores for the model card.
    """
    folder = Path(folder)
    config = save_model(model, folder, info)
    members = [("model", _run_label(folder), config)]
    _write_text(folder / HPARAMS_FILE, hyperparams_yaml(members))
    write_model_card(folder, per_device=per_device)


def load_weights(module, path):
    """Load a state dict file into ``module`` strictly (a Pretrainer hook).

    Raises
    ------
    RuntimeError
        Naming the file and the mismatched tensors, when the network built
        from ``hyperparams.yaml`` is not the one the weights come from.

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_rsc.trained_model import save_weights
    >>> path = tempfile.mkdtemp() + "/w.ckpt"
    >>> save_weights(torch.nn.Linear(2, 4).state_dict(), path)
    >>> load_weights(torch.nn.Linear(2, 3), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    RuntimeError: .../w.ckpt does not fit the network built by hyperparams...
    """
    state = read_weights(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise RuntimeError(
            f"{path} does not fit the network built by {HPARAMS_FILE}: "
            f"re-export the model folder with save_trained ({error})"
        ) from error


def load_exported_ensemble(folder):
    """Rebuild an ensemble written by :func:`export_ensemble` from its
    ``ensemble.json`` and safetensors weights, running nothing from it.

    Returns
    -------
    model : speechbrain_rsc.brains.EnsembleModel
    preparation : dict
        ``sample_rate``, ``duration``, ``pad``.
    members : list of str
        The members' runs.
    """
    folder = Path(folder)
    facts = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    loaded = [
        rebuild(m["backbone"], m["options"], folder / f"{m['name']}.ckpt")
        for m in facts["members"]
    ]
    prep = {key: facts[key] for key in ("sample_rate", "duration", "pad")}
    return EnsembleModel(loaded), prep, [m["run"] for m in facts["members"]]


def _backbone_yaml(key, config):
    # The model as a recipe YAML declares it: its class with its options
    # (JSON is YAML: the values keep their exact types and quoting).
    cls = BACKBONES[config["name"]]
    options = config.get("options") or {}
    head = f"{key}: !new:{cls.__module__}.{cls.__qualname__}"
    if not options:
        return head + " {}\n"
    return (
        head
        + "\n"
        + "".join(
            f"    {name}: {json.dumps(value)}\n"
            for name, value in options.items()
        )
    )


def hyperparams_yaml(members):
    """The ``hyperparams.yaml`` of a model or an ensemble.

    Arguments
    ---------
    members : list of (str, str, dict)
        ``(loadable key, run label, model.json)`` per member; one member
        keyed ``model`` is a single model, weights in ``model.ckpt``;
        otherwise the weights of key ``k`` are in ``k.ckpt``.

    Returns
    -------
    str

    Example
    -------
    >>> config = {"name": "cnn6", "options": {}, "sample_rate": 16000}
    >>> text = hyperparams_yaml([("model", "1", config)])
    >>> "sample_rate: 16000" in text, "custom_hooks:" in text
    (True, True)
    """
    prep = preparation(members[0][2])
    names = sorted({c["name"] for _, _, c in members})
    single = len(members) == 1 and members[0][0] == "model"
    what = names[0] if single else f"ensemble of {len(members)} {names}"
    lines = [
        "# " + "#" * 76,
        f"# Model: {what}, ICBHI 2017 respiratory sound classification",
        "# Written by speechbrain_rsc.export; load with",
        "#   RespiratoryClassifier.from_hparams(source=<folder or hub ID>)",
        "# (speechbrain_rsc.inference). Weights: <loadable key>.ckpt beside",
        "# this file, found through the source given to from_hparams.",
        "# " + "#" * 76,
        f"sample_rate: {json.dumps(prep['sample_rate'])}",
        f"duration: {prep['duration']}",
        f"pad: {json.dumps(prep['pad'])}",
        f"members: {json.dumps([label for _, label, _ in members])}",
        "",
    ]
    text = "\n".join(lines)
    for key, _, config in members:
        text += _backbone_yaml(key, config)
    keys = [key for key, _, _ in members]
    if not single:
        refs = ", ".join(f"!ref <{key}>" for key in keys)
        text += (
            "model: !new:speechbrain_rsc.brains.EnsembleModel\n"
            f"    members: [{refs}]\n"
        )
    text += "\nmodules:\n    model: !ref <model>\n\n"
    text += "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
    text += "    loadables:\n"
    text += "".join(f"        {key}: !ref <{key}>\n" for key in keys)
    text += "    custom_hooks:\n"
    text += "".join(
        f"        {key}: !name:speechbrain_rsc.export.load_weights\n"
        for key in keys
    )
    return text


def _run_label(folder):
    folder = Path(folder)
    return folder.parent.name if folder.name == "model" else folder.name


def _ensemble_scores(folders):
    """Mean-logit ensemble metrics and per-device table from the runs'
    banks, or ``(None, None)`` when a run has no bank.
    """
    paths = [Path(f).parent / BANK_FILENAME for f in folders]
    if not all(p.is_file() for p in paths):
        return None, None
    banks = [LogitBank.open(p) for p in paths]
    splits = [s for s in ("test", "valid") if banks[0].ids.get(s)]
    metrics = {s: evaluate_banks(banks, s) for s in splits}
    if "test" not in metrics:
        return metrics, None
    return metrics, bank_breakdown(banks)["device"]


def export_ensemble(run_folders, out_folder, info=None):
    """Write an ensemble of trained runs as one publishable model folder.

    ``out_folder`` gets ``member_<i>.ckpt`` (a copy of each member's
    weights), ``ensemble.json`` (each member's ``model.json`` and run),
    ``hyperparams.yaml`` for ``RespiratoryClassifier.from_hparams`` and
    the model card ``README.md``. When every run holds its logit bank
    (``<run>/bank.safetensors``), the card reports the ensemble's scores
    and per-device scores computed from them.

    Arguments
    ---------
    run_folders : list of str or Path
        Each a model folder (``<run>/model``), a run holding one, or a
        folder of runs (every ``<run>/model`` in it).
    out_folder : str or Path
    info : dict, optional
        Facts for the model card (e.g. ``metrics`` measured elsewhere).

    Returns
    -------
    list of Path
        The members' model folders, in member order.

    Raises
    ------
    ValueError
        When the members expect different sample rates, durations or
        padding (see :func:`check_members`), or fewer than two are given.
    """
    folders = []
    for folder in run_folders:
        folder = Path(folder)
        if (folder / "model" / CONFIG_FILE).is_file():
            folder = folder / "model"
        folders.extend(model_folders(folder))
    if len(folders) < 2:
        raise ValueError(
            f"an ensemble needs at least two trained models, found "
            f"{len(folders)} in {', '.join(map(str, run_folders))}: use "
            "save_trained's folder for a single model"
        )
    configs = [read_config(f) for f in folders]
    prep = check_members(folders, configs)
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for i, (folder, config) in enumerate(zip(folders, configs), start=1):
        key = f"member_{i}"
        write_atomically(
            out / f"{key}.ckpt",
            lambda p, src=folder / WEIGHTS_FILE: shutil.copyfile(src, p),
        )
        members.append((key, _run_label(folder), config))
    keys = {key for key, _, _ in members}
    for stale in out.glob("member_*.ckpt"):  # from an earlier, larger export
        if stale.stem not in keys:
            stale.unlink()
    backbones = sorted({c["name"] for c in configs})
    metrics, per_device = _ensemble_scores(folders)
    protocols = [(c.get("info") or {}).get("protocol") for c in configs]
    if len(set(protocols)) > 1:
        protocols = [
            "mixed ("
            + ", ".join(f"{m[1]}: {p}" for m, p in zip(members, protocols))
            + ")"
        ]
    select_on = {(c.get("info") or {}).get("select_on") for c in configs}
    facts = {
        **prep,
        "role": "ensemble",
        "backbone": "+".join(backbones),
        "protocol": protocols[0],
        "select_on": select_on.pop() if len(select_on) == 1 else None,
        "members": [
            {
                "name": key,
                "run": label,
                "backbone": config["name"],
                "options": config.get("options") or {},
                "info": config.get("info") or {},
            }
            for key, label, config in members
        ],
        **({"metrics": metrics} if metrics else {}),
        **(info or {}),
    }
    _write_text(out / ENSEMBLE_FILE, json.dumps(facts, indent=2, default=str))
    _write_text(out / HPARAMS_FILE, hyperparams_yaml(members))
    write_model_card(out, per_device=per_device)
    return folders
