"""CNN6 of PANNs (Kong et al., 2020): our own implementation.

Four blocks of [5x5 convolution without bias, batch norm, ReLU, 2x2 average
pooling] with 64/128/256/512 channels, then mean over frequency, max + mean
over time, a 512-unit layer and the class head. It reads the ICBHI
pipeline's 128-bin Kaldi fbank.

Pretrained: ``Cnn6_mAP=0.343.pth`` (PANNs, state dict under ``"model"``).
Its AudioSet head and its STFT/log-mel extractor are dropped; its ``bn0``
normalises 64 mel bins while ours sees 128, so ``bn0`` starts fresh.

Example
-------
>>> model = CNN6(channels=(4, 8, 8, 16))
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

import torch

from speechbrain_rsc.models.checkpoints import (
    load_matching,
    load_state_dict_file,
)
from speechbrain_rsc.models.frontends import FbankFrontEnd

PANNS_DROPPED = ("fc_audioset.", "spectrogram_extractor.", "logmel_extractor.")


class ConvBlock(torch.nn.Module):
    """5x5 convolution (no bias), batch norm, ReLU, 2x2 average pooling."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(
            in_channels, out_channels, 5, padding=2, bias=False
        )
        self.bn1 = torch.nn.BatchNorm2d(out_channels)

    def forward(self, x):
        """``[B, C, T, F]`` -> ``[B, C', T/2, F/2]``."""
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.nn.functional.avg_pool2d(x, 2)


class CNN6(torch.nn.Module):
    """PANNs CNN6 on 128-bin fbank, with a new class head.

    Arguments
    ---------
    pretrained_path : str, optional
        A PANNs ``Cnn6_mAP=0.343.pth``.
    n_classes : int
    spec_augment : bool
        Mask the fbank while training.
    channels : tuple of int
        Widths of the four blocks (PANNs: 64, 128, 256, 512).
    n_mels : int
    dropout : float
        Dropout before and after the 512-unit layer (PANNs: 0.5).
    """

    sample_rate = 16000

    def __init__(
        self,
        pretrained_path=None,
        n_classes=4,
        spec_augment=True,
        channels=(64, 128, 256, 512),
        n_mels=128,
        dropout=0.5,
    ):
        super().__init__()
        self.front_end = FbankFrontEnd(self.sample_rate, n_mels, spec_augment)
        self.bn0 = torch.nn.BatchNorm2d(n_mels)
        widths = [1, *channels]
        for i in range(4):
            block = ConvBlock(widths[i], widths[i + 1])
            self.add_module(f"conv_block{i + 1}", block)
        self.fc1 = torch.nn.Linear(channels[-1], channels[-1])
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(channels[-1], n_classes)
        if pretrained_path is not None:
            self.load_panns(pretrained_path)

    def load_panns(self, path):
        """Load a PANNs CNN6 checkpoint, keeping our head (and ``bn0`` when
        its size differs).
        """
        state = load_state_dict_file(path, key="model")
        state = {
            k: v for k, v in state.items() if not k.startswith(PANNS_DROPPED)
        }
        allow = ["head."]
        if (
            state.get("bn0.weight", self.bn0.weight).shape
            != self.bn0.weight.shape
        ):
            state = {k: v for k, v in state.items() if not k.startswith("bn0.")}
            allow.append("bn0.")
        load_matching(self, state, str(path), allow_missing=allow)

    def embed(self, wavs):
        """The 512-d clip embedding of a batch of waveforms."""
        x = self.front_end(wavs)
        x = self.bn0(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1)
        x = x.transpose(1, 2).unsqueeze(1)  # [B, 1, T, F]
        for i in range(1, 5):
            x = getattr(self, f"conv_block{i}")(x)
            x = torch.nn.functional.dropout(x, 0.2, self.training)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return torch.relu(self.fc1(self.dropout(x)))

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``lens`` and ``prompts`` unused
        (cycles are standardised to one length).
        """
        return self.head(self.dropout(self.embed(wavs)))
