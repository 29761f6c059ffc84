import os
from pathlib import Path

import pytest

# No test may reach a hub: everything loads from files the tests write.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
ICBHI_SAMPLE = REPO.parent / "shared" / "icbhi_sample"


@pytest.fixture(scope="session")
def icbhi_sample():
    """The ten real ICBHI recordings next to the repository."""
    if not (ICBHI_SAMPLE / "ICBHI_final_database").is_dir():
        pytest.skip(f"real ICBHI sample not found at {ICBHI_SAMPLE}")
    return ICBHI_SAMPLE
