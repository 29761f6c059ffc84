"""CNN6 of PANNs (Kong et al., 2020): our own implementation.

Four blocks of [5x5 convolution without bias, batch norm, ReLU, 2x2 average
pooling] with 64/128/256/512 channels, then mean over frequency, max + mean
over time, a 512-unit layer with ReLU and the class head. It reads the ICBHI
pipeline's 128-bin Kaldi fbank.

Pretrained: ``Cnn6_mAP=0.343.pth`` (PANNs, state dict under ``"model"``).
Our submodules carry the PANNs names (``bn0``, ``conv_blockN.conv1``,
``conv_blockN.bn1``, ``fc1``), so loading is a filter, not a renaming: the
AudioSet head ``fc_audioset`` and the STFT/log-mel extractor
(``spectrogram_extractor``, ``logmel_extractor``) are dropped, and ``bn0``,
which normalises PANNs' 64 mel bins while ours sees 128, starts fresh
(loaded only when the file's bin count equals ``n_mels``). A fresh ``bn0``
standardises each of our bins in training, which is what the pretrained
convolutions saw in PANNs.

Parameters: 4.57M with a 4-class head. PANNs' own CNN6 has 4.84M, of
which 0.27M are its 527-class AudioSet head: that is the 4.8M of the
paper's Table 2. (The Patch-Mix CL CNN6 has no ``bn0`` nor ``fc1``: 4.31M;
we keep PANNs' head because Table 2 counts it and the checkpoint then
loads by name.)

Example
-------
>>> model = CNN6(channels=(4, 8, 8, 16))
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

import logging

import torch
from speechbrain.utils.checkpoints import (
    mark_as_transfer,
    register_checkpoint_hooks,
)

from speechbrain_rsc.models.checkpoints import (
    load_matching,
    load_state_dict_file,
    weights_file,
)
from speechbrain_rsc.models.frontends import FbankBackbone, FbankFrontEnd

logger = logging.getLogger(__name__)

PANNS_DROPPED = ("fc_audioset.", "spectrogram_extractor.", "logmel_extractor.")


class ConvBlock(torch.nn.Module):
    """5x5 convolution (no bias), batch norm, ReLU, 2x2 average pooling.

    Arguments
    ---------
    in_channels, out_channels : int

    Example
    -------
    >>> ConvBlock(1, 8)(torch.zeros(2, 1, 16, 10)).shape
    torch.Size([2, 8, 8, 5])
    """

    # bn1 reads only conv1's output (see speechbrain_rsc.models.folding)
    batch_norm_folds = (("conv1", "bn1"),)

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


@register_checkpoint_hooks
class CNN6(FbankBackbone):
    """PANNs CNN6 on 128-bin fbank, with a new class head.

    Arguments
    ---------
    n_classes : int
    spec_augment : bool
        Mask the fbank while training.
    spec_augment_p : float
        Probability of masking an utterance (``SpecAugment``'s ``p``).
    spec_augment_shared : bool
        One draw per batch (its ``shared``).
    channels : sequence of int
        Widths of the four blocks (PANNs: 64, 128, 256, 512).
    n_mels : int
    dropout : float
        Dropout before and after the 512-unit layer (PANNs: 0.5).
    block_dropout : float
        Dropout after each block (PANNs: 0.2).
    sample_rate : int, optional
        The data's sample rate, checked against 16000.
    """

    backbone_name = "cnn6"

    def __init__(
        self,
        n_classes=4,
        spec_augment=True,
        spec_augment_p=1.0,
        spec_augment_shared=False,
        channels=(64, 128, 256, 512),
        n_mels=128,
        dropout=0.5,
        block_dropout=0.2,
        sample_rate=None,
    ):
        super().__init__()
        self.check_sample_rate(sample_rate)
        if len(channels) != 4:
            raise ValueError(f"CNN6 has 4 blocks, got channels={channels}")
        self.front_end = FbankFrontEnd(
            self.sample_rate,
            n_mels,
            spec_augment,
            spec_augment_p,
            spec_augment_shared,
        )
        self.bn0 = torch.nn.BatchNorm2d(n_mels)
        widths = [1, *channels]
        for i in range(4):
            block = ConvBlock(widths[i], widths[i + 1])
            self.add_module(f"conv_block{i + 1}", block)
        self.fc1 = torch.nn.Linear(channels[-1], channels[-1])
        self.dropout = torch.nn.Dropout(dropout)
        self.block_dropout = torch.nn.Dropout(block_dropout)
        self.head = torch.nn.Linear(channels[-1], n_classes)

    @mark_as_transfer
    def load_pretrained(self, path):
        """Load a PANNs CNN6 checkpoint (``Cnn6_mAP=0.343.pth``, or a
        folder holding it): keep our head, drop the AudioSet head and the
        extractor, and keep ``bn0`` fresh when its bin count differs from
        ours. The transfer hook SpeechBrain's ``Pretrainer`` calls;
        returns the model.

        Raises
        ------
        FileNotFoundError, CheckpointError
            Naming ``path``.
        """
        path = weights_file(path)
        state = load_state_dict_file(path, key="model")
        allow = ["head."]
        theirs = state.get("bn0.weight")
        if theirs is not None and theirs.shape != self.bn0.weight.shape:
            logger.info(
                "%s: bn0 normalises %d mel bins, ours %d: bn0 starts fresh",
                path,
                theirs.numel(),
                self.bn0.weight.numel(),
            )
            state = {k: v for k, v in state.items() if not k.startswith("bn0.")}
            allow.append("bn0.")
        load_matching(
            self,
            state,
            path,
            allow_missing=allow,
            allow_unexpected=PANNS_DROPPED,
        )
        return self

    def embed(self, wavs):
        """The clip embedding ``[batch, channels[-1]]`` of waveforms."""
        x = self.front_end(wavs)  # [B, T, F]
        x = self.bn0(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1)
        x = x.transpose(1, 2).unsqueeze(1)  # [B, 1, T, F]
        for i in range(1, 5):
            x = self.block_dropout(getattr(self, f"conv_block{i}")(x))
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return torch.relu(self.fc1(self.dropout(x)))

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``lens`` and ``prompts`` unused
        (cycles are standardised to one length).
        """
        return self.head(self.dropout(self.embed(wavs)))
