"""EfficientNet-B0's regularisation as the reference builds it: torchvision's
stochastic depth 0.2, block by block, and no dropout (its classifier, which
holds the dropout, is deleted there)."""

import pytest
import torch
import torchvision
import yaml
from conftest import RECIPE
from hyperpyyaml import load_hyperpyyaml

from speechbrain_rsc.models.timm_cnn import EfficientNetB0


def _drop_path(model):
    """The stochastic-depth probability of each of the 16 blocks."""
    blocks = [block for stage in model.net.blocks for block in stage]
    return [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]


def test_drop_path_rate_is_torchvisions_stochastic_depth():
    ours = EfficientNetB0(spec_augment=False, drop_path_rate=0.2)
    reference = torchvision.models.efficientnet_b0(
        weights=None, stochastic_depth_prob=0.2
    )
    expected = [
        block.stochastic_depth.p
        for block in reference.modules()
        if isinstance(block, torchvision.models.efficientnet.MBConv)
    ]
    assert len(expected) == 16
    assert _drop_path(ours) == pytest.approx(expected)
    assert _drop_path(EfficientNetB0(spec_augment=False)) == [0.0] * 16


def test_stochastic_depth_draws_only_while_training():
    torch.manual_seed(0)
    model = EfficientNetB0(spec_augment=False, drop_path_rate=0.2)
    wavs = torch.randn(4, 16000)
    model.train()
    with torch.no_grad():
        first, second = model(wavs), model(wavs)
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(wavs), model(wavs))


def test_drop_rate_is_the_classifier_dropout():
    model = EfficientNetB0(spec_augment=False, drop_rate=0.3)
    assert model.net.drop_rate == 0.3


def test_paper_configuration_regularises_as_the_reference():
    with open(RECIPE / "hparams" / "paper_icbhi.yaml", encoding="utf-8") as f:
        paper = yaml.load(f, Loader=yaml.BaseLoader)
    overrides = paper["table2"]["efficientnet_b0"]["overrides"]
    assert float(overrides["drop_path_rate"]) == 0.2
    assert float(overrides["drop_rate"]) == 0.0
    for name in ("efficientnet.yaml", "distill_efficientnet.yaml"):
        with open(RECIPE / "hparams" / name, encoding="utf-8") as f:
            hparams = load_hyperpyyaml(
                f,
                {
                    "data_folder": "synthetic",
                    "output_folder": "unused",
                    "use_pretrained": False,
                    "drop_path_rate": 0.2,
                },
            )
        assert _drop_path(hparams["model"])[-1] == pytest.approx(0.1875)
        assert hparams["model"].net.drop_rate == 0.0
