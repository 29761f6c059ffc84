"""What every backbone is: a module that remembers the options it was
built with, so that a trained model is rebuilt from them.

A recipe YAML builds a backbone with ``!new:`` of its class and its
options; an exported ``model.json`` records :attr:`Backbone.
backbone_config` (the registry name and those options, with the sizes
the class resolved), from which :func:`speechbrain_rsc.models.
build_backbone` builds the same network again. Pretrained weights are
loaded afterwards, by the class's transfer hook (``load_pretrained``,
marked with ``speechbrain.utils.checkpoints.mark_as_transfer``) that
SpeechBrain's ``Pretrainer`` calls.

Example
-------
>>> class Tiny(Backbone):
...     backbone_name = "tiny"
...     def __init__(self, width=2, bias=True):
...         super().__init__()
...         self.layer = torch.nn.Linear(width, 4, bias=bias)
>>> Tiny(3, bias=False).backbone_config
{'name': 'tiny', 'options': {'width': 3, 'bias': False}}
"""

import inspect

import torch


class Backbone(torch.nn.Module):
    """Base of the backbones: records the constructor's options.

    Attributes
    ----------
    backbone_name : str
        The class's name in :data:`speechbrain_rsc.models.BACKBONES`.
    weights_source : dict or None
        The record of the pretrained weights loaded into the model
        (:func:`speechbrain_rsc.models.weights.resolve_weights`), set by
        the ``Pretrainer``; None for random weights.
    """

    backbone_name = None
    weights_source = None

    def __new__(cls, *args, **kwargs):
        """A new backbone, remembering ``args``/``kwargs`` by name."""
        model = super().__new__(cls)
        signature = inspect.signature(cls.__init__)
        bound = signature.bind(model, *args, **kwargs)
        options = {}
        for name, value in list(bound.arguments.items())[1:]:
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                options.update(value)
            else:
                options[name] = value
        # Not a module attribute (no parameters, nothing to register).
        object.__setattr__(model, "_options", options)
        return model

    @property
    def backbone_config(self):
        """``{"name": backbone_name, "options": ...}``: the options given,
        with the sizes the class resolved (its ``architecture``), so that
        the same network is rebuilt whatever the class defaults become.
        """
        resolved = {**self._options, **getattr(self, "architecture", {})}
        return {"name": self.backbone_name, "options": resolved}
