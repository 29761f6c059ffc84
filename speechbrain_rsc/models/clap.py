"""CLAP-family backbones: Audio-CLAP and BTS (Kim et al., Interspeech 2024).

Both wrap transformers' CLAP (``laion/clap-htsat-unfused``: HTSAT-tiny
audio encoder, RoBERTa text encoder, 512-d projections), fine-tune every
weight and add a linear class head:

- :class:`AudioCLAP`: the audio tower only (``ClapAudioModelWithProjection``,
  as the BTS code's Audio-CLAP), ``audio_embeds`` (512) -> ``Linear(512, 4)``.
  The text tower is not built: it would only cost memory.
- :class:`BTS`: the whole ``ClapModel``; the L2-normalised text and audio
  embeddings, concatenated (1024) -> ``Linear(1024, 4)``. The text is the
  recording's metadata prompt (:func:`~speechbrain_rsc.data.prompts.
  bts_prompt`).

Each backbone computes CLAP's log-mel features itself, batched on the
waveform's device (:class:`ClapFeatures`), and BTS tokenizes its prompts
itself (64 tokens, cached per prompt).

Pretrained weights (``load_pretrained``, the transfer hook SpeechBrain's
``Pretrainer`` calls) are either a local folder in Hugging Face layout
(``ClapModel.save_pretrained``, or the hub snapshot of
``laion/clap-htsat-unfused`` that the ``Pretrainer`` fetches by default;
with the tokenizer beside it for BTS) or an original LAION-CLAP ``.pt``
checkpoint such as
``630k-audioset-best.pt`` (renamed by
:mod:`speechbrain_rsc.models.laion_convert`; BTS then needs
``tokenizer_path``). Without weights both build offline at full size with
random weights; BTS then uses a stand-in offline prompt tokenizer
(:mod:`speechbrain_rsc.models.clap_tokenizer`), with a warning.

Example
-------
>>> small = {
...     "projection_dim": 8,
...     "audio_config": {"patch_embeds_hidden_size": 4, "hidden_size": 32,
...                      "depths": [1, 1, 1, 1],
...                      "num_attention_heads": [1, 1, 1, 1]},
...     "text_config": {"vocab_size": 400, "hidden_size": 8,
...                     "num_hidden_layers": 1, "num_attention_heads": 1,
...                     "intermediate_size": 16,
...                     "max_position_embeddings": 66},
... }
>>> model = BTS(clap_config=small)
>>> prompts = ["This sound was recorded from the trachea of a patient."] * 2
>>> model(torch.zeros(2, 4800), prompts=prompts).shape
torch.Size([2, 4])
"""

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from speechbrain.utils.checkpoints import (
    mark_as_transfer,
    register_checkpoint_hooks,
)

from speechbrain_rsc.atomic import with_umask_mode
from speechbrain_rsc.models.backbone import Backbone
from speechbrain_rsc.models.checkpoints import (
    CheckpointError,
    check_architecture,
    check_settings,
    load_matching,
    load_state_dict_file,
)
from speechbrain_rsc.models.clap_tokenizer import (
    build_prompt_tokenizer,
    check_tokenizer,
    load_tokenizer,
    tokenizer_from_tensor,
    tokenizer_to_tensor,
)
from speechbrain_rsc.models.laion_convert import (
    DERIVED_BUFFERS,
    convert_laion_clap_state_dict,
    load_laion_checkpoint,
)
from speechbrain_rsc.models.weights import CLAP_SOURCE

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
WINDOW_SECONDS = 10
N_FFT = 1024
HOP_LENGTH = 480
N_MELS = 64
F_MIN = 50.0
F_MAX = 14000.0
POWER_FLOOR = 1e-10
TEXT_MAX_LENGTH = 64
_TEXT_PREFIXES = ("text_model.", "text_projection.", "logit_scale_")
STAND_IN = "offline prompt tokenizer"


class ClapFeatures(torch.nn.Module):
    """CLAP's log-mel spectrogram of a 10 s window, batched in torch.

    Reproduces ``ClapFeatureExtractor`` as configured for
    ``laion/clap-htsat-unfused`` (``truncation="rand_trunc"``, no fusion;
    ``padding="repeatpad"``; 50-14000 Hz): a signal shorter than 10 s is
    tiled a whole number of times (``repeatpad``; ``pad`` skips this),
    then zero-padded to 10 s (an 8 s cycle is tiled once, i.e. only
    padded); a longer one is cropped to 10 s, at a random offset while
    training (as ``rand_trunc``) and from its start in eval mode. Then a
    centred (reflect-padded) STFT, periodic Hann window of 1024, hop 480,
    power spectrum, 64 Slaney-scale, Slaney-normalised mel filters,
    ``10 * log10(max(mel, 1e-10))``. Features are computed in float32
    with autocast off, where the extractor uses float64 numpy: values
    agree to about 1e-3 dB, except in mel bins some 70 dB or more below a
    frame's loudest bin, where float32 rounding dominates (the original
    LAION-CLAP also computed its features in float32).

    Arguments
    ---------
    padding : str
        ``"repeatpad"`` (CLAP's default) or ``"pad"`` (zeros only).

    Example
    -------
    >>> features = ClapFeatures()
    >>> features(torch.zeros(2, 48000 * 8)).shape
    torch.Size([2, 1, 1001, 64])
    """

    def __init__(self, padding="repeatpad"):
        super().__init__()
        if padding not in ("repeatpad", "pad"):
            raise ValueError(
                f"padding must be 'repeatpad' or 'pad', not '{padding}'"
            )
        from transformers.audio_utils import mel_filter_bank

        self.padding = padding
        self.n_samples = SAMPLE_RATE * WINDOW_SECONDS
        filters = mel_filter_bank(
            num_frequency_bins=N_FFT // 2 + 1,
            num_mel_filters=N_MELS,
            min_frequency=F_MIN,
            max_frequency=F_MAX,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer(
            "mel_filters", torch.from_numpy(filters).float(), persistent=False
        )
        self.register_buffer(
            "window", torch.hann_window(N_FFT, periodic=True), persistent=False
        )

    def fit_window(self, wavs, lens=None):
        """Tile, pad or crop each signal to exactly 10 s.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        lens : torch.Tensor, optional
            Relative lengths in ``(0, 1]``; the rest of a row is padding.

        Returns
        -------
        torch.Tensor
            ``[batch, 480000]``.

        Example
        -------
        >>> features = ClapFeatures()
        >>> wavs = torch.tensor([[1.0, 2, 3, 0, 0, 0, 0], list(range(1, 8))])
        >>> out = features.fit_window(wavs, torch.tensor([3 / 7, 1.0]))
        >>> out[:, :9].int().tolist()
        [[1, 2, 3, 1, 2, 3, 1, 2, 3], [1, 2, 3, 4, 5, 6, 7, 1, 2]]
        >>> out[:, -4:].int().tolist()  # 480000 = 7 * 68571 + 3
        [[3, 1, 2, 3], [7, 0, 0, 0]]
        """
        batch, total = wavs.shape
        device = wavs.device
        if lens is None:
            lengths = torch.full((batch,), total, device=device)
        else:
            lengths = torch.round(lens.to(device).double() * total).long()
            lengths = lengths.clamp(1, total)
        overflow = (lengths - self.n_samples).clamp_min(0)
        if self.training:
            start = torch.rand(batch, device=device) * (overflow + 1)
            start = start.long().clamp_max(overflow)
        else:
            start = torch.zeros_like(lengths)
        if self.padding == "repeatpad":
            repeats = (self.n_samples // lengths).clamp_min(1)
        else:
            repeats = torch.ones_like(lengths)
        filled = torch.clamp_max(repeats * lengths, self.n_samples)
        steps = torch.arange(self.n_samples, device=device)
        index = start[:, None] + steps[None] % lengths[:, None]
        out = wavs.gather(1, index.clamp_max(total - 1))
        return out * (steps[None] < filled[:, None])

    def forward(self, wavs, lens=None):
        """``[batch, samples]`` at 48 kHz -> ``[batch, 1, 1001, 64]``."""
        if wavs.dim() != 2:
            raise ValueError(
                f"expected waveforms [batch, samples], got {tuple(wavs.shape)}"
            )
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            signal = self.fit_window(wavs.float(), lens)
            spectrum = torch.stft(
                signal,
                N_FFT,
                HOP_LENGTH,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spectrum.real.square() + spectrum.imag.square()
            mel = power.transpose(1, 2) @ self.mel_filters
            feats = 10.0 * torch.log10(mel.clamp_min(POWER_FLOOR))
        return feats.unsqueeze(1)


class PromptTokenizer(torch.nn.Module):
    """Prompts -> padded token ids and attention mask, cached per prompt.

    The tokenizer travels in the module's state dict (as a compressed
    ``uint8`` tensor under ``_extra_state``), so weights trained with one
    tokenizer are never read with another's ids: loading a state dict
    replaces the tokenizer when it differs.

    Arguments
    ---------
    tokenizer : transformers tokenizer (fast)
    vocab_size : int
        Rows of the text model's embedding table.
    pad_token_id : int
        The text model's padding id.
    max_length : int
        Pad and truncate to this many tokens (BTS: 64).
    source : str
        Where the tokenizer came from, for error messages.

    Example
    -------
    >>> from speechbrain_rsc.models.clap_tokenizer import (
    ...     build_prompt_tokenizer,
    ... )
    >>> tokens = PromptTokenizer(build_prompt_tokenizer(), 512, 1, 8)
    >>> ids, mask = tokens(["a cat", "a cat"], torch.device("cpu"))
    >>> ids.shape, mask.tolist()[0]
    (torch.Size([2, 8]), [1, 1, 1, 1, 1, 1, 0, 0])
    """

    def __init__(
        self,
        tokenizer,
        vocab_size,
        pad_token_id,
        max_length=TEXT_MAX_LENGTH,
        source="tokenizer",
    ):
        super().__init__()
        check_tokenizer(tokenizer, vocab_size, pad_token_id, source)
        self.tokenizer = tokenizer
        self.source = source
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self._cache = {}
        self._serialised = None

    def forward(self, prompts, device):
        """Token ids and attention mask ``[batch, max_length]`` on
        ``device``.
        """
        missing = sorted(set(prompts) - set(self._cache))
        if missing:
            self._encode(missing)
        ids = torch.tensor([self._cache[p][0] for p in prompts])
        mask = torch.tensor([self._cache[p][1] for p in prompts])
        return ids.to(device), mask.to(device)

    def _encode(self, prompts):
        full = self.tokenizer(prompts)["input_ids"]
        for prompt, ids in zip(prompts, full):
            if len(ids) > self.max_length:
                logger.warning(
                    "prompt truncated from %d to %d tokens: '%s'",
                    len(ids),
                    self.max_length,
                    prompt,
                )
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
        )
        for prompt, ids, mask in zip(
            prompts, batch["input_ids"], batch["attention_mask"]
        ):
            self._cache[prompt] = (ids, mask)

    def get_extra_state(self):
        """The tokenizer, serialised."""
        if self._serialised is None:
            self._serialised = tokenizer_to_tensor(self.tokenizer)
        return self._serialised

    def set_extra_state(self, state):
        """Adopt the tokenizer a state dict was saved with."""
        if torch.equal(state.cpu(), self.get_extra_state()):
            return
        tokenizer = tokenizer_from_tensor(state)
        check_tokenizer(
            tokenizer, self.vocab_size, self.pad_token_id, "state dict"
        )
        logger.info(
            "BTS prompt tokenizer replaced by the one stored with the "
            "weights (%d tokens)",
            len(tokenizer),
        )
        self.tokenizer = tokenizer
        self.source = "state dict"
        self._cache = {}
        self._serialised = state.cpu().clone()


def _read_hf_weights(folder):
    """The state dict of a Hugging Face model folder (sharded or not)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_state_dict_file(folder / name)
    for name in (
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ):
        index = folder / name
        if index.is_file():
            shards = json.loads(index.read_text(encoding="utf-8"))
            state = {}
            for shard in sorted(set(shards["weight_map"].values())):
                state.update(load_state_dict_file(folder / shard))
            return state
    raise CheckpointError(
        f"{folder}: no model.safetensors or pytorch_model.bin (a folder "
        "written by ClapModel.save_pretrained is expected)"
    )


def _read_hf_config(folder):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{folder}: no readable config.json ({error})"
        ) from error


def _derived_keys(module):
    """Keys of ``module`` holding buffers computed from its configuration."""
    return [
        k
        for k in module.state_dict()
        if any(p.search(k) for p in DERIVED_BUFFERS)
    ]


def _save_folder(folder, write):
    """Run ``write(tmp_folder)``, then move its files into ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.")
    with_umask_mode(tmp)
    try:
        write(tmp)
        folder.mkdir(exist_ok=True)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class ClapSource:
    """Pretrained CLAP weights as read: their config (None for a LAION
    ``.pt``, which has none), their tensors (in ``ClapModel`` names) and
    the folder of their prompt tokenizer (None: none comes with them).
    """

    config: object  # transformers ClapConfig (or ClapAudioConfig), or None
    state: dict
    tokenizer_folder: str = None


# The ClapConfig options that decide the network's tensors.
AUDIO_ARCHITECTURE = (
    "hidden_size",
    "depths",
    "num_attention_heads",
    "patch_embeds_hidden_size",
    "window_size",
    "spec_size",
    "num_mel_bins",
    "patch_size",
    "patch_stride",
    "projection_dim",
    "enable_fusion",
)
TEXT_ARCHITECTURE = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "projection_dim",
)


def clap_architecture(config):
    """The sizes of a ``ClapConfig`` (or of its ``ClapAudioConfig``), as
    ``clap_config`` options.

    Example
    -------
    >>> from transformers import ClapConfig
    >>> clap_architecture(ClapConfig())["audio_config"]["depths"]
    [2, 2, 6, 2]
    """

    def sizes(part, keys):
        # as JSON gives them back: config.json reads (4, 4) as [4, 4]
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in ((k, getattr(part, k)) for k in keys)
        }

    audio = getattr(config, "audio_config", config)
    found = {
        "audio_config": sizes(audio, AUDIO_ARCHITECTURE),
        "projection_dim": config.projection_dim,
    }
    if hasattr(config, "text_config"):
        found["text_config"] = sizes(config.text_config, TEXT_ARCHITECTURE)
    return found


def read_clap_source(path, allow_unsafe_pickle=False):
    """The :class:`ClapSource` of pretrained weights: a Hugging Face
    folder (config, weights and tokenizer) or a LAION-CLAP ``.pt``
    (weights only, renamed; its ``config`` is None).

    Raises
    ------
    FileNotFoundError
        ``path`` is neither.
    """
    path = Path(path)
    if path.is_dir():
        config = _read_hf_config(path)
        return ClapSource(config, _read_hf_weights(path), str(path))
    if path.is_file():
        laion = load_laion_checkpoint(path, allow_unsafe_pickle)
        state = convert_laion_clap_state_dict(laion)
        return ClapSource(None, state)
    raise FileNotFoundError(f"pretrained weights not found: {path}")


_warned_stand_in = False  # see BTS._warn_if_stand_in


class _ClapBackbone(Backbone):
    """What Audio-CLAP and BTS share: the front end, the head, loading."""

    sample_rate = SAMPLE_RATE

    def __init__(self, n_classes, embed_dim, padding, allow_unsafe_pickle):
        super().__init__()
        self.features = ClapFeatures(padding)
        self.head = torch.nn.Linear(embed_dim, n_classes)
        self.allow_unsafe_pickle = allow_unsafe_pickle

    def _read_pretrained(self, path):
        """The :class:`ClapSource` of ``path``, refusing a folder whose
        config declares another network than ``self.clap``'s.
        """
        from transformers import ClapAudioConfig

        source = read_clap_source(path, self.allow_unsafe_pickle)
        found, declared = source.config, self.clap.config
        if found is None:  # a LAION .pt: its tensors are checked on load
            return source
        option = "clap_config"
        if isinstance(declared, ClapAudioConfig):
            found = getattr(found, "audio_config", found)
            option = "clap_config.audio_config"
        if type(found) is not type(declared):
            raise CheckpointError(
                f"{path}: {type(self).__name__} needs a full ClapModel "
                f"(text and audio), found a {type(found).__name__}"
            )
        check_architecture(
            path,
            clap_architecture(declared),
            clap_architecture(found),
            "clap_config",
        )
        check_settings(path, declared, found, option)
        return source

    def _load_clap(self, state, source):
        """Load ``state`` (ClapModel names) into ``self.clap``, refusing
        any mismatch but derived buffers left out.
        """
        load_matching(
            self.clap,
            state,
            str(source),
            allow_missing=_derived_keys(self.clap),
        )
        logger.info("Loaded %d CLAP tensors from %s", len(state), source)

    def save_pretrained(self, folder):
        """Write the CLAP part (not the class head) in Hugging Face
        layout, loadable by ``load_pretrained``; BTS adds its tokenizer.
        A trained model is saved whole by
        :func:`speechbrain_rsc.trained_model.save_weights`.
        """
        _save_folder(folder, self._write_pretrained)

    def _write_pretrained(self, folder):
        self.clap.save_pretrained(folder)


@register_checkpoint_hooks
class AudioCLAP(_ClapBackbone):
    """Audio-CLAP: CLAP's audio tower and projection, then a linear head.

    ``audio_embeds`` (512, not normalised, as the BTS code's
    ``ClapAudioModelWithProjection``) -> ``Linear(512, n_classes)``.
    Prompts are ignored; no text tower is built (28.2M parameters at full
    size, the 28M of the paper's Table 2).

    Arguments
    ---------
    n_classes : int
    clap_config : dict, optional
        ``transformers.ClapConfig`` arguments (``audio_config`` dict,
        ``projection_dim``) for a smaller model; default: the full
        HTSAT-tiny of ``laion/clap-htsat-unfused``.
    padding : str
        :class:`ClapFeatures` padding, ``"repeatpad"`` or ``"pad"``.
    allow_unsafe_pickle : bool
        Read a LAION ``.pt`` with ``torch.load(weights_only=False)`` when
        the safe reader refuses it (trusted files only).

    Example
    -------
    >>> small = {"projection_dim": 8, "audio_config": {
    ...     "patch_embeds_hidden_size": 4, "hidden_size": 32,
    ...     "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1]}}
    >>> AudioCLAP(clap_config=small)(torch.zeros(1, 4800)).shape
    torch.Size([1, 4])
    """

    backbone_name = "audio_clap"

    def __init__(
        self,
        n_classes=4,
        clap_config=None,
        padding="repeatpad",
        allow_unsafe_pickle=False,
    ):
        from transformers import ClapAudioModelWithProjection, ClapConfig

        config = ClapConfig(**(clap_config or {})).audio_config
        super().__init__(
            n_classes, config.projection_dim, padding, allow_unsafe_pickle
        )
        self.clap = ClapAudioModelWithProjection(config)
        self.architecture = {"clap_config": clap_architecture(config)}

    @mark_as_transfer
    def load_pretrained(self, path):
        """Load CLAP weights: a Hugging Face folder (of a ``ClapModel`` or
        ``ClapAudioModelWithProjection``) declaring this network, or a
        LAION-CLAP ``.pt``; text weights in it are skipped. The transfer
        hook SpeechBrain's ``Pretrainer`` calls; returns the model.
        """
        state = self._read_pretrained(path).state
        dropped = [k for k in state if k.startswith(_TEXT_PREFIXES)]
        logger.info(
            "Audio-CLAP: skipping %d text-tower tensors of %s",
            len(dropped),
            path,
        )
        state = {k: v for k, v in state.items() if k not in dropped}
        self._load_clap(state, path)
        return self

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``prompts`` unused."""
        feats = self.features(wavs, lens)
        embeds = self.clap(input_features=feats).audio_embeds
        return self.head(embeds)


@register_checkpoint_hooks
class BTS(_ClapBackbone):
    """BTS: CLAP text and audio embeddings of a cycle and its metadata
    prompt, concatenated, then a linear head.

    The L2-normalised ``text_embeds`` and ``audio_embeds`` of transformers'
    ``ClapModel`` (512 each) -> ``Linear(1024, n_classes)``: 153.5M
    parameters at full size (the paper's 153M). Every weight is trained
    except the two contrastive temperatures ``logit_scale_a``/``_t``,
    which the classifier never uses (frozen, so DDP sees no unused
    trainable parameter).

    Tokenizer: ``tokenizer_path`` when given; else pretrained weights in
    a Hugging Face folder (a hub snapshot of ``laion/clap-htsat-unfused``,
    say) bring theirs (:meth:`load_pretrained`); a LAION ``.pt`` brings
    none, so it needs ``tokenizer_path``. Until then, BTS tokenizes with
    an **offline byte-level BPE tokenizer trained on all BTS prompts**
    (384 tokens, not RoBERTa's: a stand-in for random-weight runs only,
    logged as a warning at the first prompts it tokenizes). A loaded
    tokenizer must pass :func:`~speechbrain_rsc.models.clap_tokenizer.
    check_tokenizer`. The tokenizer is saved in the state dict and
    restored with it.

    Arguments
    ---------
    n_classes : int
    clap_config : dict, optional
        ``transformers.ClapConfig`` arguments for a smaller model; default:
        ``laion/clap-htsat-unfused``'s.
    tokenizer_path : str, optional
        Folder holding the tokenizer (HF layout); overrides the one of
        the pretrained weights.
    max_text_length : int
        Tokens per prompt, padded and truncated (BTS: 64).
    padding : str
        :class:`ClapFeatures` padding, ``"repeatpad"`` or ``"pad"``.
    allow_unsafe_pickle : bool
        Read a LAION ``.pt`` with ``torch.load(weights_only=False)`` when
        the safe reader refuses it (trusted files only).
    """

    backbone_name = "bts"

    def __init__(
        self,
        n_classes=4,
        clap_config=None,
        tokenizer_path=None,
        max_text_length=TEXT_MAX_LENGTH,
        padding="repeatpad",
        allow_unsafe_pickle=False,
    ):
        from transformers import ClapConfig, ClapModel

        config = ClapConfig(**(clap_config or {}))
        text = config.text_config
        if text.max_position_embeddings < max_text_length + 2:
            raise ValueError(
                f"max_text_length {max_text_length} needs "
                f"max_position_embeddings >= {max_text_length + 2} "
                f"(RoBERTa positions start after the padding id), got "
                f"{text.max_position_embeddings}"
            )
        super().__init__(
            n_classes, 2 * config.projection_dim, padding, allow_unsafe_pickle
        )
        self.clap = ClapModel(config)
        self.architecture = {"clap_config": clap_architecture(config)}
        for scale in (self.clap.logit_scale_a, self.clap.logit_scale_t):
            scale.requires_grad_(False)
        self.tokenizer_path = tokenizer_path
        self.max_text_length = max_text_length
        if tokenizer_path is not None:
            self._use_tokenizer(tokenizer_path)
        else:
            self.prompt_tokenizer = self._prompt_tokenizer(
                build_prompt_tokenizer(), STAND_IN
            )

    def _prompt_tokenizer(self, tokenizer, source):
        text = self.clap.config.text_config
        return PromptTokenizer(
            tokenizer,
            text.vocab_size,
            text.pad_token_id,
            self.max_text_length,
            source,
        )

    def _use_tokenizer(self, folder):
        text = self.clap.config.text_config
        tokenizer = load_tokenizer(folder, text.vocab_size, text.pad_token_id)
        self.prompt_tokenizer = self._prompt_tokenizer(tokenizer, str(folder))

    @mark_as_transfer
    def load_pretrained(self, path):
        """Load CLAP weights (a Hugging Face ``ClapModel`` folder declaring
        this network, or a LAION-CLAP ``.pt``) and, unless
        ``tokenizer_path`` was given, the folder's tokenizer. The transfer
        hook SpeechBrain's ``Pretrainer`` calls; returns the model.

        Raises
        ------
        CheckpointError
            The weights declare another network or are audio-only.
        ValueError
            A LAION ``.pt`` without ``tokenizer_path``: its text tower was
            trained with RoBERTa's ids.
        """
        source = self._read_pretrained(path)
        if self.tokenizer_path is None:
            if source.tokenizer_folder is None:
                raise ValueError(
                    f"{path} is a LAION-CLAP checkpoint without a "
                    "tokenizer: set tokenizer_path to a folder holding the "
                    "RoBERTa tokenizer (e.g. written by `ClapProcessor."
                    f"from_pretrained('{CLAP_SOURCE}').tokenizer."
                    "save_pretrained(folder)` on a machine with network "
                    "access)"
                )
            self._use_tokenizer(source.tokenizer_folder)
        self._load_clap(source.state, path)
        return self

    def _warn_if_stand_in(self):
        global _warned_stand_in
        if self.prompt_tokenizer.source != STAND_IN or _warned_stand_in:
            return
        _warned_stand_in = True  # once per process, not once per model
        logger.warning(
            "BTS prompts are tokenized by the stand-in offline byte-level "
            "BPE (clap_tokenizer.build_prompt_tokenizer), not the RoBERTa "
            "tokenizer of %s: right for random weights only",
            CLAP_SOURCE,
        )

    @property
    def tokenizer(self):
        """The transformers tokenizer of the prompts."""
        return self.prompt_tokenizer.tokenizer

    def _write_pretrained(self, folder):
        self.clap.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]`` from waveforms and their prompts.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at 48 kHz.
        lens : torch.Tensor, optional
            Relative lengths.
        prompts : list of str
            One metadata prompt per waveform (required).
        """
        if prompts is None:
            raise ValueError(
                "BTS needs one text prompt per waveform (prompts=None); "
                "give the metadata prompts of the batch"
            )
        if isinstance(prompts, str) or len(prompts) != len(wavs):
            count = (
                "a single string"
                if isinstance(prompts, str)
                else (f"{len(prompts)} prompts")
            )
            raise ValueError(
                f"BTS needs one prompt per waveform: {len(wavs)} waveforms "
                f"but {count}"
            )
        self._warn_if_stand_in()
        feats = self.features(wavs, lens)
        audio = self.clap.audio_model(input_features=feats).pooler_output
        audio = self.clap.audio_projection(audio)
        ids, mask = self.prompt_tokenizer(prompts, wavs.device)
        text = self.clap.text_model(input_ids=ids, attention_mask=mask)
        text = self.clap.text_projection(text.pooler_output)
        embeds = torch.cat(
            [
                torch.nn.functional.normalize(text, dim=-1),
                torch.nn.functional.normalize(audio, dim=-1),
            ],
            dim=-1,
        )
        return self.head(embeds)
