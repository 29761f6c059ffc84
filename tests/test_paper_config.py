"""The whole paper's configuration against the paper's section 3 and 4,
and Table 2 from BTS teachers on tiny models."""

import csv
import statistics

import pytest
import yaml
from conftest import RECIPE, TINY_CLAP, run_recipe
from hyperpyyaml import load_hyperpyyaml

from speechbrain_rsc.bank import find_banks

TRANSFORMERS = {"bts", "audio_clap", "ast"}
NO_SPEC_AUGMENT = {"bts", "audio_clap"}


@pytest.fixture(scope="module")
def paper():
    with open(RECIPE / "hparams" / "paper_icbhi.yaml", encoding="utf-8") as f:
        return load_hyperpyyaml(f, {"data_folder": "/data/ICBHI"})


def test_paper_icbhi_runs_the_papers_experiment(paper):
    assert paper["backbone"] == "bts"
    assert paper["teacher_seeds"] == list(range(1, 31))  # 30 BTS teachers
    assert paper["student_seeds"] == [1, 2, 3, 4, 5]
    # Figure 2: multiples of 5 up to 30, with k = 1 and 3 (k = 0: hard)
    assert paper["ks"] == [1, 3, 5, 10, 15, 20, 25, 30]
    assert "hard" in paper["variants"]
    assert set(paper["variants"]) == {
        "hard",
        "noise",
        "teacher_noise",
        "curated",
        "raw_logits",
    }
    assert paper["variant_k"] == 5
    # Table 2: the five other backbones from BTS++[k=5], seeds 1-5
    assert set(paper["table2"]) == {
        "resnet18",
        "efficientnet_b0",
        "cnn6",
        "ast",
        "audio_clap",
    }
    assert (paper["table2_k"], paper["table2_seeds"]) == (5, [1, 2, 3, 4, 5])
    assert paper["overrides"]["protocol"] == "paper"
    assert paper["overrides"]["use_pretrained"] is True


def yaml_settings(name):
    with open(RECIPE / name, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Plain)


class _Plain(yaml.SafeLoader):
    pass


_Plain.add_multi_constructor("!", lambda loader, tag, node: None)


def test_every_run_of_the_paper_has_section_3_settings(paper):
    files = [paper["teacher_hparams"], paper["student_hparams"]]
    for entry in paper["table2"].values():
        files += [entry["teacher_hparams"], entry["student_hparams"]]
    for name in files:
        h = yaml_settings(name)
        backbone = h["backbone"]
        if backbone in TRANSFORMERS:  # Adam 5e-5, batch 8, 50 epochs
            assert (h["lr"], h["batch_size"], h["number_of_epochs"]) == (
                5e-05,
                8,
                50,
            ), name
        else:  # CNNs: Adam 1e-3, batch 128, 200 epochs
            assert (h["lr"], h["batch_size"], h["number_of_epochs"]) == (
                0.001,
                128,
                200,
            ), name
        rate = 48000 if backbone in NO_SPEC_AUGMENT else 16000
        assert (h["sample_rate"], h["duration"]) == (rate, 8.0), name
        spec_augment = h.get("spec_augment", False)
        assert spec_augment is (backbone not in NO_SPEC_AUGMENT), name
        assert h["use_pretrained"] is True and h["pretrained_path"] is None


@pytest.fixture(scope="module")
def bts_table2(tmp_path_factory):
    """run_paper with tiny BTS teachers and a CNN6 Table 2 student."""
    root = tmp_path_factory.mktemp("bts_paper")
    tiny = {
        "use_pretrained": False,
        "duration": 1.0,
        "number_of_epochs": 1,
        "batch_size": 4,
        "num_workers": 0,
    }
    config = {
        "backbone": "bts",
        "teacher_hparams": "hparams/bts.yaml",
        "student_hparams": "hparams/distill_bts.yaml",
        "data_folder": "synthetic",
        "synthetic_recordings": 8,
        "output_folder": str(root / "results"),
        "teacher_seeds": [1, 2],
        "student_seeds": [1],
        "ks": [2],
        "variants": [],
        "variant_k": 2,
        "jobs": 1,
        "table2": {
            "cnn6": {
                "teacher_hparams": "hparams/cnn6.yaml",
                "student_hparams": "hparams/distill_cnn6.yaml",
                "overrides": {
                    "channels": [8, 16, 16, 32],
                    "spec_augment": False,
                },
            }
        },
        "table2_k": 2,
        "table2_seeds": [1],
        "overrides": tiny,
        "backbone_overrides": {"clap_config": TINY_CLAP},
    }
    hparams = root / "bts.yaml"
    hparams.write_text(yaml.safe_dump(config))
    run_recipe("run_paper.py", hparams)
    return root / "results"


def test_table2_from_bts_teachers(bts_table2):
    results = bts_table2
    cnn6 = find_banks(results / "cnn6-d" / "bts_mean_k2")
    assert [b.info["teacher_backbone"] for b in cnn6] == ["bts"]
    assert cnn6[0].info["teacher_seeds"] == [1, 2]
    assert cnn6[0].info["provenance"]["teachers"][0]["backbone"] == "bts"
    with open(results / "report" / "table2.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == ["CNN6", "BTS", "Average"]
    for row, backbone in zip(rows, ("cnn6", "bts")):
        assert row["teachers"] == "BTS++[k=2]"
        hard = [
            b for b in find_banks(results / backbone) if b.info["seed"] == 1
        ]
        soft = find_banks(results / f"{backbone}-d" / "bts_mean_k2")
        means = [
            statistics.mean(b.info["metrics"]["test"]["score"] for b in runs)
            for runs in (hard, soft)
        ]
        assert row["gain"] == f"{means[1] - means[0]:+.2f}"
    text = (results / "report" / "report.md").read_text()
    assert "CNN6-d" not in text or "BTS++" in text
