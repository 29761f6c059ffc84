"""The model card says what the model is, truthfully (issue 19, item 8)."""

import yaml
from test_run_completion import teacher

from speechbrain_rsc.model_card import CARD_FILE, model_card


def front_matter(card):
    return yaml.safe_load(card.split("---\n")[1])


def synthetic_info(**extra):
    data = {"dataset": "synthetic", "cycles": {"train": {"count": 40}}}
    return {"backbone": "cnn6", "provenance": {"data": data}, **extra}


def test_a_synthetic_run_is_not_called_icbhi():
    card = model_card(synthetic_info())
    assert "**Not ICBHI data**" in card
    assert "ICBHI 2017 Respiratory Sound Database" not in card
    assert "all LittC2SE recordings" not in card
    assert front_matter(card)["datasets"] == ["speechbrain-rsc-synthetic-icbhi"]


def test_an_icbhi_run_says_the_device_split_is_the_official_one():
    card = model_card({"backbone": "cnn6", "role": "teacher"})
    assert "In the official split the devices differ" in card
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["icbhi-2017"]


def test_small_models_count_their_parameters_and_weights_are_named():
    card = model_card(
        {
            "backbone": "cnn6",
            "role": "teacher",
            "seed": 1,
            "parameters": 24213,
            "weights": None,
        }
    )
    assert "24,213 parameters" in card and "0.0M" not in card
    assert "Started from random weights." in card
    record = {"source": "org/x", "revision": "c0ffee", "sha256": "ab" * 32}
    card = model_card({"backbone": "ast", "role": "teacher", "weights": record})
    assert "Started from the pretrained weights org/x (revision c0ffee" in card


def test_install_instructions_are_true():
    card = model_card({"backbone": "cnn6"})
    assert "pip install speechbrain-rsc" not in card
    assert "not on PyPI" in card


def test_a_trained_run_card_has_intervals_and_its_start(tmp_path):
    shared = {
        "synthetic_folder": tmp_path / "synthetic",
        "prepare_folder": tmp_path / "prepared",
    }
    teacher(tmp_path / "run", shared, number_of_epochs=1)
    card = (tmp_path / "run" / "model" / CARD_FILE).read_text()
    test_row = next(
        line for line in card.splitlines() if line.startswith("| test |")
    )
    assert test_row.count("[") == 3  # Sp, Se and Score intervals
    assert "patient" in card and "**Not ICBHI data**" in card
    assert "Started from random weights." in card
