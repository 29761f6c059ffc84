"""Audio-CLAP and BTS: front end, forward/backward, loading, conversion."""

import argparse
import logging

import numpy as np
import pytest
import torch
from conftest import TINY_CLAP

# conftest.py sets HF_HUB_OFFLINE=1: nothing here may reach a hub.
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    RobertaTokenizer,
)

from speechbrain_rsc.data.prompts import bts_prompt
from speechbrain_rsc.models import BACKBONES
from speechbrain_rsc.models.checkpoints import CheckpointError
from speechbrain_rsc.models.clap import (
    BTS,
    AudioCLAP,
    ClapFeatures,
)
from speechbrain_rsc.models.clap_tokenizer import (
    TokenizerError,
    all_bts_prompts,
    build_prompt_tokenizer,
)
from speechbrain_rsc.models.laion_convert import (
    convert_laion_clap_state_dict,
)

RATE = 48000
SMALL = TINY_CLAP
SMALL_AUDIO = {k: SMALL[k] for k in ("projection_dim", "audio_config")}
PROMPT_A = bts_prompt("Tc", "adult", "M", "Meditron")
PROMPT_B = bts_prompt("Pl", "pediatric", "F", "AKGC417L")


def reference_extractor():
    """``ClapFeatureExtractor`` as ``laion/clap-htsat-unfused`` sets it."""
    return ClapFeatureExtractor(
        frequency_min=50, truncation="rand_trunc", padding="repeatpad"
    )


def assert_same_tensors(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


# ----------------------------------------------------------------- front end


def test_features_match_clap_feature_extractor():
    rng = np.random.default_rng(0)
    short = rng.normal(0, 0.1, 3 * RATE + 17).astype(np.float32)
    cycle = rng.normal(0, 0.1, 8 * RATE).astype(np.float32)
    batch = torch.zeros(2, len(cycle))
    batch[0, : len(short)] = torch.from_numpy(short)
    batch[1] = torch.from_numpy(cycle)
    lens = torch.tensor([len(short) / len(cycle), 1.0])
    ours = ClapFeatures().eval()(batch, lens)
    extractor = reference_extractor()
    for row, signal in enumerate((short, cycle)):
        ref = extractor(signal, sampling_rate=RATE, return_tensors="pt")
        ref = ref["input_features"]
        assert ref.shape == (1, 1, 1001, 64)
        diff = (ours[row] - ref[0]).abs().max().item()
        assert diff < 1e-3, f"row {row}: {diff} dB"


def test_long_signal_cropped_like_rand_trunc():
    rng = np.random.default_rng(1)
    signal = rng.normal(0, 0.1, 12 * RATE).astype(np.float32)
    np.random.seed(5)
    ref = reference_extractor()(signal, sampling_rate=RATE)["input_features"]
    np.random.seed(5)
    start = np.random.randint(0, len(signal) - 10 * RATE + 1)
    window = torch.from_numpy(signal[start : start + 10 * RATE])
    ours = ClapFeatures().eval()(window[None])
    assert np.abs(ours[0].numpy() - ref[0]).max() < 1e-3
    # Training crops a random contiguous 10 s; eval takes the start.
    features = ClapFeatures()
    full = torch.from_numpy(signal)[None]
    assert torch.equal(features.eval().fit_window(full)[0], full[0, :480000])
    cropped = features.train().fit_window(full)[0]
    offset = int((full[0] == cropped[0]).nonzero()[0])
    assert torch.equal(cropped, full[0, offset : offset + 480000])


def test_zero_padding_mode():
    wavs = torch.ones(1, 3 * RATE)
    out = ClapFeatures(padding="pad").fit_window(wavs)
    assert out.sum().item() == 3 * RATE
    assert out[0, : 3 * RATE].eq(1).all()
    with pytest.raises(ValueError, match="repeatpad"):
        ClapFeatures(padding="reflect")


# ------------------------------------------------------------ forward, backward


def wav_batch(n=2, seconds=2):
    return torch.randn(
        n, seconds * RATE, generator=torch.Generator().manual_seed(0)
    )


def test_audio_clap_forward_backward():
    model = AudioCLAP(clap_config=SMALL_AUDIO).train()
    assert not any(
        n.startswith("clap.text") for n, _ in model.named_parameters()
    )
    logits = model(wav_batch(), prompts=["ignored", "too"])
    assert logits.shape == (2, 4)
    logits.square().sum().backward()
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert no_grad == []


def test_bts_forward_backward_all_weights_but_temperatures():
    model = BTS(clap_config=SMALL).train()
    logits = model(wav_batch(), torch.tensor([1.0, 0.5]), [PROMPT_A, PROMPT_B])
    assert logits.shape == (2, 4)
    logits.square().sum().backward()
    params = dict(model.named_parameters())
    frozen = sorted(n for n, p in params.items() if not p.requires_grad)
    assert frozen == ["clap.logit_scale_a", "clap.logit_scale_t"]
    no_grad = [
        n for n, p in params.items() if p.requires_grad and p.grad is None
    ]
    assert no_grad == []


def test_bts_prompt_changes_logits():
    model = BTS(clap_config=SMALL).eval()
    wavs = wav_batch(1).repeat(3, 1)
    with torch.no_grad():
        logits = model(wavs, prompts=[PROMPT_A, PROMPT_B, PROMPT_A])
    assert torch.allclose(logits[0], logits[2])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)
    # Each distinct prompt was tokenized once, then served from the cache.
    assert sorted(model.prompt_tokenizer._cache) == sorted([PROMPT_A, PROMPT_B])


def test_bts_refuses_missing_or_misaligned_prompts():
    model = BTS(clap_config=SMALL)
    wavs = wav_batch()
    with pytest.raises(ValueError, match="one text prompt per waveform"):
        model(wavs)
    with pytest.raises(ValueError, match="2 waveforms but 1 prompts"):
        model(wavs, prompts=[PROMPT_A])
    with pytest.raises(ValueError, match="a single string"):
        model(wavs, prompts=PROMPT_A)


def test_default_models_build_offline_at_paper_size(caplog):
    with caplog.at_level(logging.INFO):
        bts = BACKBONES["bts"]()
    assert "offline byte-level BPE" in caplog.text
    assert bts.sample_rate == 48000
    # ClapModel(ClapConfig()) 153,492,890 + Linear(1024, 4); paper: 153M.
    assert sum(p.numel() for p in bts.parameters()) == 153_496_990
    assert len(bts.tokenizer) == 384
    assert bts.clap.config.text_config.vocab_size == 50265
    del bts
    audio = BACKBONES["audio_clap"]()
    # Audio tower + projection 28,190,872 + Linear(512, 4); paper: 28M.
    assert sum(p.numel() for p in audio.parameters()) == 28_192_924


# ------------------------------------------------------------------ tokenizer


def test_offline_tokenizer_is_deterministic_and_covers_prompts():
    first, second = build_prompt_tokenizer(), build_prompt_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    prompts = all_bts_prompts()
    assert len(prompts) == 7 * 3 * 3 * 4
    for prompt in prompts:
        ids = first(prompt)["input_ids"]
        assert first.unk_token_id not in ids
        assert first.decode(ids, skip_special_tokens=True) == prompt
        assert len(ids) <= 64


def test_state_dict_carries_the_tokenizer(tmp_path):
    other = build_prompt_tokenizer(["a wholly different corpus of words"])
    other.save_pretrained(tmp_path)
    source = BTS(clap_config=SMALL, tokenizer_path=str(tmp_path)).eval()
    target = BTS(clap_config=SMALL).eval()
    assert (
        target.tokenizer(PROMPT_A)["input_ids"] != other(PROMPT_A)["input_ids"]
    )
    target.load_state_dict(source.state_dict())
    assert (
        target.tokenizer(PROMPT_A)["input_ids"] == other(PROMPT_A)["input_ids"]
    )
    wavs = wav_batch(1)
    with torch.no_grad():
        assert torch.equal(
            target(wavs, prompts=[PROMPT_A]), source(wavs, prompts=[PROMPT_A])
        )


# --------------------------------------------------------- HF folder loading


def test_hf_folder_round_trip(tmp_path):
    model = BTS(clap_config=SMALL)
    model.save_pretrained(tmp_path / "clap")
    loaded = BTS(clap_config=SMALL).load_pretrained(str(tmp_path / "clap"))
    assert_same_tensors(loaded.clap.state_dict(), model.clap.state_dict())
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    loaded.head.load_state_dict(model.head.state_dict())
    wavs = wav_batch(1)
    with torch.no_grad():
        assert torch.equal(
            loaded.eval()(wavs, prompts=[PROMPT_B]),
            model.eval()(wavs, prompts=[PROMPT_B]),
        )
    audio = AudioCLAP(clap_config=SMALL).load_pretrained(str(tmp_path / "clap"))
    audio_state = {
        k: v
        for k, v in model.clap.state_dict().items()
        if k.startswith(("audio_model.", "audio_projection."))
    }
    assert_same_tensors(audio.clap.state_dict(), audio_state)
    audio.save_pretrained(tmp_path / "audio")
    again = AudioCLAP(clap_config=SMALL_AUDIO).load_pretrained(
        str(tmp_path / "audio")
    )
    assert_same_tensors(again.clap.state_dict(), audio_state)
    with pytest.raises(CheckpointError, match="BTS needs a full ClapModel"):
        BTS(clap_config=SMALL).load_pretrained(str(tmp_path / "audio"))
    # the declared architecture is the one built: other sizes are named
    with pytest.raises(
        CheckpointError,
        match=r"another architecture than declared \(audio_config.hidden"
        r"_size: 768 declared, 32 in the weights",
    ):
        BTS().load_pretrained(str(tmp_path / "clap"))


def test_clap_folder_with_other_settings_is_refused_naming_them(tmp_path):
    other = {
        **SMALL,
        "audio_config": {**SMALL["audio_config"], "mlp_ratio": 2.0},
    }
    BTS(clap_config=other).save_pretrained(tmp_path / "clap")
    with pytest.raises(CheckpointError) as error:
        BTS(clap_config=SMALL).load_pretrained(tmp_path / "clap")
    assert "audio_config.mlp_ratio: 4.0 declared, 2.0 in the weights'" in str(
        error.value
    )
    BTS(clap_config=other).load_pretrained(tmp_path / "clap")


def test_empty_or_five_token_tokenizer_refused(tmp_path):
    # A model folder without tokenizer files: transformers 5 hands back an
    # empty 5-token RoBERTa tokenizer instead of raising.
    ClapModel(ClapConfig(**SMALL)).save_pretrained(tmp_path / "bare")
    with pytest.raises(TokenizerError, match="5 tokens.*padding id 0"):
        BTS(clap_config=SMALL).load_pretrained(str(tmp_path / "bare"))
    BTS(clap_config=SMALL).save_pretrained(tmp_path / "clap")
    RobertaTokenizer().save_pretrained(tmp_path / "clap")  # 5 tokens
    with pytest.raises(TokenizerError, match="5 tokens"):
        BTS(clap_config=SMALL).load_pretrained(str(tmp_path / "clap"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer could be loaded"):
        BTS(clap_config=SMALL, tokenizer_path=str(tmp_path / "empty"))


def test_tokenizer_larger_than_text_vocab_refused(tmp_path):
    big = dict(SMALL, text_config=dict(SMALL["text_config"], vocab_size=300))
    with pytest.raises(TokenizerError, match="384 tokens but the text model"):
        BTS(clap_config=big)


# ------------------------------------------------------- LAION conversion


def test_laion_keys_hand_written():
    qkv = torch.arange(24.0).view(6, 4)
    laion = {
        "module.audio_branch.layers.1.blocks.0.attn.qkv.weight": qkv,
        "module.audio_branch.layers.1.blocks.0.attn.proj.bias": torch.ones(2),
        "module.audio_branch.layers.1.blocks.0.norm2.weight": torch.ones(3),
        "module.audio_branch.layers.2.blocks.1.mlp.fc1.weight": torch.ones(4),
        "module.audio_branch.layers.0.downsample.reduction.weight": torch.ones(
            5
        ),
        "module.audio_branch.bn0.running_var": torch.ones(6),
        "module.audio_branch.norm.bias": torch.ones(7),
        "module.text_branch.encoder.layer.3.output.LayerNorm.bias": (
            torch.ones(8)
        ),
        "module.text_projection.2.weight": torch.ones(9),
        "module.logit_scale_t": torch.tensor(1.5),
        # Dropped on purpose:
        "module.audio_branch.spectrogram_extractor.stft.conv_real.weight": (
            torch.ones(1)
        ),
        "module.audio_branch.logmel_extractor.melW": torch.ones(1),
        "module.audio_branch.tscam_conv.weight": torch.ones(1),
        "module.audio_branch.head.bias": torch.ones(1),
        "module.audio_branch.layers.0.blocks.1.attn_mask": torch.ones(1),
        "module.audio_transform.sequential.0.weight": torch.ones(1),
    }
    hf = convert_laion_clap_state_dict(laion)
    block = "audio_model.audio_encoder.layers.1.blocks.0."
    assert sorted(hf) == sorted(
        [
            block + "attention.self.query.weight",
            block + "attention.self.key.weight",
            block + "attention.self.value.weight",
            block + "attention.output.dense.bias",
            block + "layernorm_after.weight",
            "audio_model.audio_encoder.layers.2.blocks.1.intermediate.dense.weight",
            "audio_model.audio_encoder.layers.0.downsample.reduction.weight",
            "audio_model.audio_encoder.batch_norm.running_var",
            "audio_model.audio_encoder.norm.bias",
            "text_model.encoder.layer.3.output.LayerNorm.bias",
            "text_projection.linear2.weight",
            "logit_scale_t",
        ]
    )
    assert torch.equal(hf[block + "attention.self.query.weight"], qkv[:2])
    assert torch.equal(hf[block + "attention.self.key.weight"], qkv[2:4])
    assert torch.equal(hf[block + "attention.self.value.weight"], qkv[4:])
    assert hf["text_projection.linear2.weight"].shape == (9,)
    unknown = dict(
        laion, **{"module.audio_branch.patch_embed.mel_conv2d.weight": qkv}
    )
    unknown["module.mystery.weight"] = qkv
    with pytest.raises(CheckpointError, match="fusion checkpoint") as error:
        convert_laion_clap_state_dict(unknown)
    assert "mystery.weight" in str(error.value)
    assert "2 LAION-CLAP key(s)" in str(error.value)


def to_laion_names(hf_state):
    """Inverse of the conversion, written independently of it."""
    audio_parts = [
        ("layernorm_before", "norm1"),
        ("layernorm_after", "norm2"),
        ("attention.output.dense", "attn.proj"),
        ("attention.self.relative_position", "attn.relative_position"),
        ("intermediate.dense", "mlp.fc1"),
        ("output.dense", "mlp.fc2"),
        ("batch_norm", "bn0"),
    ]
    laion, qkv = {}, {}
    for key, value in hf_state.items():
        if key.startswith("text_model."):
            laion["text_branch." + key[len("text_model.") :]] = value
        elif key.startswith(("audio_projection.", "text_projection.")):
            key = key.replace("linear1", "0").replace("linear2", "2")
            laion[key] = value
        elif key.startswith("logit_scale"):
            laion[key] = value
        else:
            key = "audio_branch." + key[len("audio_model.audio_encoder.") :]
            for name in ("query", "key", "value"):
                marker = f".attention.self.{name}."
                if marker in key:
                    block, kind = key.split(marker)
                    qkv.setdefault((block, kind), {})[name] = value
                    break
            else:
                for new, old in audio_parts:
                    key = key.replace(new, old)
                laion[key] = value
    for (block, kind), parts in qkv.items():
        laion[f"{block}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    return {"module." + k: v for k, v in laion.items()}


def write_laion_checkpoint(path, reference, pickled_extra=None):
    state = to_laion_names(reference.state_dict())
    del state["module.text_branch.embeddings.position_ids"]
    del state["module.text_branch.embeddings.token_type_ids"]
    state["module.audio_branch.logmel_extractor.melW"] = torch.ones(3, 2)
    state["module.audio_branch.tscam_conv.weight"] = torch.ones(2)
    state["module.audio_branch.layers.0.blocks.1.attn_mask"] = torch.ones(2)
    state["module.text_transform.sequential.3.bias"] = torch.ones(2)
    checkpoint = {"epoch": np.int64(45), "state_dict": state}
    if pickled_extra is not None:
        checkpoint["args"] = pickled_extra
    torch.save(checkpoint, path)


def test_laion_checkpoint_through_pretrained_path(tmp_path):
    torch.manual_seed(3)
    reference = ClapModel(ClapConfig(**SMALL))
    path = tmp_path / "630k-small.pt"
    write_laion_checkpoint(path, reference)
    with pytest.raises(ValueError, match="tokenizer_path"):
        BTS(clap_config=SMALL).load_pretrained(str(path))
    build_prompt_tokenizer().save_pretrained(tmp_path / "tok")
    bts = BTS(
        clap_config=SMALL, tokenizer_path=str(tmp_path / "tok")
    ).load_pretrained(str(path))
    assert_same_tensors(bts.clap.state_dict(), reference.state_dict())
    audio = AudioCLAP(clap_config=SMALL_AUDIO).load_pretrained(str(path))
    expected = {
        k: v
        for k, v in reference.state_dict().items()
        if k.startswith(("audio_model.", "audio_projection."))
    }
    assert_same_tensors(audio.clap.state_dict(), expected)


def test_laion_checkpoint_needing_unsafe_pickle(tmp_path):
    reference = ClapModel(ClapConfig(**SMALL))
    path = tmp_path / "laion.pt"
    write_laion_checkpoint(path, reference, argparse.Namespace(lr=1e-4))
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True"):
        AudioCLAP(clap_config=SMALL_AUDIO).load_pretrained(str(path))
    audio = AudioCLAP(
        clap_config=SMALL_AUDIO, allow_unsafe_pickle=True
    ).load_pretrained(str(path))
    key = "audio_projection.linear1.weight"
    assert torch.equal(
        audio.clap.state_dict()[key], reference.state_dict()[key]
    )


def test_laion_checkpoint_of_wrong_size_refused(tmp_path):
    reference = ClapModel(ClapConfig(**SMALL))
    path = tmp_path / "laion.pt"
    write_laion_checkpoint(path, reference)
    wider = dict(SMALL_AUDIO, projection_dim=16)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        AudioCLAP(clap_config=wider).load_pretrained(str(path))
