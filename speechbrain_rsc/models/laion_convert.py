"""LAION-CLAP checkpoints (``630k-audioset-best.pt``) -> transformers names.

The original checkpoint holds ``{"state_dict": ...}`` with keys under
``module.`` (DDP): ``audio_branch`` (HTSAT), ``text_branch`` (RoBERTa),
``audio_projection``/``text_projection`` (``nn.Sequential`` of Linear,
ReLU, Linear) and ``logit_scale_a``/``logit_scale_t``. transformers'
``ClapModel`` names them differently and splits each HTSAT ``qkv`` linear
into ``query``/``key``/``value``. Parts ClapModel has no place for are
dropped on purpose: HTSAT's own STFT/log-mel layers (we compute features
in the backbone), its AudioSet heads (``tscam_conv``, ``head``), the
shifted-window ``attn_mask`` buffers (recomputed) and the joint-space MLPs
``audio_transform``/``text_transform`` (unused by ClapModel). Any other
key is an error.

Buffers that are a pure function of the configuration
(``text_model.embeddings.position_ids``, ``token_type_ids`` and HTSAT's
``relative_position_index``) may be absent: the original ``load_ckpt``
fails on checkpoints without ``position_ids``; :data:`DERIVED_BUFFERS`
lets the loader keep the model's own values instead.

The laion-clap package is not needed.

Example
-------
>>> import torch
>>> state = {
...     "module.logit_scale_a": torch.tensor(2.0),
...     "module.audio_projection.2.bias": torch.zeros(3),
...     "module.audio_branch.layers.0.blocks.1.attn.qkv.bias": torch.arange(6.),
... }
>>> hf = convert_laion_clap_state_dict(state)
>>> sorted(hf)[:2]
['audio_model.audio_encoder.layers.0.blocks.1.attention.self.key.bias', \
'audio_model.audio_encoder.layers.0.blocks.1.attention.self.query.bias']
>>> hf["audio_model.audio_encoder.layers.0.blocks.1.attention.self.key.bias"]
tensor([2., 3.])
>>> hf["audio_projection.linear2.bias"].shape
torch.Size([3])
"""

import logging
import re
from pathlib import Path

import torch

from speechbrain_rsc.models.checkpoints import (
    CheckpointError,
    load_state_dict_file,
)

logger = logging.getLogger(__name__)

_AUDIO = "audio_model.audio_encoder."

# Keys with no counterpart in transformers' ClapModel, dropped on purpose.
DROPPED = (
    re.compile(r"^audio_branch\.(spectrogram_extractor|logmel_extractor)\."),
    re.compile(r"^audio_branch\.(tscam_conv|head)\."),
    re.compile(r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$"),
    re.compile(r"^(audio|text)_transform\."),
)

# ClapModel buffers computed from the configuration alone.
DERIVED_BUFFERS = (
    re.compile(r"^text_model\.embeddings\.(position_ids|token_type_ids)$"),
    re.compile(r"\.attention\.self\.relative_position_index$"),
)

# HTSAT block sub-module -> ClapAudioLayer sub-module.
_BLOCK_PARTS = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "attn.relative_position_bias_table": (
        "attention.self.relative_position_bias_table"
    ),
    "attn.relative_position_index": "attention.self.relative_position_index",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}

_BLOCK = re.compile(
    r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.(?P<part>"
    + "|".join(re.escape(p) for p in sorted(_BLOCK_PARTS, key=len)[::-1])
    + r")(?P<tail>\.weight|\.bias|)$"
)
_QKV = re.compile(
    r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"
)
_RENAMES = (
    (re.compile(r"^audio_branch\.bn0\.(.+)$"), _AUDIO + r"batch_norm.\1"),
    (
        re.compile(r"^audio_branch\.patch_embed\.(proj|norm)\.(weight|bias)$"),
        _AUDIO + r"patch_embed.\1.\2",
    ),
    (
        re.compile(
            r"^audio_branch\.layers\.(\d+)\.downsample\."
            r"(reduction|norm)\.(weight|bias)$"
        ),
        _AUDIO + r"layers.\1.downsample.\2.\3",
    ),
    (re.compile(r"^audio_branch\.norm\.(weight|bias)$"), _AUDIO + r"norm.\1"),
    (
        re.compile(r"^(audio|text)_projection\.0\.(weight|bias)$"),
        r"\1_projection.linear1.\2",
    ),
    (
        re.compile(r"^(audio|text)_projection\.2\.(weight|bias)$"),
        r"\1_projection.linear2.\2",
    ),
    (re.compile(r"^(logit_scale_[at])$"), r"\1"),
    (
        re.compile(
            r"^text_branch\.((embeddings|pooler|encoder\.layer\.\d+)\..+)$"
        ),
        r"text_model.\1",
    ),
)


def _strip_module(key):
    return key[len("module.") :] if key.startswith("module.") else key


def _split_qkv(match, value):
    """Split HTSAT's fused ``qkv`` (rows q, k, v) into three tensors."""
    layer, block, kind = match.groups()
    if value.shape[0] % 3:
        raise CheckpointError(
            f"qkv {kind} of layer {layer} block {block} has "
            f"{value.shape[0]} rows, not a multiple of 3"
        )
    prefix = f"{_AUDIO}layers.{layer}.blocks.{block}.attention.self."
    return {
        f"{prefix}{name}.{kind}": part.clone()
        for name, part in zip(("query", "key", "value"), value.chunk(3))
    }


def _rename(key):
    """The ClapModel name of one (non-qkv) LAION key, or None."""
    block = _BLOCK.match(key)
    if block is not None:
        layer, index = block.group(1), block.group(2)
        part = _BLOCK_PARTS[block.group("part")]
        return (
            f"{_AUDIO}layers.{layer}.blocks.{index}.{part}{block.group('tail')}"
        )
    for pattern, target in _RENAMES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def convert_laion_clap_state_dict(state_dict):
    """Rename a LAION-CLAP state dict to transformers ``ClapModel`` keys.

    Arguments
    ---------
    state_dict : dict
        The checkpoint's ``"state_dict"`` (keys with or without
        ``module.``).

    Returns
    -------
    dict
        ClapModel key -> tensor. Derived buffers missing from the input
        are missing from the output too (see :data:`DERIVED_BUFFERS`).

    Raises
    ------
    CheckpointError
        Listing every key neither mapped nor knowingly dropped.

    Example
    -------
    >>> convert_laion_clap_state_dict({"module.clap.x": torch.zeros(1)})
    Traceback (most recent call last):
        ...
    speechbrain_rsc.models.checkpoints.CheckpointError: 1 LAION-CLAP key(s) \
have no transformers ClapModel counterpart: clap.x
    """
    converted, unmapped, dropped = {}, [], 0
    for raw_key, value in state_dict.items():
        key = _strip_module(raw_key)
        if any(p.match(key) for p in DROPPED):
            dropped += 1
            continue
        qkv = _QKV.match(key)
        if qkv is not None:
            converted.update(_split_qkv(qkv, value))
            continue
        new_key = _rename(key)
        if new_key is None:
            unmapped.append(key)
        else:
            converted[new_key] = value
    if unmapped:
        hint = ""
        if any("fusion_model" in k or "mel_conv2d" in k for k in unmapped):
            hint = (
                " (a fusion checkpoint: use an unfused one such as "
                "630k-audioset-best.pt)"
            )
        raise CheckpointError(
            f"{len(unmapped)} LAION-CLAP key(s) have no transformers "
            f"ClapModel counterpart{hint}: {', '.join(sorted(unmapped))}"
        )
    logger.info(
        "LAION-CLAP conversion: %d tensors mapped, %d dropped on purpose",
        len(converted),
        dropped,
    )
    return converted


def _numpy_scalar_globals():
    """Allow-list entries for numpy scalars (an ``epoch`` or a metric
    stored as ``np.int64``/``np.float64``) under old and new module names.
    """
    import numpy

    scalar = numpy._core.multiarray.scalar
    kinds = "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64"
    kinds += " float16 float32 float64"
    dtype_classes = [type(numpy.dtype(kind)) for kind in kinds.split()]
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        numpy.dtype,
        *dtype_classes,
    ]


def load_laion_checkpoint(path, allow_unsafe_pickle=False):
    """Read the ``state_dict`` of a LAION-CLAP ``.pt`` checkpoint.

    Three readers are tried in turn:

    1. ``torch.load(weights_only=True)`` (tensors, numbers, strings,
       dicts), as every weight file of this project;
    2. the same with numpy scalars and dtypes allow-listed: training
       scripts often store ``epoch`` or a metric as a numpy scalar;
    3. only if ``allow_unsafe_pickle``: ``torch.load(weights_only=False)``,
       which can run arbitrary code while unpickling: for a file from a
       trusted source that pickles other objects (e.g. an ``argparse``
       namespace) or uses pickle opcodes the safe reader does not parse
       (protocol 4 framing). Without the flag the error says so.

    Arguments
    ---------
    path : str or Path
    allow_unsafe_pickle : bool

    Returns
    -------
    dict
        The LAION key -> tensor dict (keys as stored, ``module.`` kept).
    """
    path = Path(path)
    try:
        checkpoint = load_state_dict_file(path)
    except CheckpointError as error:
        checkpoint = _load_with_numpy_scalars(path)
        if checkpoint is None:
            if not allow_unsafe_pickle:
                raise CheckpointError(
                    f"{error}. If this LAION-CLAP file comes from a trusted "
                    "source, pass allow_unsafe_pickle=True to read it with "
                    "torch.load(weights_only=False)"
                ) from error
            logger.warning(
                "%s: reading with torch.load(weights_only=False) "
                "(allow_unsafe_pickle=True)",
                path,
            )
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=False
            )
    state = checkpoint
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        torch.is_tensor(v) for v in state.values()
    ):
        raise CheckpointError(f"{path}: no LAION-CLAP state_dict of tensors")
    return state


def _load_with_numpy_scalars(path):
    """``torch.load(weights_only=True)`` allowing numpy scalars, or None."""
    import pickle

    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):
        return None
    logger.info("%s: read with numpy scalars allow-listed", path)
    return checkpoint
