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

import math

import torch
from torchaudio.compliance.kaldi import get_mel_banks

from speechbrain_rsc.models.backbone import Backbone

FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974
PREEMPHASIS = 0.97
# Kaldi floors the mel energies at float32's epsilon before the log.
LOG_FLOOR = torch.finfo(torch.float32).eps
# The ICBHI code masks when ``1.0 >= torch.randn(1)``: with probability
# Phi(1), the standard normal CDF at 1.
REFERENCE_SPEC_AUGMENT_P = 0.5 * (1 + math.erf(1 / math.sqrt(2)))


class KaldiFbank(torch.nn.Module):
    """Batched Kaldi log-mel filterbank, normalised.

    Equal to ``torchaudio.compliance.kaldi.fbank(wav, htk_compat=True,
    use_energy=False, window_type="hanning", dither=0.0)`` per utterance:
    frames with ``snip_edges``, DC offset removed, pre-emphasis 0.97, Hann
    window, power spectrum, Kaldi mel banks (20 Hz to Nyquist), log.
    Always computed in float32, also under autocast.

    Arguments
    ---------
    sample_rate : int
    n_mels : int
    frame_length_ms : float
    frame_shift_ms : float
    normalize : bool
        Apply ``(x - FBANK_MEAN) / (2 * FBANK_STD)``.

    Example
    -------
    >>> KaldiFbank().n_frames(16000)
    98
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
        # low 20 Hz, high 0 (Nyquist), VTLN off
        banks, _ = get_mel_banks(
            n_mels, self.n_fft, sample_rate, 20.0, 0.0, 100.0, -500.0, 1.0
        )
        # Kaldi's banks omit the Nyquist bin; it gets weight 0.
        banks = torch.nn.functional.pad(banks, (0, 1))
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)
        # float32 like torchaudio's, so the two agree to the last bit
        window = torch.hann_window(self.win, periodic=False)
        self.register_buffer("window", window, persistent=False)
        self.normalize = normalize

    def n_frames(self, n_samples):
        """Frames of a signal of ``n_samples`` (Kaldi's ``snip_edges``)."""
        return 1 + (n_samples - self.win) // self.hop

    def forward(self, wavs):
        """``[batch, samples]`` -> ``[batch, frames, n_mels]`` float32."""
        if wavs.dim() != 2:
            raise ValueError(
                f"expected waveforms [batch, samples], got {tuple(wavs.shape)}"
            )
        if wavs.shape[1] < self.win:
            raise ValueError(
                f"{wavs.shape[1]} samples is shorter than one "
                f"{self.win}-sample fbank window"
            )
        with torch.autocast(wavs.device.type, enabled=False):
            return self._fbank(wavs.float())

    def _fbank(self, wavs):
        frames = wavs.unfold(-1, self.win, self.hop)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        # Kaldi's pre-emphasis uses a frame's first sample as its own
        # predecessor.
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window
        power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)
        feats = (power @ self.banks).clamp_min(LOG_FLOOR).log()
        if self.normalize:
            feats = (feats - FBANK_MEAN) / (2 * FBANK_STD)
        return feats


def band_mask(batch, size, max_width, count, device=None):
    """Union of ``count`` random bands per row, as the ICBHI pipeline draws
    them: width uniform in ``[0, max_width)``, start uniform in
    ``[0, size - width]`` (a band never runs off the end).

    Arguments
    ---------
    batch, size : int
        Rows and positions per row.
    max_width : int
        Exclusive upper bound of a band's width.
    count : int
        Bands per row (drawn independently, may overlap).
    device : torch.device, optional

    Returns
    -------
    torch.Tensor
        Bool ``[batch, size]``.

    Example
    -------
    >>> mask = band_mask(4, 100, 10, 2)
    >>> mask.shape, bool(mask.sum(dim=1).le(18).all())
    (torch.Size([4, 100]), True)
    """
    if max_width < 1 or count < 1:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    widths = torch.randint(0, max_width, (batch, count), device=device)
    widths = widths.clamp_max(size)
    room = (size - widths + 1).float()
    starts = (torch.rand(batch, count, device=device) * room).long()
    starts = torch.minimum(starts, size - widths)
    positions = torch.arange(size, device=device)
    inside = (positions >= starts[..., None]) & (
        positions < (starts + widths)[..., None]
    )
    return inside.any(dim=1)


class SpecAugment(torch.nn.Module):
    """Frequency then time masks filled with the utterance mean, training
    only (the ICBHI pipeline's "icbhi_ast_sup" policy, no time warp).

    Not ``speechbrain.augment.freq_domain.SpectrogramDrop``: its "mean"
    fill is one mean of the whole batch, and a band may start anywhere and
    get cut at the end; here every utterance is filled with its own mean
    and bands are drawn as the ICBHI pipeline does (see :func:`band_mask`).
    As there, the frequency masks take the mean of the input and the time
    masks the mean of the frequency-masked utterance.

    Arguments
    ---------
    freq_mask : int
        Exclusive bound of a frequency band's width (48 bins).
    time_mask : int
        Exclusive bound of a time band's width (160 frames).
    n_freq_masks, n_time_masks : int
    p : float
        Probability that an utterance (a batch, if ``shared``) is masked at
        all. The ICBHI code tests ``1.0 >= torch.randn(1)``, which masks
        with probability ``REFERENCE_SPEC_AUGMENT_P`` (Phi(1) = 0.8413);
        1.0 masks always.
    shared : bool
        Draw once per batch: whether to mask, the bands, and the fill (the
        mean of the whole batch), as that code does when it is handed a
        batch instead of one utterance. ``False``: each utterance draws its
        own, as the ICBHI pipeline's per-cycle transform does.

    Example
    -------
    >>> aug = SpecAugment().train()
    >>> x = torch.randn(2, 798, 128)
    >>> bool((aug(x) != x).any()), aug.eval()(x) is x
    (True, True)
    """

    def __init__(
        self,
        freq_mask=48,
        time_mask=160,
        n_freq_masks=2,
        n_time_masks=2,
        p=1.0,
        shared=False,
    ):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"SpecAugment p must be in [0, 1], not {p}")
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.n_freq_masks = n_freq_masks
        self.n_time_masks = n_time_masks
        self.p = p
        self.shared = shared

    def forward(self, feats):
        """Masked ``feats`` ``[batch, frames, bins]`` in training mode."""
        if not self.training:
            return feats
        batch, frames, bins = feats.shape
        draws = 1 if self.shared else batch
        dims = (0, 1, 2) if self.shared else (1, 2)
        chosen = torch.rand(draws, 1, device=feats.device) < self.p
        freq = band_mask(
            draws, bins, self.freq_mask, self.n_freq_masks, feats.device
        )
        feats = _fill_mean(feats, (freq & chosen)[:, None, :], dims)
        time = band_mask(
            draws, frames, self.time_mask, self.n_time_masks, feats.device
        )
        return _fill_mean(feats, (time & chosen)[:, :, None], dims)


def _fill_mean(feats, mask, dims):
    mean = feats.mean(dim=dims, keepdim=True)
    return torch.where(mask, mean, feats)


class FbankFrontEnd(torch.nn.Module):
    """Waveforms to normalised fbank, masked by SpecAugment when training.

    The front end every fbank backbone owns (CNN6, ResNet18,
    EfficientNet-B0, AST).

    Arguments
    ---------
    sample_rate : int
    n_mels : int
    spec_augment : bool
        Add :class:`SpecAugment` (active in training mode only).
    spec_augment_p, spec_augment_shared
        Its ``p`` and ``shared``.

    Example
    -------
    >>> FbankFrontEnd(spec_augment=False)(torch.zeros(1, 16000)).shape
    torch.Size([1, 98, 128])
    """

    def __init__(
        self,
        sample_rate=16000,
        n_mels=128,
        spec_augment=True,
        spec_augment_p=1.0,
        spec_augment_shared=False,
    ):
        super().__init__()
        self.fbank = KaldiFbank(sample_rate, n_mels)
        self.spec_augment = None
        if spec_augment:
            self.spec_augment = SpecAugment(
                p=spec_augment_p, shared=spec_augment_shared
            )

    def forward(self, wavs):
        """``[batch, samples]`` -> ``[batch, frames, n_mels]``."""
        feats = self.fbank(wavs)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats)
        return feats


class FbankBackbone(Backbone):
    """Base of the backbones fed 16 kHz audio through :class:`FbankFrontEnd`.

    Example
    -------
    >>> FbankBackbone.check_sample_rate(44100)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: FbankBackbone takes 16000 Hz audio, got 44100 Hz: ...
    """

    sample_rate = 16000

    @classmethod
    def check_sample_rate(cls, rate):
        """Refuse audio at any ``rate`` but :attr:`sample_rate` (``None``
        is not checked).
        """
        if rate is not None and rate != cls.sample_rate:
            raise ValueError(
                f"{cls.__name__} takes {cls.sample_rate} Hz audio, got "
                f"{rate} Hz: prepare the data at {cls.sample_rate} Hz"
            )
