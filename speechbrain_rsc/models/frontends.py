"""Fbank front end and SpecAugment of the CNN and AST backbones.

The fbank is Kaldi's (as ``torchaudio.compliance.kaldi.fbank`` with 128
bins, 25 ms Hann window, 10 ms shift, no dither), computed for the whole
batch in one tensor expression, then normalised as in the de facto ICBHI
pipeline. 8 s at 16 kHz gives 798 frames.

Example
-------
>>> fbank = KaldiFbank()
>>> fbank(torch.zeros(2, 16000 * 8)).shape
torch.Size([2, 798, 128])
"""

import torch
from speechbrain.augment.freq_domain import SpectrogramDrop
from torchaudio.compliance.kaldi import get_mel_banks

FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974


class KaldiFbank(torch.nn.Module):
    """Batched Kaldi log-mel filterbank, normalised.

    Arguments
    ---------
    sample_rate : int
    n_mels : int
    frame_length_ms : float
    frame_shift_ms : float
    normalize : bool
        Apply ``(x - FBANK_MEAN) / (2 * FBANK_STD)``.
    """

    def __init__(
        self,
        sample_rate=16000,
        n_mels=128,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        normalize=True,
    ):
        super().__init__()
        self.win = int(sample_rate * frame_length_ms / 1000)
        self.hop = int(sample_rate * frame_shift_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()
        banks, _ = get_mel_banks(
            n_mels,
            self.n_fft,
            float(sample_rate),
            20.0,
            0.0,
            100.0,
            -500.0,
            1.0,
        )
        # Kaldi's banks omit the Nyquist bin; it gets weight 0.
        banks = torch.nn.functional.pad(banks, (0, 1))
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)
        window = torch.hann_window(
            self.win, periodic=False, dtype=torch.float64
        )
        self.register_buffer("window", window.float(), persistent=False)
        self.normalize = normalize

    def forward(self, wavs):
        """``[batch, samples]`` -> ``[batch, frames, n_mels]``."""
        frames = wavs.float().unfold(-1, self.win, self.hop)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - 0.97 * previous) * self.window
        spectrum = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)
        mel = spectrum @ self.banks
        feats = mel.clamp_min(torch.finfo(torch.float32).eps).log()
        if self.normalize:
            feats = (feats - FBANK_MEAN) / (2 * FBANK_STD)
        return feats


class SpecAugment(torch.nn.Module):
    """Frequency and time masks filled with the mean, training only.

    Defaults are the ICBHI pipeline's: 2 frequency masks of up to 48 bins
    and 2 time masks of up to 160 frames, no time warp.

    Example
    -------
    >>> aug = SpecAugment().train()
    >>> x = torch.randn(2, 798, 128)
    >>> bool((aug(x) != x).any()), bool((aug.eval()(x) == x).all())
    (True, True)
    """

    def __init__(self, freq_mask=48, time_mask=160, n_freq=2, n_time=2):
        super().__init__()
        self.time = SpectrogramDrop(
            drop_length_low=0,
            drop_length_high=time_mask,
            drop_count_low=n_time,
            drop_count_high=n_time,
            replace="mean",
            dim=1,
        )
        self.freq = SpectrogramDrop(
            drop_length_low=0,
            drop_length_high=freq_mask,
            drop_count_low=n_freq,
            drop_count_high=n_freq,
            replace="mean",
            dim=2,
        )

    def forward(self, feats):
        """Masked ``feats`` ``[batch, frames, bins]`` in training mode."""
        if not self.training:
            return feats
        # SpectrogramDrop writes into its input.
        return self.freq(self.time(feats.clone()))


class FbankFrontEnd(torch.nn.Module):
    """Waveforms to normalised fbank, masked by SpecAugment when training.

    The front end every fbank backbone owns (CNN6, ResNet18,
    EfficientNet-B0, AST).

    Example
    -------
    >>> FbankFrontEnd(spec_augment=False)(torch.zeros(1, 16000)).shape
    torch.Size([1, 98, 128])
    """

    def __init__(self, sample_rate=16000, n_mels=128, spec_augment=True):
        super().__init__()
        self.fbank = KaldiFbank(sample_rate, n_mels)
        self.spec_augment = SpecAugment() if spec_augment else None

    def forward(self, wavs):
        """``[batch, samples]`` -> ``[batch, frames, n_mels]``."""
        feats = self.fbank(wavs)
        if self.spec_augment is not None and self.training:
            feats = self.spec_augment(feats)
        return feats
