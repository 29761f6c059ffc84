"""Our LAION-CLAP checkpoint conversion against laion_clap itself.

laion_clap builds its own ``CLAP_Module`` (HTSAT-tiny, RoBERTa) with random
weights, saves them as LAION-CLAP's training does, and its own forward
pass gives the embeddings that our converted Audio-CLAP (audio tower, as
BTS's) and ClapModel (text tower, BTS's) must give. laion_clap 1.1.7
fetches RoBERTa's weights and tokenizer from the hub while it builds, so
both are replaced here by a random ``RobertaModel`` of roberta-base's
shape and no tokenizer: nothing is downloaded.

laion_clap pins numpy < 2 and pulls in wandb, so it is not in the project
venv: ``.ci/run`` runs this file in a venv of its own (README, "Tests and
checks"); elsewhere it is skipped.
"""

import sys

import pytest
import torch

laion_clap = pytest.importorskip(
    "laion_clap",
    reason="laion_clap is not installed: the LAION-CLAP reference test "
    "runs in .ci/run's own laion venv (README, 'Tests and checks')",
)

from speechbrain_rsc.models.checkpoints import load_matching  # noqa: E402
from speechbrain_rsc.models.clap import (  # noqa: E402
    AudioCLAP,
    ClapFeatures,
    _derived_keys,
    read_clap_source,
)


class _RandomRoberta:
    """Stands for ``transformers.RobertaModel`` in laion_clap: a random
    model of roberta-base's shape instead of the hub's weights."""

    @staticmethod
    def from_pretrained(name, *args, **kwargs):
        from transformers import RobertaConfig, RobertaModel

        assert name == "roberta-base", name
        config = RobertaConfig(
            vocab_size=50265,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=1,
        )
        return RobertaModel(config)


class _NoTokenizer:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        return None  # the tests pass token ids themselves


@pytest.fixture(scope="module")
def laion(tmp_path_factory):
    """laion_clap's own model with random weights, and its checkpoint."""
    # laion_clap imports its modules as top-level ``clap_module``.
    model_module = sys.modules["clap_module.model"]
    hook = sys.modules["laion_clap.hook"]
    saved = model_module.RobertaModel, hook.RobertaTokenizer
    model_module.RobertaModel, hook.RobertaTokenizer = (
        _RandomRoberta,
        _NoTokenizer,
    )
    try:
        torch.manual_seed(0)
        clap = laion_clap.CLAP_Module(enable_fusion=False, device="cpu")
    finally:
        model_module.RobertaModel, hook.RobertaTokenizer = saved
    clap.eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # bn0 statistics of their own, not 0 and 1
        bn0 = clap.model.audio_branch.bn0
        bn0.running_mean.copy_(torch.randn(64, generator=gen))
        bn0.running_var.copy_(torch.rand(64, generator=gen) + 0.5)
    # As LAION-CLAP's training saves it: a DDP model's state_dict.
    state = {"module." + k: v for k, v in clap.model.state_dict().items()}
    path = tmp_path_factory.mktemp("laion") / "630k-random.pt"
    torch.save({"epoch": 3, "name": "random", "state_dict": state}, path)
    return clap, path


def test_audio_embeddings_match_laion_clap(laion):
    clap, path = laion
    ours = AudioCLAP().load_pretrained(str(path)).eval()
    wavs = _two_cycles()
    with torch.no_grad():
        # laion_clap's features and forward (repeatpad to 10 s), normalised
        expected = clap.get_audio_embedding_from_data(wavs, use_tensor=True)
        embeds = ours.clap(input_features=ours.features(wavs)).audio_embeds
    got = torch.nn.functional.normalize(embeds, dim=-1)
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # not constant
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _two_cycles():
    """Two unlike 8 s cycles at 48 kHz: noise, and a tone then silence."""
    gen = torch.Generator().manual_seed(2)
    noise = 0.1 * torch.randn(48000 * 8, generator=gen)
    time = torch.arange(48000 * 8) / 48000
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * time) * (time < 3)
    return torch.stack([noise, tone])


def test_bts_embeddings_match_laion_clap(laion):
    """BTS's whole ClapModel, loaded as BTS loads it: text and audio."""
    clap, path = laion
    from transformers import ClapConfig, ClapModel

    source = read_clap_source(str(path))
    assert source.config is None  # a LAION .pt: BTS's own config is used
    ours = ClapModel(ClapConfig()).eval()  # BTS with clap_config {}
    load_matching(
        ours, source.state, str(path), allow_missing=_derived_keys(ours)
    )
    wavs = _two_cycles()
    with torch.no_grad():
        expected = clap.get_audio_embedding_from_data(wavs, use_tensor=True)
        feats = ClapFeatures().eval()(wavs)
        audio = ours.audio_model(input_features=feats).pooler_output
        got = ours.audio_projection(audio)
    got = torch.nn.functional.normalize(got, dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 50265, (2, 64), generator=gen)
    ids[:, 0], ids[1, 40:] = 0, 1  # <s>, and padding in the second row
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = clap.model.get_text_embedding(
            {"input_ids": ids, "attention_mask": mask}
        )
        text = ours.text_model(input_ids=ids, attention_mask=mask)
        got = ours.text_projection(text.pooler_output)
    got = torch.nn.functional.normalize(got, dim=-1)
    assert (expected[0] - expected[1]).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
