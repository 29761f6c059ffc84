"""Inference-only rewrites of a trained backbone: batch norms folded into
the convolutions before them, and channels-last weights.

In eval mode a batch norm applies a fixed per-channel affine map, so a
convolution followed by it equals one convolution with rescaled weights
and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``), which saves one
pass over the largest activations. Which pairs may be folded is declared,
not guessed: a module lists them in ``batch_norm_folds``, pairs of its
child names where the batch norm reads the convolution's output and
nothing else does (CNN6's ``ConvBlock``). Others are left as they are:
timm's ResNet18 could be declared the same way, but through its 17
folded layers the logits drifted 1.0e-5 from the unfolded ones (random
batch-norm statistics), past the 1e-5 to which the fused ensemble must
equal the sequential one; EfficientNet-B0's batch norms carry their
activation (timm's ``BatchNormAct2d``).

Channels-last (NHWC) weights make the convolutions of the fbank CNNs
faster with oneDNN on CPU (``benchmarks/bench_inference.py``) and are the
layout cuDNN's tensor-core kernels use; :func:`is_convolutional` tells
which backbones are mostly convolutions.

Example
-------
>>> from speechbrain_rsc.models.cnn6 import CNN6
>>> model = CNN6(channels=(4, 8, 8, 16)).eval()
>>> fast = for_inference(model)
>>> type(fast.conv_block1.bn1).__name__
'Identity'
>>> wavs = torch.randn(2, 16000)
>>> torch.allclose(fast(wavs), model(wavs), atol=1e-5)
True
"""

import copy

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

FOLDS_ATTRIBUTE = "batch_norm_folds"


def fold_batch_norms(model):
    """A copy of ``model`` with its declared conv/batch-norm pairs folded.

    Arguments
    ---------
    model : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        The copy, in eval mode; each folded batch norm is an
        ``Identity`` and its convolution has a bias.

    Example
    -------
    >>> block = torch.nn.Sequential()
    >>> block.conv = torch.nn.Conv2d(1, 2, 3, bias=False)
    >>> block.bn = torch.nn.BatchNorm2d(2)
    >>> block.batch_norm_folds = (("conv", "bn"),)
    >>> folded = fold_batch_norms(block)
    >>> folded.conv.bias is not None, type(folded.bn).__name__
    (True, 'Identity')
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        for conv_name, bn_name in getattr(module, FOLDS_ATTRIBUTE, ()):
            conv = getattr(module, conv_name)
            bn = getattr(module, bn_name)
            if isinstance(bn, torch.nn.Identity):
                continue  # folded already
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, torch.nn.Identity())
    return model


def has_folds(model):
    """Whether any module of ``model`` declares batch norms to fold.

    Example
    -------
    >>> has_folds(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))
    False
    """
    return any(getattr(m, FOLDS_ATTRIBUTE, ()) for m in model.modules())


def is_convolutional(model):
    """Whether most of ``model``'s weights are in 2-d convolutions.

    True for CNN6, ResNet18 and EfficientNet-B0; false for the
    transformers (AST, CLAP), whose only convolution is a patch embedding.

    Example
    -------
    >>> is_convolutional(torch.nn.Conv2d(8, 8, 3))
    True
    >>> is_convolutional(torch.nn.Linear(8, 8))
    False
    """
    total = sum(p.numel() for p in model.parameters())
    conv = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
        for p in m.parameters(recurse=False)
    )
    return total > 0 and conv > total / 2


def for_inference(model):
    """An eval-mode copy of ``model`` that evaluates faster, to float
    rounding: batch norms folded and, for a convolutional network,
    channels-last weights.

    Example
    -------
    >>> conv = for_inference(torch.nn.Conv2d(8, 8, 3))
    >>> conv.weight.is_contiguous(memory_format=torch.channels_last)
    True
    """
    model = fold_batch_norms(model)
    if is_convolutional(model):
        model = model.to(memory_format=torch.channels_last)
    return model
