"""ResNet18 and EfficientNet-B0 (timm) on the fbank as a 1-channel image.

Pretrained: a local ImageNet weight file in timm's layout (``.pth``,
``.bin`` or ``.safetensors``). Its first convolution is adapted to one
input channel by summing over the RGB channels (as timm does), and its
ImageNet classifier is replaced by a new head.

Example
-------
>>> model = ResNet18(spec_augment=False)
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

import timm
import torch

from speechbrain_rsc.models.checkpoints import (
    load_matching,
    load_state_dict_file,
)
from speechbrain_rsc.models.frontends import FbankFrontEnd


class TimmFbankCNN(torch.nn.Module):
    """A timm image classifier over the 128-bin fbank.

    Arguments
    ---------
    pretrained_path : str, optional
        Local ImageNet weights in timm's layout.
    n_classes : int
    spec_augment : bool
    drop_rate : float
        Dropout before the classifier.
    """

    timm_name = None
    sample_rate = 16000

    def __init__(
        self,
        pretrained_path=None,
        n_classes=4,
        spec_augment=True,
        drop_rate=0.0,
    ):
        super().__init__()
        self.front_end = FbankFrontEnd(self.sample_rate, 128, spec_augment)
        self.net = timm.create_model(
            self.timm_name,
            pretrained=False,
            in_chans=1,
            num_classes=n_classes,
            drop_rate=drop_rate,
        )
        if pretrained_path is not None:
            self.load_imagenet(pretrained_path)

    def load_imagenet(self, path):
        """Load ImageNet weights: 1-channel first conv, new classifier."""
        state = load_state_dict_file(path)
        cfg = self.net.pretrained_cfg
        first = f"{cfg['first_conv']}.weight"
        if first in state and state[first].shape[1] == 3:
            state[first] = state[first].sum(dim=1, keepdim=True)
        head = f"{cfg['classifier']}."
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        load_matching(self.net, state, str(path), allow_missing=[head])

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``lens``, ``prompts`` unused."""
        return self.net(self.front_end(wavs).unsqueeze(1))


class ResNet18(TimmFbankCNN):
    """ResNet18 (11.7M parameters in the paper's Table 2)."""

    timm_name = "resnet18"


class EfficientNetB0(TimmFbankCNN):
    """EfficientNet-B0 (5.3M parameters in the paper's Table 2)."""

    timm_name = "efficientnet_b0"
