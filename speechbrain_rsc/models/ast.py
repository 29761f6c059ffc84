"""Audio Spectrogram Transformer (transformers ``ASTModel``) on the fbank.

An 8-s cycle gives 798 frames: a 12 x 79 grid of 16x16 patches with stride
10 (AudioSet-pretrained AST was trained on 1024 frames, a 12 x 101 grid).
Pretrained position embeddings are cropped to the middle 79 time columns,
as the AST authors (and Patch-Mix CL) do for shorter inputs.

Pretrained weights, both local:

- a transformers folder (``config.json`` + weights, ``ASTModel`` or
  ``ASTForAudioClassification``);
- the original ``audioset_10_10_0.4593.pth`` (keys ``module.v.*``),
  converted by key mapping.

Example
-------
>>> model = AST(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
...             intermediate_size=64, duration=1.0, spec_augment=False)
>>> model(torch.zeros(2, 16000)).shape
torch.Size([2, 4])
"""

from pathlib import Path

import torch
from transformers import ASTConfig, ASTModel

from speechbrain_rsc.models.checkpoints import (
    CheckpointError,
    load_matching,
    load_state_dict_file,
)
from speechbrain_rsc.models.frontends import FbankFrontEnd

POSITIONS = "embeddings.position_embeddings"


def n_frames(duration, sample_rate=16000):
    """Fbank frames of ``duration`` seconds (25 ms window, 10 ms shift).

    Example
    -------
    >>> n_frames(8.0)
    798
    """
    return 1 + (int(duration * sample_rate) - 400) // 160


def grid(config):
    """(frequency, time) patch counts of an AST config."""
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (config.max_length - config.patch_size) // config.time_stride + 1
    return f, t


def crop_positions(positions, source_grid, target_grid):
    """Crop (middle time columns) position embeddings to a smaller grid.

    Arguments
    ---------
    positions : torch.Tensor
        ``[1, 2 + f * t, dim]`` (cls and distillation tokens first).
    source_grid, target_grid : tuple of int
        (frequency, time) patch counts.
    """
    (f, t), (f2, t2) = source_grid, target_grid
    if (f, t) == (f2, t2):
        return positions
    if f != f2 or t2 > t:
        raise CheckpointError(
            f"cannot fit {f}x{t} position embeddings to a {f2}x{t2} grid"
        )
    tokens, patches = positions[:, :2], positions[:, 2:]
    patches = patches.reshape(1, f, t, -1)
    start = t // 2 - t2 // 2
    patches = patches[:, :, start : start + t2].reshape(1, f * t2, -1)
    return torch.cat([tokens, patches], dim=1)


def convert_original_ast(state):
    """Original AST (``module.v.*``) keys to transformers 5 ``ASTModel`` keys.

    The AudioSet head (``module.mlp_head``) is dropped; fused ``qkv`` is
    split into query, key and value.
    """
    out, unknown = {}, []
    names = {
        "cls_token": "embeddings.cls_token",
        "dist_token": "embeddings.distillation_token",
        "pos_embed": POSITIONS,
        "patch_embed.proj.weight": (
            "embeddings.patch_embeddings.projection.weight"
        ),
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    block = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("mlp_head."):
            continue
        key = key.removeprefix("v.")
        if key in names:
            out[names[key]] = value
            continue
        parts = key.split(".")
        if parts[0] != "blocks" or len(parts) < 4:
            unknown.append(key)
            continue
        layer, rest = parts[1], ".".join(parts[2:])
        prefix = f"layers.{layer}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{prefix}attention.{name}_proj.{kind}"] = chunk
            continue
        module, kind = rest.rsplit(".", 1)
        if module not in block:
            unknown.append(key)
            continue
        out[f"{prefix}{block[module]}.{kind}"] = value
    if unknown:
        raise CheckpointError(
            f"not an original AST checkpoint: unknown keys {unknown[:5]}"
        )
    return out


class AST(torch.nn.Module):
    """AST encoder, mean of its cls/distillation tokens, LayerNorm + Linear.

    Arguments
    ---------
    pretrained_path : str, optional
        A transformers AST folder or an original AST ``.pth``.
    n_classes : int
    spec_augment : bool
    duration : float
        Cycle length in seconds; the model takes exactly that many frames.
    **config
        ``ASTConfig`` options for a random-weight model (e.g. smaller
        ``hidden_size`` in tests); ignored for a transformers folder.
    """

    sample_rate = 16000

    def __init__(
        self,
        pretrained_path=None,
        n_classes=4,
        spec_augment=True,
        duration=8.0,
        **config,
    ):
        super().__init__()
        self.front_end = FbankFrontEnd(self.sample_rate, 128, spec_augment)
        frames = n_frames(duration, self.sample_rate)
        folder = pretrained_path is not None and Path(pretrained_path).is_dir()
        if folder:
            config = ASTConfig.from_pretrained(pretrained_path).to_dict()
        config = ASTConfig(**{**config, "max_length": frames})
        self.encoder = ASTModel(config)
        self.head = torch.nn.Sequential(
            torch.nn.LayerNorm(config.hidden_size),
            torch.nn.Linear(config.hidden_size, n_classes),
        )
        if folder:
            self._load_folder(pretrained_path)
        elif pretrained_path is not None:
            state = convert_original_ast(load_state_dict_file(pretrained_path))
            self._load_encoder(state, pretrained_path, max_length=1024)

    def _load_folder(self, path):
        source = ASTModel.from_pretrained(path, local_files_only=True)
        state = source.state_dict()
        self._load_encoder(state, path, source.config.max_length)

    def _load_encoder(self, state, source, max_length):
        config = self.encoder.config
        source_config = ASTConfig(
            **{**config.to_dict(), "max_length": max_length}
        )
        if POSITIONS in state:
            state[POSITIONS] = crop_positions(
                state[POSITIONS], grid(source_config), grid(config)
            )
        load_matching(self.encoder, state, str(source))

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
        pooled = (hidden[:, 0] + hidden[:, 1]) / 2
        return self.head(pooled)
