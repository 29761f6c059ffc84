import os
from pathlib import Path

import pytest

# No test may reach a hub: everything loads from files the tests write.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
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
