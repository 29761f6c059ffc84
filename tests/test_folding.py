"""Inference rewrites: batch-norm folding and channels-last weights."""

import pytest
import torch
from conftest import TINY_CLAP, randomise_batch_norm

from speechbrain_rsc.models import build_backbone
from speechbrain_rsc.models.folding import (
    fold_batch_norms,
    for_inference,
    has_folds,
    is_convolutional,
)

RATE = 16000


def cnn6(seed=0):
    torch.manual_seed(seed)
    model = build_backbone("cnn6", {"channels": (8, 16, 16, 32)})
    return randomise_batch_norm(model, seed + 1).eval()


def test_folded_cnn6_gives_the_same_logits():
    model = cnn6()
    folded = fold_batch_norms(model)
    for i in range(1, 5):
        block = getattr(folded, f"conv_block{i}")
        assert isinstance(block.bn1, torch.nn.Identity)
        assert block.conv1.bias is not None
        # the original keeps its batch norms and bias-free convolutions
        original = getattr(model, f"conv_block{i}")
        assert isinstance(original.bn1, torch.nn.BatchNorm2d)
        assert original.conv1.bias is None
    # bn0 normalises the input bins and is not declared: kept
    assert isinstance(folded.bn0, torch.nn.BatchNorm2d)
    wavs = torch.randn(3, RATE) * torch.tensor([[0.1], [1.0], [5.0]])
    with torch.no_grad():
        expected = model(wavs)
        got = folded(wavs)
    assert (expected[0] - expected[1]).abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # folding twice changes nothing
    again = fold_batch_norms(folded)
    with torch.no_grad():
        torch.testing.assert_close(again(wavs), got, atol=0, rtol=0)


def test_fold_uses_the_running_statistics():
    """y = gamma (conv(x) - mean) / sqrt(var + eps) + beta, by hand."""
    block = torch.nn.Module()
    block.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    block.bn = torch.nn.BatchNorm2d(1)
    block.batch_norm_folds = (("conv", "bn"),)
    with torch.no_grad():
        block.conv.weight.fill_(2.0)
        block.bn.running_mean.fill_(1.0)
        block.bn.running_var.fill_(4.0 - block.bn.eps)
        block.bn.weight.fill_(3.0)
        block.bn.bias.fill_(0.5)
    block.train()  # the copy is put in eval mode
    folded = fold_batch_norms(block)
    assert not folded.training and block.training
    # 3 * (2x - 1) / 2 + 0.5 = 3x - 1
    assert folded.conv.weight.item() == pytest.approx(3.0)
    assert folded.conv.bias.item() == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "name, options, convolutional, folds",
    [
        ("cnn6", {"channels": (8, 16, 16, 32)}, True, True),
        ("resnet18", {}, True, False),
        ("efficientnet_b0", {}, True, False),
        ("bts", {"clap_config": TINY_CLAP}, False, False),
    ],
)
def test_which_backbones_are_convolutional(name, options, convolutional, folds):
    model = build_backbone(name, options).eval()
    assert is_convolutional(model) is convolutional
    assert has_folds(model) is folds
    fast = for_inference(model)
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    if not convolutional:  # BTS's patch embedding is left as it is
        assert all(w.is_contiguous() for w in convs)
        return
    assert all(
        w.is_contiguous(memory_format=torch.channels_last) for w in convs
    )
    # (with one input channel or a 1x1 kernel both layouts have the same
    # strides, as in all of EfficientNet-B0's depthwise and 1x1 convolutions)
    if name != "efficientnet_b0":
        assert not all(w.is_contiguous() for w in convs)


def test_for_inference_student_matches():
    model = cnn6(seed=3)
    fast = for_inference(model)
    wavs = torch.randn(2, RATE)
    with torch.no_grad():
        torch.testing.assert_close(fast(wavs), model(wavs), atol=1e-5, rtol=0)
