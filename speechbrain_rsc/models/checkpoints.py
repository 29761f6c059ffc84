"""Loading local weight files with errors that say what and where.

Example
-------
>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/w.pth"
>>> torch.save({"model": {"weight": torch.ones(2)}}, path)
>>> load_state_dict_file(path, key="model")["weight"].tolist()
[1.0, 1.0]
"""

from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A weight file that does not fit the model it is loaded into."""


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
        Name -> tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"{path}: not a weights-only torch checkpoint ({error})"
            ) from error
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise CheckpointError(f"{path}: no '{key}' entry in the checkpoint")
        state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: does not hold a state dict")
    return state


def load_matching(module, state_dict, source, allow_missing=()):
    """Load ``state_dict`` into ``module``, refusing any mismatch.

    Arguments
    ---------
    module : torch.nn.Module
    state_dict : dict
        Already renamed to the module's keys.
    source : str
        The file the weights came from, for error messages.
    allow_missing : iterable of str
        Key prefixes that may stay at their fresh values (a new head).

    Raises
    ------
    CheckpointError
        Listing missing and unexpected keys and shape mismatches.
    """
    own = module.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    missing = sorted(
        k
        for k in set(own) - set(state_dict)
        if not any(k.startswith(p) for p in allow_missing)
    )
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
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
                parts.append(f"{name} ({len(keys)}): {', '.join(keys[:6])}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(parts)
        )
    module.load_state_dict(state_dict, strict=False)
