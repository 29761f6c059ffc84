"""Backbones for respiratory sound classification, one module per family.

``BACKBONES[name]()`` builds any backbone offline with random weights;
every backbone takes ``forward(wavs, lens, prompts=None)`` with ``wavs`` at
its ``sample_rate`` and returns logits ``[batch, 4]``, and loads pretrained
weights with its transfer hook ``load_pretrained``, which SpeechBrain's
``Pretrainer`` calls (:mod:`speechbrain_rsc.models.pretrained`; local, hub
ID or URL; the paper's sources by default). :func:`build_backbone` does
both from a registry name and options.

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
    """Build backbone ``name`` with ``options``, then load pretrained
    weights into it when ``use_pretrained``, through the same
    :class:`~speechbrain_rsc.models.pretrained.Pretrainer` and transfer
    hook as a recipe YAML.

    The weights come from ``pretrained_path`` (a local file or folder, a
    Hugging Face hub ID or a URL), else from the backbone's default
    source (:data:`~speechbrain_rsc.models.weights.DEFAULT_SOURCES`).
    Weights that cannot be had raise, never falling back to random ones.

    The returned module carries ``backbone_config`` (name and options,
    from which a trained model is rebuilt) and ``weights_source``: the
    record of the weights it started from (``source``, ``kind``,
    ``revision``, ``sha256``, ``file``), or ``None`` for random weights.

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
    model = BACKBONES[name](**dict(options or {}))
    if use_pretrained:
        # Here, not at the top: the registry stays as light to import as
        # the families it loads lazily (speechbrain.utils takes 2 s).
        from speechbrain_rsc.models.pretrained import Pretrainer

        pretrainer = Pretrainer(
            loadables={"model": model}, paths={"model": pretrained_path}
        )
        pretrainer.collect_files()
        pretrainer.load_collected()
    return model
