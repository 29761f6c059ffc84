"""Audio Spectrogram Transformer (transformers ``ASTModel``) on the fbank.

An 8-s cycle gives 798 frames: a 12 x 79 grid of 16x16 patches with stride
10 (AudioSet-pretrained AST was trained on 1024 frames, a 12 x 101 grid).
Pretrained position embeddings keep the middle 79 time columns (11 to 89),
as the AST authors and Patch-Mix CL do for shorter inputs; the cls and
distillation positions are kept as they are.

Pretrained weights, loaded by :meth:`AST.load_pretrained` (the
``Pretrainer`` fetches hub IDs and URLs first):

- a transformers folder (``config.json`` + weights) of an ``ASTModel`` or
  ``ASTForAudioClassification``, such as the hub snapshot of
  ``MIT/ast-finetuned-audioset-10-10-0.4593``; transformers converts
  older key layouts itself, the audio classifier is dropped;
- the original ``audioset_10_10_0.4593.pth`` (keys ``module.v.*``),
  converted by key mapping, ``qkv`` split into query, key and value;
  its AudioSet head ``mlp_head`` and DeiT's unused ImageNet heads
  ``v.head``, ``v.head_dist`` are dropped.

Parameters: 85.99M (798 frames, 4-class head). The paper's Table 2 says
87.7M, which is what the original AST has at 1024 frames (86.19M) plus
DeiT's two unused 1000-class heads (1.54M).

Example
-------
>>> model = AST(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
...             intermediate_size=64, duration=1.0, spec_augment=False)
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

import json
import logging
from pathlib import Path

import torch
from speechbrain.utils.checkpoints import (
    mark_as_transfer,
    register_checkpoint_hooks,
)
from transformers import ASTConfig, ASTModel
from transformers.utils import logging as hf_logging

from speechbrain_rsc.models.checkpoints import (
    CheckpointError,
    check_architecture,
    check_settings,
    load_matching,
    load_state_dict_file,
)
from speechbrain_rsc.models.frontends import FbankBackbone, FbankFrontEnd

logger = logging.getLogger(__name__)

POSITIONS = "embeddings.position_embeddings"
AST_MODEL_TYPE = "audio-spectrogram-transformer"


def n_frames(duration, sample_rate=16000):
    """Fbank frames of ``duration`` seconds (25 ms window, 10 ms shift).

    Example
    -------
    >>> n_frames(8.0)
    798
    """
    return 1 + (int(round(duration * sample_rate)) - 400) // 160


def grid(config):
    """(frequency, time) patch counts of an ``ASTConfig``.

    Example
    -------
    >>> grid(ASTConfig(max_length=798))
    (12, 79)
    """
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride
    t = (config.max_length - config.patch_size) // config.time_stride
    return f + 1, t + 1


def crop_positions(positions, target_grid):
    """Keep the middle time columns of AST position embeddings.

    Arguments
    ---------
    positions : torch.Tensor
        ``[1, 2 + f * t, dim]``: cls and distillation tokens first, then
        patches frequency-major; ``t`` is inferred.
    target_grid : tuple of int
        (frequency, time) patch counts wanted, ``f`` equal, time <= ``t``.

    Returns
    -------
    torch.Tensor
        ``[1, 2 + f * t2, dim]``, time columns ``t // 2 - t2 // 2`` onward.

    Example
    -------
    >>> pos = torch.arange(2 + 2 * 5.0).view(1, -1, 1)
    >>> crop_positions(pos, (2, 3)).flatten().tolist()
    [0.0, 1.0, 3.0, 4.0, 5.0, 8.0, 9.0, 10.0]
    """
    f, t2 = target_grid
    n = positions.shape[1] - 2
    if n % f:
        raise ValueError(
            f"{n} patch positions do not form a grid of {f} frequency rows"
        )
    t = n // f
    if t2 > t:
        raise ValueError(
            f"cannot fit {f}x{t} position embeddings to a {f}x{t2} grid"
        )
    tokens, patches = positions[:, :2], positions[:, 2:]
    start = t // 2 - t2 // 2
    patches = patches.reshape(1, f, t, -1)[:, :, start : start + t2]
    return torch.cat([tokens, patches.reshape(1, f * t2, -1)], dim=1)


ORIGINAL_NAMES = {
    "cls_token": "embeddings.cls_token",
    "dist_token": "embeddings.distillation_token",
    "pos_embed": POSITIONS,
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
ORIGINAL_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
# AudioSet head, and DeiT's ImageNet heads the AST code never uses.
ORIGINAL_DROPPED = ("mlp_head.", "v.head.", "v.head_dist.")


def convert_original_ast(state, source="checkpoint"):
    """Original AST (``module.v.*``) keys to transformers ``ASTModel`` keys.

    Arguments
    ---------
    state : dict
        The original state dict (with or without the ``module.`` prefix).
    source : str
        Named in errors.

    Returns
    -------
    dict
        ``ASTModel`` keys (``layers.N.attention.q_proj`` ...) -> tensors.

    Example
    -------
    >>> qkv = torch.arange(6.0).view(6, 1)
    >>> out = convert_original_ast({"module.v.blocks.0.attn.qkv.weight": qkv})
    >>> out["layers.0.attention.k_proj.weight"].flatten().tolist()
    [2.0, 3.0]
    """
    out, unknown = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(ORIGINAL_DROPPED):
            continue
        key = key.removeprefix("v.")
        if key in ORIGINAL_NAMES:
            out[ORIGINAL_NAMES[key]] = value
            continue
        parts = key.split(".")
        if parts[0] != "blocks" or len(parts) < 4:
            unknown.append(key)
            continue
        prefix, rest = f"layers.{parts[1]}.", ".".join(parts[2:])
        module, kind = rest.rsplit(".", 1)
        if module == "attn.qkv":
            for name, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{prefix}attention.{name}_proj.{kind}"] = chunk
        elif module in ORIGINAL_BLOCK:
            out[f"{prefix}{ORIGINAL_BLOCK[module]}.{kind}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source}: not an original AST checkpoint, unknown keys "
            f"{unknown[:5]}"
        )
    return out


# The ASTConfig options that decide the network's tensors.
ARCHITECTURE = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "frequency_stride",
    "time_stride",
    "num_mel_bins",
)


def ast_architecture(config):
    """The sizes of an ``ASTConfig`` (:data:`ARCHITECTURE`).

    Example
    -------
    >>> ast_architecture(ASTConfig())["hidden_size"]
    768
    """
    return {key: getattr(config, key) for key in ARCHITECTURE}


def read_folder_config(path):
    """The ``ASTConfig`` of a transformers folder, refusing other models.

    Raises
    ------
    CheckpointError
        No ``config.json``, or not an AST one.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json, not a model folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != AST_MODEL_TYPE:
        raise CheckpointError(
            f"{path}: holds a '{model_type}' model, not '{AST_MODEL_TYPE}'"
        )
    return ASTConfig.from_pretrained(path, local_files_only=True)


def load_folder_state(path):
    """The ``ASTModel`` state dict of a transformers folder, refusing
    missing or foreign weights (an audio classifier is dropped).

    Returns
    -------
    dict
    """
    # The loading info is checked below; transformers' own report of the
    # dropped classifier is noise (on stdout where logs go there).
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = ASTModel.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    foreign = [
        k for k in info["unexpected_keys"] if not k.startswith("classifier.")
    ]
    problems = {
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(foreign),
        "shape mismatch": sorted(str(k) for k in info["mismatched_keys"]),
    }
    problems = {name: keys for name, keys in problems.items() if keys}
    if problems:
        raise CheckpointError(
            f"{path} does not fit ASTModel: "
            + "; ".join(f"{n} ({len(k)}): {k[:6]}" for n, k in problems.items())
        )
    dropped = len(info["unexpected_keys"]) - len(foreign)
    if dropped:
        logger.info(
            "%s: its audio classifier (%d tensors) is dropped", path, dropped
        )
    return model.state_dict()


@register_checkpoint_hooks
class AST(FbankBackbone):
    """AST encoder, mean of its cls/distillation tokens, LayerNorm + Linear.

    Arguments
    ---------
    n_classes : int
    spec_augment : bool
    spec_augment_p : float
        Probability of masking an utterance (``SpecAugment``'s ``p``).
    spec_augment_shared : bool
        One draw per batch (its ``shared``).
    duration : float
        Cycle length in seconds; the model takes exactly that many frames.
    sample_rate : int, optional
        The data's sample rate, checked against 16000.
    **config
        ``ASTConfig`` options (``hidden_size``, ``num_hidden_layers``,
        ``num_attention_heads``, ``intermediate_size``, dropout rates
        ...), ``ASTConfig``'s defaults where they say nothing: they
        declare the network; pretrained weights of other sizes or
        settings are refused, naming them (:meth:`load_pretrained`).

    Attributes
    ----------
    architecture : dict
        The options that pin this network's sizes (recorded on export).
    """

    backbone_name = "ast"

    def __init__(
        self,
        n_classes=4,
        spec_augment=True,
        spec_augment_p=1.0,
        spec_augment_shared=False,
        duration=8.0,
        sample_rate=None,
        **config,
    ):
        super().__init__()
        self.check_sample_rate(sample_rate)
        frames = n_frames(duration, self.sample_rate)
        config = ASTConfig(**{**config, "max_length": frames})
        self.architecture = ast_architecture(config)
        self.front_end = FbankFrontEnd(
            self.sample_rate,
            config.num_mel_bins,
            spec_augment,
            spec_augment_p,
            spec_augment_shared,
        )
        self.encoder = ASTModel(config)
        self.head = torch.nn.Sequential(
            torch.nn.LayerNorm(config.hidden_size),
            torch.nn.Linear(config.hidden_size, n_classes),
        )

    @mark_as_transfer
    def load_pretrained(self, path):
        """Load pretrained encoder weights: a transformers folder (its
        ``config.json`` must declare this network: same sizes and
        settings, but its input length) or an original AST ``.pth``.
        The transfer hook SpeechBrain's ``Pretrainer`` calls; returns the model.

        Raises
        ------
        CheckpointError
            Naming ``path`` and what differs.
        """
        if Path(path).is_dir():
            own = read_folder_config(path)
            declared = self.encoder.config
            check_architecture(
                path,
                ast_architecture(declared),
                ast_architecture(own),
                "the model's options",
            )
            check_settings(
                path, declared, own, "the model's options", ["max_length"]
            )
            self.load_encoder(load_folder_state(path), path)
        else:
            state = convert_original_ast(load_state_dict_file(path), path)
            self.load_encoder(state, path)
        return self

    def load_encoder(self, state, source):
        """Load ``ASTModel`` weights, cropping their position embeddings
        to this model's grid.
        """
        if POSITIONS in state:
            try:
                state[POSITIONS] = crop_positions(
                    state[POSITIONS], grid(self.encoder.config)
                )
            except ValueError as error:
                raise CheckpointError(f"{source}: {error}") from error
        load_matching(self.encoder, state, source)

    def forward(self, wavs, lens=None, prompts=None):
        """Logits ``[batch, n_classes]``; ``lens``, ``prompts`` unused."""
        feats = self.front_end(wavs)
        expected = self.encoder.config.max_length
        if feats.shape[1] != expected:
            raise ValueError(
                f"AST was built for {expected} frames, got {feats.shape[1]}: "
                "set its duration option to the prepared cycle duration"
            )
        hidden = self.encoder(input_values=feats).last_hidden_state
        return self.head((hidden[:, 0] + hidden[:, 1]) / 2)
