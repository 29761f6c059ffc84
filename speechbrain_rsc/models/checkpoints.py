"""Loading local weight files with errors that say what and where.

Generic helpers shared by every backbone family:

- :func:`find_weights_file` picks the weights file of a model folder (a
  Hugging Face snapshot, say);

- :func:`load_state_dict_file` reads a ``.pth``/``.pt``/``.bin`` (with
  ``torch.load(..., weights_only=True)``) or a ``.safetensors`` file;
- :func:`load_matching` loads an already renamed state dict into a module
  and refuses missing keys, unexpected keys and shape mismatches, naming
  the file.

Example
-------
>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/w.pth"
>>> torch.save({"model": {"weight": torch.ones(2, 3)}}, path)
>>> state = load_state_dict_file(path, key="model")
>>> load_matching(torch.nn.Linear(3, 2), state, path, allow_missing=["bias"])
['bias']
"""

import json
import logging
from pathlib import Path

import torch

from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

# BatchNorm's step counter: absent from old checkpoints, unused unless
# momentum is None; torch itself tolerates its absence.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


# Main weights of a model folder, best first (then: its only weight file).
FOLDER_WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


class CheckpointError(RecipeError, ValueError):
    """A weight file that does not fit the model it is loaded into."""


def find_weights_file(folder):
    """The main weights file of a model folder, or ``None``.

    The first of :data:`FOLDER_WEIGHTS` present, else the folder's only
    file ending in one of :data:`WEIGHT_SUFFIXES`.

    Arguments
    ---------
    folder : str or Path

    Returns
    -------
    Path or None

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> find_weights_file(folder) is None
    True
    >>> _ = (folder / "Cnn6_mAP=0.343.pth").write_bytes(b"")
    >>> find_weights_file(folder).name
    'Cnn6_mAP=0.343.pth'
    """
    folder = Path(folder)
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    ]
    return found[0] if len(found) == 1 else None


def weights_file(path):
    """``path`` itself, or the weights file of the folder ``path``.

    Raises
    ------
    CheckpointError
        A folder without a (single) weights file.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    found = find_weights_file(path)
    if found is None:
        raise CheckpointError(
            f"{path}: no weights file in this folder (expected one of "
            f"{', '.join(FOLDER_WEIGHTS[:2])} or a single "
            f"{'/'.join(WEIGHT_SUFFIXES)} file)"
        )
    return found


def check_file(path):
    """Return ``path`` as a ``Path``; raise if it is not an existing file.

    Arguments
    ---------
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        Naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    return path


def load_state_dict_file(path, key=None):
    """Read a state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

    ``torch.load`` runs with ``weights_only=True``: a file that needs
    arbitrary unpickling is refused.

    Arguments
    ---------
    path : str or Path
        The weight file.
    key : str, optional
        Take the state dict from this entry of the loaded dict (PANNs
        keep theirs under ``"model"``).

    Returns
    -------
    dict
        Name -> tensor, on the CPU (or, without ``key``, whatever dict
        the file holds: :func:`load_matching` checks the values).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        The file cannot be read as weights, has no ``key`` entry, or does
        not hold a dict.
    """
    path = check_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only checkpoint ({error}). "
            "If the file is trusted, re-save just its tensors, e.g. "
            "torch.save(torch.load(path, weights_only=False)['model'], out)"
        ) from error
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise CheckpointError(f"{path}: no '{key}' entry in the checkpoint")
        state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: does not hold a state dict")
    return state


def _prefixed(key, prefixes):
    return any(key.startswith(p) for p in prefixes)


def load_matching(
    module, state_dict, source, allow_missing=(), allow_unexpected=()
):
    """Load ``state_dict`` into ``module``, refusing any mismatch.

    Arguments
    ---------
    module : torch.nn.Module
    state_dict : dict
        Already renamed to the module's keys.
    source : str or Path
        Where the weights came from (file or folder), for error messages.
    allow_missing : iterable of str
        Key prefixes of the module that may keep their fresh values (a new
        head). BatchNorm ``num_batches_tracked`` counters may always be
        missing.
    allow_unexpected : iterable of str
        Key prefixes of ``state_dict`` that are dropped without complaint
        (a pretraining head).

    Returns
    -------
    list of str
        The module's keys that kept their fresh values.

    Raises
    ------
    CheckpointError
        Listing missing and unexpected keys and shape mismatches.
    """
    allow_missing, allow_unexpected = (
        tuple(allow_missing),
        tuple(allow_unexpected),
    )
    state_dict = {
        k: v
        for k, v in state_dict.items()
        if not _prefixed(k, allow_unexpected)
    }
    others = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if others:
        raise CheckpointError(
            f"{source}: not a state dict, entries {others[:5]} are not "
            "tensors (is the state dict nested under a key?)"
        )
    own = module.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    absent = set(own) - set(state_dict)
    fresh = sorted(
        k
        for k in absent
        if _prefixed(k, allow_missing) or k.endswith(OPTIONAL_SUFFIXES)
    )
    missing = sorted(absent - set(fresh))
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} in file, "
        f"{tuple(own[k].shape)} in model"
        for k in sorted(set(state_dict) & set(own))
        if state_dict[k].shape != own[k].shape
    ]
    if unexpected or missing or shapes:
        parts = []
        for name, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if keys:
                more = ", ..." if len(keys) > 6 else ""
                parts.append(
                    f"{name} ({len(keys)}): {', '.join(keys[:6])}{more}"
                )
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(parts)
        )
    module.load_state_dict(state_dict, strict=False)
    if fresh:
        logger.info("%s: kept fresh %s", source, ", ".join(fresh))
    return fresh


def architecture_differences(declared, found, prefix=""):
    """``(key, declared, found)`` for every key of ``found`` whose value
    differs in ``declared``, nested keys dotted (architecture sizes, or
    any config's settings for :func:`check_settings`).

    Example
    -------
    >>> architecture_differences(
    ...     {"hidden_size": 768, "audio_config": {"depths": [2, 2]}},
    ...     {"hidden_size": 64, "audio_config": {"depths": [1, 1]}},
    ... )
    [('hidden_size', 768, 64), ('audio_config.depths', [2, 2], [1, 1])]
    """
    differences = []
    for key, value in found.items():
        mine = declared.get(key)
        if isinstance(value, dict) and isinstance(mine, dict):
            differences += architecture_differences(
                mine, value, f"{prefix}{key}."
            )
        elif mine != value:
            differences.append((f"{prefix}{key}", mine, value))
    return differences


def check_architecture(source, declared, found, option):
    """Refuse weights of another architecture than the declared one.

    The architecture is what the options declare (the class defaults
    where they say nothing): the same network is then built by a recipe
    YAML, by ``build_backbone`` and when an exported model is reloaded.

    Arguments
    ---------
    source : str or Path
        The weights, named in the error.
    declared, found : dict
        The declared architecture and the checkpoint's.
    option : str
        Where the sizes are declared (e.g. ``clap_config``).

    Raises
    ------
    CheckpointError
        Naming each differing size and the options that fit the weights.

    Example
    -------
    >>> check_architecture("org/small", {"hidden_size": 768},
    ...                    {"hidden_size": 64}, "the options")
    Traceback (most recent call last):
    ...
    speechbrain_rsc.models.checkpoints.CheckpointError: org/small is \
another architecture than declared (hidden_size: 768 declared, 64 in the \
weights): declare the weights' sizes, the options: {"hidden_size": 64}
    """
    differences = architecture_differences(declared, found)
    if not differences:
        return
    sizes = ", ".join(
        f"{key}: {mine} declared, {value} in the weights"
        for key, mine, value in differences
    )
    raise CheckpointError(
        f"{source} is another architecture than declared ({sizes}): "
        f"declare the weights' sizes, {option}: {json.dumps(found)}"
    )


# Config keys that say where a config came from, what a model returns,
# or how to initialise weights that are then loaded: every key of
# transformers' ``PretrainedConfig()`` and the initialisers.
NOT_THE_NETWORK = frozenset(
    {
        "_name_or_path",
        "architectures",
        "chunk_size_feed_forward",
        "dtype",
        "id2label",
        "is_encoder_decoder",
        "label2id",
        "model_type",
        "output_attentions",
        "output_hidden_states",
        "problem_type",
        "return_dict",
        "transformers_version",
        "torch_dtype",
        "initializer_range",
        "initializer_factor",
        "logit_scale_init_value",
    }
)


def _plain(config):
    # as JSON gives them back: config.json reads (4, 4) as [4, 4]
    return json.loads(json.dumps(config.to_dict(), default=str))


def check_settings(source, declared, found, option, ignore=()):
    """Refuse weights whose config sets the network otherwise than the
    declared config (a dropout rate, an activation, an epsilon ...).

    The model is built from its options before its weights are loaded,
    so a setting of the weights' ``config.json`` is never taken
    silently: every key of the declared config must agree, but
    :data:`NOT_THE_NETWORK` and ``ignore``. Keys the declared config does
    not have (from other transformers versions) are not read by the
    network built here.

    Arguments
    ---------
    source : str or Path
        The weights, named in the error.
    declared, found : transformers.PretrainedConfig
        The built model's config and the weights' (same class).
    option : str
        Where the settings are declared, for the message.
    ignore : iterable of str
        More keys (last component) not compared.

    Raises
    ------
    CheckpointError
        Naming each differing setting and its value in the weights.

    Example
    -------
    >>> from transformers import ASTConfig
    >>> check_settings("org/ast", ASTConfig(), ASTConfig(), "the options")
    >>> check_settings("org/ast", ASTConfig(),
    ...                ASTConfig(hidden_dropout_prob=0.1), "the options")
    Traceback (most recent call last):
    ...
    speechbrain_rsc.models.checkpoints.CheckpointError: org/ast sets the \
network otherwise than declared (hidden_dropout_prob: 0.0 declared, 0.1 in \
the weights' config.json): set them in the options, {"hidden_dropout_prob": \
0.1}
    """
    skip = NOT_THE_NETWORK | set(ignore)
    # walks the keys of its second argument: the declared config's
    differing = architecture_differences(_plain(found), _plain(declared))
    differing = sorted(
        (key, mine, theirs)
        for key, theirs, mine in differing
        if key.rsplit(".", 1)[-1] not in skip
    )
    if not differing:
        return
    listed = ", ".join(
        f"{key}: {mine} declared, {theirs} in the weights' config.json"
        for key, mine, theirs in differing
    )
    wanted = json.dumps({key: theirs for key, _, theirs in differing})
    raise CheckpointError(
        f"{source} sets the network otherwise than declared ({listed}): "
        f"set them in {option}, {wanted}"
    )
