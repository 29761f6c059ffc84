import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

# No test may reach a hub: everything loads from files the tests write.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Scripts run in-process raise our refusals (tests match their classes);
# tests of the printed message and exit status 2 unset it.
os.environ["RSC_DEBUG"] = "1"

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "ICBHI"
ICBHI_SAMPLE = REPO.parent / "shared" / "icbhi_sample"
# A CLAP small enough for CPU tests, with the real module layout.
TINY_CLAP = {
    "projection_dim": 8,
    "audio_config": {
        "patch_embeds_hidden_size": 4,
        "hidden_size": 32,
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 1, 1, 1],
    },
    "text_config": {
        "vocab_size": 400,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "intermediate_size": 16,
        "max_position_embeddings": 66,
    },
}


@pytest.fixture(scope="session")
def icbhi_sample():
    """The ten real ICBHI recordings next to the repository."""
    if not (ICBHI_SAMPLE / "ICBHI_final_database").is_dir():
        pytest.skip(f"real ICBHI sample not found at {ICBHI_SAMPLE}")
    return ICBHI_SAMPLE


def randomise_batch_norm(model, seed):
    """Give every BatchNorm its own running statistics and affine terms."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=gen))
                module.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=gen) * 0.1)
                module.num_batches_tracked.fill_(seed)
    return model


def run_recipe(script, *args):
    """Run ``python recipes/ICBHI/<script> args...`` in this process."""
    path = str(RECIPE / script)
    argv, sys.argv = sys.argv, [path, *map(str, args)]
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = argv
