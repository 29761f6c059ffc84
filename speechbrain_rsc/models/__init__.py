"""Backbones for respiratory sound classification, one module per family.

``BACKBONES[name]()`` builds any backbone offline with random weights;
every backbone takes ``forward(wavs, lens, prompts=None)`` with ``wavs`` at
its ``sample_rate`` and returns logits ``[batch, 4]``.

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
    """Build backbone ``name``, from local weights when ``use_pretrained``.

    The returned module carries ``backbone_config`` (name and options,
    without the weight path), from which a trained model is rebuilt.

    Arguments
    ---------
    name : str
        A key of :data:`BACKBONES`.
    options : dict, optional
        Keyword arguments of the backbone class (a YAML dict).
    pretrained_path : str, optional
        Local weights (file or folder) for ``use_pretrained: True``.
    use_pretrained : bool
        Start from ``pretrained_path`` rather than random weights.

    Returns
    -------
    torch.nn.Module
    """
    options = dict(options or {})
    if use_pretrained and not pretrained_path:
        raise ValueError(
            f"use_pretrained is True but no pretrained_path is set for '{name}'"
        )
    path = pretrained_path if use_pretrained else None
    model = BACKBONES[name](pretrained_path=path, **options)
    model.backbone_config = {"name": name, "options": options}
    return model
