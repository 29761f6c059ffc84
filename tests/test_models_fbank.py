"""Fbank backbones: front end, SpecAugment, forward/backward, and every
local checkpoint format written in its real key layout.
"""

import json

import pytest
import timm
import torch
import torchaudio
from safetensors.torch import save_file
from transformers import ASTConfig, ASTModel, BertConfig, BertModel

from speechbrain_rsc.models import BACKBONES, build_backbone
from speechbrain_rsc.models import __main__ as table
from speechbrain_rsc.models.ast import AST, crop_positions
from speechbrain_rsc.models.checkpoints import CheckpointError, load_matching
from speechbrain_rsc.models.frontends import (
    FBANK_MEAN,
    FBANK_STD,
    FbankFrontEnd,
    KaldiFbank,
    SpecAugment,
    band_mask,
)

KALDI = dict(
    htk_compat=True,
    sample_frequency=16000,
    use_energy=False,
    window_type="hanning",
    num_mel_bins=128,
    dither=0.0,
    frame_shift=10,
)
SMALL_AST = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
)
FIRST_LAYER = {
    "cnn6": "conv_block1.conv1.weight",
    "resnet18": "net.conv1.weight",
    "efficientnet_b0": "net.conv_stem.weight",
    "ast": "encoder.embeddings.patch_embeddings.projection.weight",
}


# --- front end -------------------------------------------------------------


def test_batched_fbank_equals_kaldi_fbank_per_utterance():
    torch.manual_seed(0)
    wavs = torch.randn(3, 128000) * torch.tensor([[0.01], [0.3], [1.0]])
    raw = KaldiFbank(normalize=False)(wavs)
    assert raw.shape == (3, 798, 128)
    for i in range(3):
        ref = torchaudio.compliance.kaldi.fbank(wavs[i : i + 1], **KALDI)
        assert (raw[i] - ref).abs().max() < 1e-4
    normed = KaldiFbank()(wavs)
    expected = (raw + 4.2677393) / (2 * 4.5689974)
    assert (FBANK_MEAN, FBANK_STD) == (-4.2677393, 4.5689974)
    assert torch.allclose(normed, expected, atol=1e-6)


def test_fbank_frame_count_and_silence_floor():
    wav = torch.zeros(1, 16037)  # not a whole number of hops
    ref = torchaudio.compliance.kaldi.fbank(wav, **KALDI)
    ours = KaldiFbank(normalize=False)(wav)
    assert ours.shape[1] == ref.shape[0] == KaldiFbank().n_frames(16037) == 98
    # silence: every energy sits on Kaldi's floor, log(eps)
    assert torch.allclose(ours[0], ref)
    assert torch.allclose(ours, torch.tensor(1.1920929e-07).log())


def test_fbank_stays_float32_under_autocast():
    torch.manual_seed(1)
    wavs = torch.randn(2, 8000)
    plain = KaldiFbank()(wavs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = KaldiFbank()(wavs)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)


def test_fbank_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        KaldiFbank()(torch.zeros(16000))
    with pytest.raises(ValueError, match="shorter than one 400-sample"):
        KaldiFbank()(torch.zeros(2, 399))


# --- SpecAugment -----------------------------------------------------------


def runs(row):
    """Number of maximal runs of True in a 1-D bool tensor."""
    padded = torch.cat([torch.zeros(1, dtype=torch.bool), row])
    return int((padded[1:] & ~padded[:-1]).sum())


def test_band_mask_draws_widths_below_the_bound_inside_the_range():
    torch.manual_seed(2)
    mask = band_mask(4000, 100, 10, 1)
    widths = mask.sum(dim=1)
    # one band per row: a single run of width 0..9, all values drawn
    assert all(runs(row) <= 1 for row in mask[:200])
    assert set(widths.tolist()) == set(range(10))
    # bands reach both ends of the range
    assert mask[:, 0].any() and mask[:, -1].any()
    two = band_mask(500, 30, 48, 2)  # bound above the size: clamped
    assert all(runs(row) <= 2 for row in two)
    assert band_mask(3, 10, 0, 2).sum() == 0


def test_spec_augment_masks_each_utterance_with_its_own_mean():
    torch.manual_seed(3)
    # per-utterance offsets make each utterance's mean distinct
    feats = torch.randn(6, 798, 128) + torch.arange(6.0).view(6, 1, 1) * 3
    aug = SpecAugment()
    assert aug.eval()(feats) is feats
    out = aug.train()(feats)
    hit_frames = []
    for x, y in zip(feats, out):
        # time-masked frames are constant rows; frequency-masked bins are
        # constant columns elsewhere
        frames = (y == y[:, :1]).all(dim=1)
        bins = (y[~frames] == y[~frames][:1]).all(dim=0)
        assert runs(frames) <= 2 and int(frames.sum()) <= 2 * 159
        assert runs(bins) <= 2 and int(bins.sum()) <= 2 * 47
        expected = x.clone()
        expected[:, bins] = x.mean()
        expected[frames] = expected.mean()
        # equal up to the order of the mean's float sums
        assert (y - expected).abs().max() < 1e-5
        hit_frames.append(frames)
    assert any(int(f.sum()) > 0 for f in hit_frames)
    assert not all(torch.equal(hit_frames[0], f) for f in hit_frames[1:])


def test_spec_augment_probability_and_switch():
    feats = torch.randn(4, 200, 128)
    assert torch.equal(SpecAugment(p=0.0).train()(feats), feats)
    wavs = torch.randn(2, 16000)
    plain = KaldiFbank()(wavs)
    assert FbankFrontEnd(spec_augment=False).spec_augment is None
    assert torch.equal(FbankFrontEnd(spec_augment=False).train()(wavs), plain)
    torch.manual_seed(4)
    masked = FbankFrontEnd(spec_augment=True).train()(wavs)
    assert not torch.equal(masked, plain)
    assert torch.equal(FbankFrontEnd().eval()(wavs), plain)


# --- forward / backward ----------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("cnn6", {"channels": (8, 16, 16, 32)}),
        ("resnet18", {}),
        ("efficientnet_b0", {}),
        ("ast", {**SMALL_AST, "duration": 1.0}),
    ],
)
def test_forward_backward_reach_the_first_layer(name, options):
    torch.manual_seed(5)
    model = build_backbone(name, options).train()
    assert model.sample_rate == 16000
    wavs = torch.randn(3, 16000) * 0.1
    logits = model(wavs, torch.ones(3), ["ignored"] * 3)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    first = dict(model.named_parameters())[FIRST_LAYER[name]]
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(wavs), model(wavs, None, None))


@pytest.mark.parametrize("name", sorted(FIRST_LAYER))
def test_sample_rate_mismatch_is_refused(name):
    cls = BACKBONES[name]
    cls.check_sample_rate(16000)
    with pytest.raises(ValueError, match="takes 16000 Hz audio, got 44100"):
        cls.check_sample_rate(44100)
    with pytest.raises(ValueError, match="got 8000 Hz"):
        build_backbone(name, {"sample_rate": 8000})


def test_cnn6_parameter_count_by_hand():
    convs = 25 * (1 * 64 + 64 * 128 + 128 * 256 + 256 * 512)
    norms = 2 * (128 + 64 + 128 + 256 + 512)
    dense = (512 * 512 + 512) + (512 * 4 + 4)
    assert table.count_parameters(BACKBONES["cnn6"]()) == convs + norms + dense


# --- CNN6: PANNs checkpoint ------------------------------------------------


def batch_norm(prefix, n):
    return {
        f"{prefix}.weight": torch.randn(n),
        f"{prefix}.bias": torch.randn(n),
        f"{prefix}.running_mean": torch.randn(n),
        f"{prefix}.running_var": torch.rand(n) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(1000),
    }


def panns_cnn6_state(mel_bins=64, widths=(64, 128, 256, 512)):
    """PANNs Cnn6's state dict: torchlibrosa extractor, bn0, 4 blocks,
    fc1, AudioSet head.
    """
    state = {
        "spectrogram_extractor.stft.conv_real.weight": torch.randn(513, 1, 8),
        "spectrogram_extractor.stft.conv_imag.weight": torch.randn(513, 1, 8),
        "logmel_extractor.melW": torch.randn(513, mel_bins),
        **batch_norm("bn0", mel_bins),
    }
    chans = (1, *widths)
    for i in range(4):
        block = f"conv_block{i + 1}"
        state[f"{block}.conv1.weight"] = torch.randn(
            chans[i + 1], chans[i], 5, 5
        )
        state.update(batch_norm(f"{block}.bn1", chans[i + 1]))
    state["fc1.weight"] = torch.randn(widths[-1], widths[-1])
    state["fc1.bias"] = torch.randn(widths[-1])
    state["fc_audioset.weight"] = torch.randn(527, widths[-1])
    state["fc_audioset.bias"] = torch.randn(527)
    return state


@pytest.mark.parametrize("n_mels", [128, 64])
def test_cnn6_loads_panns_checkpoint(tmp_path, n_mels):
    torch.manual_seed(6)
    widths = (8, 16, 16, 32)
    state = panns_cnn6_state(widths=widths)
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"model": state, "iteration": 100000}, path)
    torch.manual_seed(0)
    fresh = BACKBONES["cnn6"](channels=widths, n_mels=n_mels)
    torch.manual_seed(0)
    model = BACKBONES["cnn6"](channels=widths, n_mels=n_mels).load_pretrained(
        path
    )
    mine = model.state_dict()
    carried = [k for k in state if k in mine and not k.startswith("bn0.")]
    assert len(carried) == 4 * 6 + 2
    assert all(torch.equal(mine[k], state[k]) for k in carried)
    head = ["head.weight", "head.bias"]
    assert all(torch.equal(mine[k], fresh.state_dict()[k]) for k in head)
    if n_mels == 64:  # PANNs' own bin count: bn0 is loaded too
        assert torch.equal(mine["bn0.running_var"], state["bn0.running_var"])
    else:  # 128 bins: bn0 starts fresh
        assert torch.equal(mine["bn0.weight"], torch.ones(128))
    assert model(torch.zeros(1, 16000)).shape == (1, 4)


def test_wrong_checkpoints_and_missing_files_are_named(tmp_path):
    # a CNN10-like PANNs file (two 3x3 convolutions per block)
    state = panns_cnn6_state(widths=(8, 16, 16, 32))
    state["conv_block1.conv2.weight"] = torch.randn(8, 8, 3, 3)
    state["conv_block1.conv1.weight"] = torch.randn(8, 1, 3, 3)
    path = tmp_path / "Cnn10.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as error:
        BACKBONES["cnn6"](channels=(8, 16, 16, 32)).load_pretrained(path)
    message = str(error.value)
    assert "Cnn10.pth does not fit CNN6" in message
    assert "unexpected (1): conv_block1.conv2.weight" in message
    assert "conv_block1.conv1.weight: (8, 1, 3, 3) in file" in message
    # full-size PANNs weights into a narrow CNN6: shape mismatches
    torch.save({"model": panns_cnn6_state()}, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="wide.pth.*shape mismatch"):
        BACKBONES["cnn6"](channels=(8, 16, 16, 32)).load_pretrained(
            tmp_path / "wide.pth"
        )
    torch.save(state, tmp_path / "flat.pth")
    with pytest.raises(CheckpointError, match="flat.pth: no 'model' entry"):
        BACKBONES["cnn6"]().load_pretrained(tmp_path / "flat.pth")
    for name in FIRST_LAYER:
        with pytest.raises(FileNotFoundError, match="nothing.pth"):
            BACKBONES[name]().load_pretrained(tmp_path / "nothing.pth")


def test_load_matching_refuses_non_tensors_and_keeps_allowed_fresh():
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="src.pth: not a state dict"):
        load_matching(
            layer, {"epoch": 3, "weight": torch.zeros(2, 2)}, "src.pth"
        )
    fresh = load_matching(
        layer,
        {"weight": torch.ones(2, 2), "old_head.w": torch.ones(1)},
        "src.pth",
        allow_missing=["bias"],
        allow_unexpected=["old_head."],
    )
    assert fresh == ["bias"] and torch.equal(layer.weight, torch.ones(2, 2))


# --- ResNet18 / EfficientNet-B0: timm ImageNet files -----------------------


def save_weights(state, path):
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize(
    "name, first, head, filename",
    [
        ("resnet18", "conv1.weight", "fc.", "resnet18.a1_in1k.pth"),
        ("resnet18", "conv1.weight", "fc.", "pytorch_model.bin"),
        (
            "efficientnet_b0",
            "conv_stem.weight",
            "classifier.",
            "model.safetensors",
        ),
    ],
)
def test_timm_imagenet_file_adapts_first_conv_and_drops_classifier(
    tmp_path, name, first, head, filename
):
    torch.manual_seed(7)
    imagenet = timm.create_model(name, num_classes=1000).state_dict()
    assert imagenet[first].shape[1] == 3 and imagenet[f"{head}weight"].shape[0]
    path = tmp_path / filename
    save_weights(imagenet, path)
    model = BACKBONES[name]().load_pretrained(path)
    mine = model.net.state_dict()
    assert torch.allclose(mine[first], imagenet[first].sum(1, keepdim=True))
    assert mine[f"{head}weight"].shape[0] == 4
    rest = [k for k in mine if k != first and not k.startswith(head)]
    assert all(torch.equal(mine[k], imagenet[k]) for k in rest)
    # timm's own local-file route gives the same weights
    via_timm = timm.create_model(
        name,
        pretrained=True,
        in_chans=1,
        num_classes=4,
        pretrained_cfg_overlay=dict(file=str(path)),
    ).state_dict()
    assert all(torch.equal(mine[k], via_timm[k]) for k in rest + [first])
    assert model(torch.zeros(1, 16000)).shape == (1, 4)


def test_timm_wrong_architecture_is_named(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), path)
    with pytest.raises(CheckpointError, match="effnet.pth does not fit ResNet"):
        BACKBONES["resnet18"]().load_pretrained(path)


# --- AST: transformers folders and the original checkpoint -----------------


def middle_columns(positions, t_from=101, t_to=79):
    """Independent reference: keep time columns 11..89 of each of the 12
    frequency rows (patch index f * 101 + t), tokens first.
    """
    start = 50 - 39
    keep = [
        f * t_from + t for f in range(12) for t in range(start, start + t_to)
    ]
    return torch.cat([positions[:, :2], positions[:, 2:][:, keep]], dim=1)


def test_crop_positions_keeps_the_middle_79_of_101_columns():
    positions = torch.randn(1, 2 + 12 * 101, 3)
    cropped = crop_positions(positions, (12, 79))
    assert cropped.shape == (1, 2 + 12 * 79, 3)
    assert torch.equal(cropped, middle_columns(positions))
    with pytest.raises(ValueError, match="12x101 .* 12x102"):
        crop_positions(positions, (12, 102))


def legacy_hub_state(source):
    """An ``ASTModel`` state dict in the layout of the hub copy of
    MIT/ast-finetuned-audioset-10-10-0.4593 (transformers 4 names,
    ``ASTForAudioClassification``).
    """
    names = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
        "layernorm_before": "layernorm_before",
        "layernorm_after": "layernorm_after",
    }
    out = {}
    for key, value in source.items():
        if key.startswith("layers."):
            _, layer, rest = key.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            key = f"encoder.layer.{layer}.{names[module]}.{kind}"
        out[f"audio_spectrogram_transformer.{key}"] = value
    hidden = SMALL_AST["hidden_size"]
    out["classifier.layernorm.weight"] = torch.ones(hidden)
    out["classifier.layernorm.bias"] = torch.zeros(hidden)
    out["classifier.dense.weight"] = torch.randn(527, hidden)
    out["classifier.dense.bias"] = torch.randn(527)
    return out


def assert_ast_weights_arrived(model, source):
    mine = model.encoder.state_dict()
    theirs = source.state_dict()
    assert set(mine) == set(theirs)
    pos = "embeddings.position_embeddings"
    assert theirs[pos].shape == (1, 2 + 12 * 101, SMALL_AST["hidden_size"])
    assert torch.equal(mine[pos], middle_columns(theirs[pos]))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k != pos)


@pytest.mark.parametrize("layout", ["current", "legacy_hub"])
def test_ast_loads_a_transformers_folder(tmp_path, layout):
    torch.manual_seed(8)
    source = ASTModel(ASTConfig(**SMALL_AST, max_length=1024))
    folder = tmp_path / "ast"
    if layout == "current":
        source.save_pretrained(folder)
    else:
        source.config.architectures = ["ASTForAudioClassification"]
        source.config.save_pretrained(folder)
        state = legacy_hub_state(source.state_dict())
        save_file(state, str(folder / "model.safetensors"), {"format": "pt"})
    model = AST(spec_augment=False, **SMALL_AST).load_pretrained(folder)
    assert model.encoder.config.max_length == 798
    assert model.encoder.config.hidden_size == SMALL_AST["hidden_size"]
    assert_ast_weights_arrived(model, source)
    assert model(torch.zeros(1, 128000)).shape == (1, 4)
    with pytest.raises(ValueError, match="built for 798 frames, got 98"):
        model(torch.zeros(1, 16000))


def test_ast_folder_with_other_settings_is_refused_naming_them(tmp_path):
    """The model is built from its options before its weights are read:
    a folder whose config sets a dropout otherwise is refused, not
    half-taken."""
    ASTModel(
        ASTConfig(**SMALL_AST, hidden_dropout_prob=0.3, max_length=1024)
    ).save_pretrained(tmp_path / "ast")
    with pytest.raises(CheckpointError) as error:
        AST(**SMALL_AST).load_pretrained(tmp_path / "ast")
    message = str(error.value)
    assert "hidden_dropout_prob: 0.0 declared, 0.3 in the weights'" in message
    assert '{"hidden_dropout_prob": 0.3}' in message
    model = AST(**SMALL_AST, hidden_dropout_prob=0.3)
    assert model.load_pretrained(tmp_path / "ast") is model


def original_ast_state(source):
    """An ``ASTModel`` state dict in the layout of the original
    audioset_10_10_0.4593.pth (DataParallel ``module.v.*`` with fused qkv,
    DeiT's ImageNet heads and the AudioSet ``mlp_head``).
    """
    top = {
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
    for key, value in source.items():
        if key in top:
            out[f"module.v.{top[key]}"] = value
            continue
        _, layer, rest = key.split(".", 2)
        module, kind = rest.rsplit(".", 1)
        if module in block:
            out[f"module.v.blocks.{layer}.{block[module]}.{kind}"] = value
        elif module == "attention.q_proj":
            fused = [
                source[f"layers.{layer}.attention.{n}_proj.{kind}"]
                for n in "qkv"
            ]
            out[f"module.v.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(fused)
    hidden = SMALL_AST["hidden_size"]
    for head in ("head", "head_dist"):
        out[f"module.v.{head}.weight"] = torch.randn(1000, hidden)
        out[f"module.v.{head}.bias"] = torch.randn(1000)
    out["module.mlp_head.0.weight"] = torch.ones(hidden)
    out["module.mlp_head.0.bias"] = torch.zeros(hidden)
    out["module.mlp_head.1.weight"] = torch.randn(527, hidden)
    out["module.mlp_head.1.bias"] = torch.randn(527)
    return out


def test_ast_loads_the_original_checkpoint(tmp_path):
    torch.manual_seed(9)
    source = ASTModel(ASTConfig(**SMALL_AST, max_length=1024))
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(original_ast_state(source.state_dict()), path)
    model = AST(spec_augment=False, **SMALL_AST).load_pretrained(path)
    assert_ast_weights_arrived(model, source)
    assert model(torch.zeros(1, 128000)).shape == (1, 4)


def test_ast_wrong_files_are_named(tmp_path):
    bad = original_ast_state(
        ASTModel(ASTConfig(**SMALL_AST, max_length=1024)).state_dict()
    )
    bad["module.v.blocks.0.ls1.gamma"] = torch.ones(SMALL_AST["hidden_size"])
    torch.save(bad, tmp_path / "vit.pth")
    with pytest.raises(
        CheckpointError, match=r"vit.pth: not an original AST.*ls1"
    ):
        AST(**SMALL_AST).load_pretrained(tmp_path / "vit.pth")
    # right layout, wrong size: named with the mismatching keys
    torch.save(
        original_ast_state(ASTModel(ASTConfig(**SMALL_AST)).state_dict()),
        tmp_path / "ast.pth",
    )
    with pytest.raises(CheckpointError, match="ast.pth does not fit.*shape"):
        AST(**{**SMALL_AST, "hidden_size": 64}).load_pretrained(
            tmp_path / "ast.pth"
        )
    bert = tmp_path / "bert"
    BertModel(BertConfig(**SMALL_AST)).save_pretrained(bert)
    with pytest.raises(CheckpointError, match="bert: holds a 'bert' model"):
        AST().load_pretrained(bert)
    # an AST config over foreign weights: nothing would load
    config = json.loads((bert / "config.json").read_text())
    ast_config = ASTConfig(**SMALL_AST).to_dict()
    (bert / "config.json").write_text(json.dumps({**config, **ast_config}))
    with pytest.raises(
        CheckpointError, match="bert does not fit ASTModel: missing"
    ):
        AST(**SMALL_AST).load_pretrained(bert)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: no config.json"):
        AST().load_pretrained(tmp_path / "empty")


# --- the parameter table ---------------------------------------------------


def test_parameter_table_counts_and_marks_missing_families(monkeypatch):
    from speechbrain_rsc import models

    assert set(table.TABLE2) == set(BACKBONES)
    monkeypatch.setitem(
        models._REGISTRY, "ghost", ("speechbrain_rsc.models.no_such", "Ghost")
    )
    rows = table.parameter_rows(["cnn6", "ghost"])
    assert rows[0] == (
        "cnn6",
        "4.57M",
        "4.8M",
        "Table 2 counts PANNs CNN6 with its 527-class AudioSet head",
    )
    assert rows[1][:3] == ("ghost", "not available", "-")
    text = table.markdown_table(rows)
    assert text.splitlines()[2].startswith("| cnn6 | 4.57M | 4.8M |")


def test_parameter_table_command_line(capsys):
    from speechbrain_rsc.models.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "BACKBONE" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["nope"])
    assert refused.value.code == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    main(["cnn6"])
    assert "| cnn6 | 4.57M | 4.8M |" in capsys.readouterr().out
