"""ResNet18 and EfficientNet-B0 (timm) on the fbank as a 1-channel image.

The input is the normalised fbank ``[batch, 1, frames, 128]``.

Pretrained: a local ImageNet weight file in timm's layout (``.pth``,
``.bin`` or ``.safetensors``), or a folder holding one, such as a timm hub
snapshot (``timm/resnet18.tv_in1k``: ``model.safetensors``). Its first
convolution is adapted to one input channel with timm's own
``adapt_input_conv`` (sum over the RGB channels), and its ImageNet
classifier is replaced by a new head. The Patch-Mix code deletes the
ImageNet first-convolution weights instead (that layer starts random);
we sum, which keeps the pretrained edge filters, since the paper does not
say which it used.

timm can load such a file itself (``pretrained=True,
pretrained_cfg_overlay=dict(file=path)``, offline, same result), but a
wrong file then gives a bare ``RuntimeError`` without the path, a missing
one an empty ``FileNotFoundError``, and whether it unpickles with
``weights_only=True`` depends on the timm version; so we read the file
ourselves.

Parameters with a 4-class head and a 1-channel stem: ResNet18 11.17M,
EfficientNet-B0 4.01M. The paper's Table 2 (11.7M, 5.3M) counts timm's
ImageNet models: 1000-class head and 3-channel stem (11.69M, 5.29M).

Example
-------
>>> import torch
>>> model = ResNet18(spec_augment=False)
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

import timm
from speechbrain.utils.checkpoints import (
    mark_as_transfer,
    register_checkpoint_hooks,
)
from timm.models import adapt_input_conv

from speechbrain_rsc.models.checkpoints import (
    load_matching,
    load_state_dict_file,
    weights_file,
)
from speechbrain_rsc.models.frontends import FbankBackbone, FbankFrontEnd


@register_checkpoint_hooks
class TimmFbankCNN(FbankBackbone):
    """A timm image classifier over the 128-bin fbank.

    Arguments
    ---------
    n_classes : int
    spec_augment : bool
    spec_augment_p : float
        Probability of masking an utterance (``SpecAugment``'s ``p``).
    spec_augment_shared : bool
        One draw per batch (its ``shared``).
    drop_rate : float
        Dropout before the classifier (timm's ``drop_rate``).
    drop_path_rate : float
        Stochastic depth (timm's ``drop_path_rate``): block i of n skips
        its residual branch with probability ``drop_path_rate * i / n``
        while training, as torchvision's ``stochastic_depth_prob`` does
        for EfficientNet (the reference's model: 0.2).
    sample_rate : int, optional
        The data's sample rate, checked against 16000.
    """

    timm_name = None

    def __init__(
        self,
        n_classes=4,
        spec_augment=True,
        spec_augment_p=1.0,
        spec_augment_shared=False,
        drop_rate=0.0,
        drop_path_rate=0.0,
        sample_rate=None,
    ):
        super().__init__()
        self.check_sample_rate(sample_rate)
        self.front_end = FbankFrontEnd(
            self.sample_rate,
            128,
            spec_augment,
            spec_augment_p,
            spec_augment_shared,
        )
        self.net = timm.create_model(
            self.timm_name,
            pretrained=False,
            in_chans=1,
            num_classes=n_classes,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )

    @mark_as_transfer
    def load_pretrained(self, path):
        """Load ImageNet weights in timm's layout (file or folder):
        1-channel first conv, new classifier. The transfer hook
        SpeechBrain's ``Pretrainer`` calls; returns the model.

        Raises
        ------
        FileNotFoundError, CheckpointError
            Naming ``path``.
        """
        path = weights_file(path)
        state = load_state_dict_file(path)
        cfg = self.net.pretrained_cfg
        first = f"{cfg['first_conv']}.weight"
        if first in state and state[first].dim() == 4:
            if state[first].shape[1] != 1:
                state[first] = adapt_input_conv(1, state[first])
        head = f"{cfg['classifier']}."
        load_matching(
            self.net, state, path, allow_missing=[head], allow_unexpected=[head]
        )
        return self

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``lens``, ``prompts`` unused."""
        return self.net(self.front_end(wavs).unsqueeze(1))


class ResNet18(TimmFbankCNN):
    """ResNet18 (11.7M parameters in the paper's Table 2)."""

    backbone_name = "resnet18"
    timm_name = "resnet18"


class EfficientNetB0(TimmFbankCNN):
    """EfficientNet-B0 (5.3M parameters in the paper's Table 2).

    The reference builds torchvision's EfficientNet-B0 with stochastic
    depth 0.2 (``drop_path_rate=0.2`` here: the same probability per
    block) and dropout 0.2 in the classifier it deletes and replaces by a
    plain linear head, so its dropout is never applied (``drop_rate=0.0``).

    Example
    -------
    >>> import torch
    >>> model = EfficientNetB0(spec_augment=False, drop_path_rate=0.2)
    >>> max(b.drop_path.drop_prob for s in model.net.blocks[1:] for b in s)
    0.1875
    """

    backbone_name = "efficientnet_b0"
    timm_name = "efficientnet_b0"
