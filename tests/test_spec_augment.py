"""SpecAugment's probability and batch sharing, in the backbones and in
the paper's configuration."""

import pytest
import torch
from conftest import RECIPE
from hyperpyyaml import load_hyperpyyaml

from speechbrain_rsc.models.cnn6 import CNN6
from speechbrain_rsc.models.frontends import (
    REFERENCE_SPEC_AUGMENT_P,
    SpecAugment,
)
from speechbrain_rsc.models.timm_cnn import ResNet18

SMALL_CNN6 = {"channels": [4, 4, 4, 4]}


def test_reference_probability_is_that_of_a_standard_normal_below_one():
    assert REFERENCE_SPEC_AUGMENT_P == pytest.approx(0.8413447460685429)
    torch.manual_seed(0)
    draws = torch.randn(1_000_000)
    assert (1.0 >= draws).float().mean().item() == pytest.approx(
        REFERENCE_SPEC_AUGMENT_P, abs=2e-3
    )


def _masked(aug, feats):
    """Which utterances of ``feats`` the augmentation changed."""
    return (aug(feats) != feats).flatten(1).any(dim=1)


def test_each_utterance_is_masked_with_probability_p():
    torch.manual_seed(0)
    aug = SpecAugment(8, 8, p=REFERENCE_SPEC_AUGMENT_P).train()
    masked = _masked(aug, torch.randn(20_000, 20, 16))
    # binomial std 52: 5 std either side
    assert abs(masked.sum().item() - 16_827) < 260


def test_shared_draws_once_per_batch():
    torch.manual_seed(0)
    aug = SpecAugment(8, 8, p=0.5, shared=True).train()
    feats = torch.randn(4, 20, 16)
    outcomes = []
    for _ in range(200):
        out = aug(feats)
        changed = out != feats
        # the same bands in every utterance of the batch, or none at all
        assert bool((changed == changed[:1]).all())
        if changed.any():
            # filled with the mean of the frequency-masked batch or of the
            # input batch, one value for the whole batch
            assert out[changed].unique().numel() <= 2
        outcomes.append(bool(changed.any()))
    assert 70 < sum(outcomes) < 130


def test_unshared_masks_differ_between_utterances():
    torch.manual_seed(0)
    feats = torch.randn(2, 20, 16)
    changed = SpecAugment(8, 8).train()(feats) != feats
    assert changed[0].any() and changed[1].any()
    assert not torch.equal(changed[0], changed[1])


@pytest.mark.parametrize(
    "model_class, options", [(CNN6, SMALL_CNN6), (ResNet18, {})]
)
def test_backbones_pass_the_options_to_their_spec_augment(model_class, options):
    model = model_class(
        spec_augment_p=0.25, spec_augment_shared=True, **options
    )
    aug = model.front_end.spec_augment
    assert (aug.p, aug.shared) == (0.25, True)
    assert model_class(**options).front_end.spec_augment.p == 1.0


def test_probability_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="must be in"):
        SpecAugment(p=1.5)


def test_paper_table2_fbank_backbones_use_the_reference_probability(
    tmp_path,
):
    with open(RECIPE / "hparams" / "paper_icbhi.yaml", encoding="utf-8") as f:
        paper = load_hyperpyyaml(f, {"data_folder": "/data/ICBHI"})
    for name in ("resnet18", "efficientnet_b0", "cnn6", "ast"):
        entry = paper["table2"][name]
        overrides = {**paper["overrides"], **entry["overrides"]}
        assert overrides["spec_augment_p"] == REFERENCE_SPEC_AUGMENT_P
        for key in ("teacher_hparams", "student_hparams"):
            with open(RECIPE / entry[key], encoding="utf-8") as f:
                hparams = load_hyperpyyaml(
                    f,
                    {
                        "spec_augment_p": overrides["spec_augment_p"],
                        "output_folder": str(tmp_path / name),
                        "use_pretrained": False,
                    },
                )
            aug = hparams["model"].front_end.spec_augment
            assert aug.p == REFERENCE_SPEC_AUGMENT_P, entry[key]
    # the default training YAMLs keep masking every cycle
    with open(RECIPE / "hparams" / "cnn6.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"output_folder": str(tmp_path)})
    assert hparams["model"].front_end.spec_augment.p == 1.0
