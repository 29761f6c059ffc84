"""Fbank backbones: front end, forward/backward, local checkpoint formats."""

import pytest
import timm
import torch
import torchaudio
from transformers import ASTConfig, ASTModel

from speechbrain_rsc.models import BACKBONES, build_backbone
from speechbrain_rsc.models.ast import AST, convert_original_ast
from speechbrain_rsc.models.checkpoints import CheckpointError
from speechbrain_rsc.models.frontends import KaldiFbank, SpecAugment

SMALL_AST = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
)


def test_batched_fbank_equals_kaldi():
    torch.manual_seed(0)
    wavs = torch.randn(3, 16000 * 2) * 0.1
    ours = KaldiFbank(normalize=False)(wavs)
    for i in range(3):
        ref = torchaudio.compliance.kaldi.fbank(
            wavs[i : i + 1],
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        assert ours[i].shape == ref.shape == (198, 128)
        assert torch.allclose(ours[i], ref, atol=2e-3)
    assert KaldiFbank()(torch.zeros(1, 128000)).shape == (1, 798, 128)


def test_spec_augment_masks_with_the_mean_in_training_only():
    torch.manual_seed(0)
    feats = torch.randn(4, 798, 128)
    aug = SpecAugment()
    assert torch.equal(aug.eval()(feats), feats)
    masked = aug.train()(feats)
    changed = masked != feats
    assert changed.any()
    # a masked cell holds the utterance mean (time masks first, then the
    # frequency masks take the mean of the time-masked utterance)
    for i in range(4):
        values = masked[i][changed[i]]
        assert values.unique().numel() <= 2
        assert (values - feats[i].mean()).abs().max() < 0.01
        frames_hit = changed[i].all(dim=1).sum().item()
        bins_hit = changed[i].all(dim=0).sum().item()
        assert frames_hit <= 2 * 160 and bins_hit <= 2 * 48


@pytest.mark.parametrize(
    "name, options",
    [
        ("cnn6", {"channels": (8, 16, 16, 32)}),
        ("resnet18", {}),
        ("efficientnet_b0", {}),
        ("ast", {**SMALL_AST, "duration": 1.0}),
    ],
)
def test_forward_backward(name, options):
    torch.manual_seed(0)
    model = build_backbone(name, options).train()
    assert model.sample_rate == 16000
    logits = model(torch.randn(2, 16000) * 0.1, torch.ones(2))
    assert logits.shape == (2, 4)
    logits.sum().backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_cnn6_loads_panns_checkpoint(tmp_path):
    torch.manual_seed(1)
    source = BACKBONES["cnn6"](spec_augment=False)
    state = {
        k.replace("front_end.", "spectrogram_extractor."): v
        for k, v in source.state_dict().items()
        if not k.startswith("head.")
    }
    state["fc_audioset.weight"] = torch.randn(527, 512)
    state["fc_audioset.bias"] = torch.randn(527)
    state["bn0.weight"] = torch.randn(64)  # PANNs' 64-bin bn0
    state["bn0.bias"] = torch.randn(64)
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"model": state, "iteration": 1}, path)
    model = BACKBONES["cnn6"](pretrained_path=path)
    mine = model.state_dict()
    for key in (
        "conv_block1.conv1.weight",
        "conv_block4.bn1.running_var",
        "fc1.weight",
    ):
        assert torch.equal(mine[key], source.state_dict()[key])
    assert mine["bn0.weight"].shape == (128,)


def test_wrong_checkpoint_and_missing_file_are_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"model": timm.create_model("resnet18").state_dict()}, path)
    with pytest.raises(CheckpointError, match="resnet.pth does not fit CNN6"):
        BACKBONES["cnn6"](pretrained_path=path)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        BACKBONES["cnn6"](pretrained_path=tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="no pretrained_path"):
        build_backbone("cnn6", use_pretrained=True)


@pytest.mark.parametrize(
    "name, timm_name, first, suffix",
    [
        ("resnet18", "resnet18", "conv1.weight", ".pth"),
        (
            "efficientnet_b0",
            "efficientnet_b0",
            "conv_stem.weight",
            ".safetensors",
        ),
    ],
)
def test_timm_imagenet_weights_adapt_first_conv(
    tmp_path, name, timm_name, first, suffix
):
    torch.manual_seed(2)
    imagenet = timm.create_model(timm_name, num_classes=1000).state_dict()
    path = tmp_path / f"imagenet{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(imagenet, str(path))
    else:
        torch.save(imagenet, path)
    model = BACKBONES[name](pretrained_path=path)
    mine = model.net.state_dict()
    assert torch.allclose(mine[first], imagenet[first].sum(1, keepdim=True))
    shared = [k for k in mine if k in imagenet and k != first]
    shared = [k for k in shared if mine[k].shape == imagenet[k].shape]
    assert len(shared) > 50
    assert all(torch.equal(mine[k], imagenet[k]) for k in shared)
    assert model(torch.zeros(1, 16000)).shape == (1, 4)


def original_ast_state(hf_state):
    """Write an HF AST state dict back in the original AST key layout."""
    inverse = {
        "embeddings.cls_token": "cls_token",
        "embeddings.distillation_token": "dist_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": (
            "patch_embed.proj.weight"
        ),
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    block = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out = {}
    for key, value in hf_state.items():
        if key in inverse:
            out[f"module.v.{inverse[key]}"] = value
            continue
        _, layer, rest = key.split(".", 2)
        module, kind = rest.rsplit(".", 1)
        if module in (
            "attention.q_proj",
            "attention.k_proj",
            "attention.v_proj",
        ):
            continue
        out[f"module.v.blocks.{layer}.{block[module]}.{kind}"] = value
    layers = {k.split(".")[1] for k in hf_state if k.startswith("layers.")}
    for layer in sorted(layers):
        for kind in ("weight", "bias"):
            parts = [
                hf_state[f"layers.{layer}.attention.{n}_proj.{kind}"]
                for n in "qkv"
            ]
            out[f"module.v.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
    out["module.mlp_head.1.weight"] = torch.randn(527, 32)
    return out


def cropped(positions, t_from=101, t_to=79):
    tokens, patches = positions[:, :2], positions[:, 2:]
    patches = patches.reshape(1, 12, t_from, -1)
    start = t_from // 2 - t_to // 2
    return torch.cat(
        [tokens, patches[:, :, start : start + t_to].reshape(1, 12 * t_to, -1)],
        dim=1,
    )


def test_ast_loads_hf_folder_and_crops_positions(tmp_path):
    torch.manual_seed(3)
    source = ASTModel(ASTConfig(**SMALL_AST, max_length=1024))
    source.save_pretrained(tmp_path / "ast")
    model = AST(pretrained_path=tmp_path / "ast", spec_augment=False)
    mine = model.encoder.state_dict()
    theirs = source.state_dict()
    pos = "embeddings.position_embeddings"
    assert theirs[pos].shape[1] == 2 + 12 * 101
    assert torch.equal(mine[pos], cropped(theirs[pos]))
    key = "layers.0.attention.q_proj.weight"
    assert torch.equal(mine[key], theirs[key])
    assert model(torch.zeros(1, 128000)).shape == (1, 4)
    with pytest.raises(ValueError, match="built for 798 frames"):
        model(torch.zeros(1, 16000))


def test_ast_loads_original_checkpoint(tmp_path):
    torch.manual_seed(4)
    source = ASTModel(ASTConfig(**SMALL_AST, max_length=1024))
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(original_ast_state(source.state_dict()), path)
    model = AST(pretrained_path=path, spec_augment=False, **SMALL_AST)
    mine = model.encoder.state_dict()
    theirs = source.state_dict()
    for key in theirs:
        if key.endswith("position_embeddings"):
            assert torch.equal(mine[key], cropped(theirs[key]))
        else:
            assert torch.equal(mine[key], theirs[key]), key
    bad = {"module.v.blocks.0.weird.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unknown keys"):
        convert_original_ast(bad)
