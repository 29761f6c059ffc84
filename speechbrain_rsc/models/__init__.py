"""Backbones for respiratory sound classification, one module per family.

``BACKBONES[name]()`` builds any backbone offline with random weights;
every backbone takes ``forward(wavs, lens, prompts=None)`` with ``wavs`` at
its ``sample_rate`` and returns logits ``[batch, 4]``. :func:`build_backbone`
also fetches pretrained weights (local, hub ID or URL; the paper's sources
by default) through :mod:`speechbrain_rsc.models.weights`.

Example
-------
>>> sorted(BACKBONES)
['ast', 'audio_clap', 'bts', 'cnn6', 'efficientnet_b0', 'resnet18']
"""

import importlib
from collections.abc import Mapping

_REGISTRY = {
    "cnn6": ("speechbrain_rsc.models.cnn6", "CNN6"),
    "resnet18": ("speechbrain_rsc.models.timm_cnn", "ResNet18"),
    "efficientnet_b0": ("speechbrain_rsc.models.timm_cnn", "EfficientNetB0"),
    "ast": ("speechbrain_rsc.models.ast", "AST"),
    "audio_clap": ("speechbrain_rsc.models.clap", "AudioCLAP"),
    "bts": ("speechbrain_rsc.models.clap", "BTS"),
}


class _LazyRegistry(Mapping):
    """Name -> backbone class, importing a family's module on first use."""

    def __getitem__(self, name):
        if name not in _REGISTRY:
            raise KeyError(
                f"unknown backbone '{name}' (known: {', '.join(_REGISTRY)})"
            )
        module, attr = _REGISTRY[name]
        return getattr(importlib.import_module(module), attr)

    def __iter__(self):
        return iter(_REGISTRY)

    def __len__(self):
        return len(_REGISTRY)


BACKBONES = _LazyRegistry()


def build_backbone(
    name, options=None, pretrained_path=None, use_pretrained=False
):
    """Build backbone ``name``, from pretrained weights when
    ``use_pretrained``.

    The weights come through :func:`~speechbrain_rsc.models.weights.
    resolve_weights`: a local file or folder, a Hugging Face hub ID or a
    URL; without ``pretrained_path``, the backbone's default source
    (:data:`~speechbrain_rsc.models.weights.DEFAULT_SOURCES`). Weights
    that cannot be had raise, never falling back to random ones.

    The returned module carries ``backbone_config`` (name and options,
    without the weight source), from which a trained model is rebuilt,
    and ``weights_source``: the record of the weights it started from
    (``source``, ``kind``, ``revision``, ``sha256``, ``file``), or
    ``None`` for random weights.

    Arguments
    ---------
    name : str
        A key of :data:`BACKBONES`.
    options : dict, optional
        Keyword arguments of the backbone class (a YAML dict).
    pretrained_path : str, optional
        Where the weights are (used only with ``use_pretrained``).
    use_pretrained : bool
        Start from pretrained weights rather than random ones.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    WeightsUnavailableError
        The weights cannot be had; the message names the backbone, the
        source, how to get them and ``--use_pretrained False``.

    Example
    -------
    >>> model = build_backbone("cnn6", {"channels": [4, 8, 8, 16]})
    >>> model.backbone_config["name"], model.weights_source
    ('cnn6', None)
    """
    from speechbrain_rsc.models.weights import (
        DEFAULT_SOURCES,
        resolve_weights,
    )

    options = dict(options or {})
    cls = BACKBONES[name]
    path, record = None, None
    if use_pretrained:
        source = pretrained_path or DEFAULT_SOURCES.get(name)
        if source is None:
            raise ValueError(
                f"use_pretrained is True but '{name}' has no default "
                "weights: set pretrained_path"
            )
        path, record = resolve_weights(source, backbone=name)
    model = cls(pretrained_path=path, **options)
    # The resolved sizes join the options: an exported model is rebuilt
    # with exactly this architecture, whatever the class defaults become.
    resolved = {**options, **getattr(model, "architecture", {})}
    model.backbone_config = {"name": name, "options": resolved}
    model.weights_source = record
    return model


def declare_backbone(
    name, options=None, pretrained_path=None, use_pretrained=False
):
    """Build backbone ``name`` with random weights, noting the pretrained
    weights it is to start from; :func:`load_pretrained` loads them.

    This is what the recipe YAMLs build, so that loading a YAML never
    downloads (the SpeechBrain way: collect, then load), the script fetches
    the weights once (on the main process first under DDP), and a Brain
    refuses a model whose declared weights were never loaded.

    Arguments are those of :func:`build_backbone`.

    Example
    -------
    >>> model = declare_backbone("cnn6", {"channels": [4, 8, 8, 16]},
    ...                          use_pretrained=True)
    >>> model.pending_weights.startswith("https://zenodo.org/record/3960586")
    True
    >>> model.weights_source is None
    True
    """
    from speechbrain_rsc.models.weights import DEFAULT_SOURCES

    model = build_backbone(name, options)
    model.pending_weights = None
    if use_pretrained:
        model.pending_weights = pretrained_path or DEFAULT_SOURCES.get(name)
        if model.pending_weights is None:
            raise ValueError(
                f"use_pretrained is True but '{name}' has no default "
                "weights: set pretrained_path"
            )
    return model


def load_pretrained(model):
    """Load the weights :func:`declare_backbone` noted into ``model`` (in
    place; nothing to do without); returns ``model``.

    Raises
    ------
    WeightsUnavailableError
        As :func:`build_backbone`.
    """
    source = getattr(model, "pending_weights", None)
    if source is None:
        return model
    config = model.backbone_config
    loaded = build_backbone(config["name"], config["options"], source, True)
    model.load_state_dict(loaded.state_dict())
    model.weights_source = loaded.weights_source
    model.pending_weights = None
    return model
