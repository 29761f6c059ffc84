"""SpeechBrain recipe checks: registry, YAML loading, keys, debug runs."""

import csv
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "ICBHI"
REGISTRY = REPO / "tests" / "recipes" / "ICBHI.csv"
PAPER_YAMLS = sorted((RECIPE / "hparams").glob("paper_*.yaml"))
TRAINING_YAMLS = sorted(
    p for p in (RECIPE / "hparams").glob("*.yaml") if p not in PAPER_YAMLS
)
# Code that reads a recipe's hparams on its behalf.
LIBRARY = [
    REPO / "speechbrain_rsc" / "recipe.py",
    REPO / "speechbrain_rsc" / "brains.py",
]


def registry_rows():
    with open(REGISTRY, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_registry_covers_every_training_yaml():
    rows = registry_rows()
    listed = sorted(REPO / row["Hparam_file"] for row in rows)
    assert listed == TRAINING_YAMLS
    for row in rows:
        for column in ("Script_file", "Data_prep_file", "Readme_file"):
            assert (REPO / row[column]).is_file(), row[column]


@pytest.mark.parametrize("yaml_file", TRAINING_YAMLS, ids=lambda p: p.stem)
def test_yaml_loads_with_only_data_and_output_overridden(yaml_file, tmp_path):
    overrides = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    with open(yaml_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    assert hparams["modules"]["model"].sample_rate == hparams["sample_rate"]


def script_of(yaml_file):
    if yaml_file in PAPER_YAMLS:
        return RECIPE / "run_paper.py"
    if yaml_file.stem.startswith("distill_"):
        return RECIPE / "distill.py"
    return RECIPE / "train_teacher.py"


@pytest.mark.parametrize(
    "yaml_file", TRAINING_YAMLS + PAPER_YAMLS, ids=lambda p: p.stem
)
def test_every_top_level_key_is_used(yaml_file):
    text = yaml_file.read_text(encoding="utf-8")
    keys = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", text, flags=re.M)
    code = script_of(yaml_file).read_text()
    code += "".join(p.read_text() for p in LIBRARY)
    unused = [
        key
        for key in keys
        if not key.startswith("__")
        and f"<{key}>" not in text
        and f'"{key}"' not in code
        and f".{key}" not in code
    ]
    assert unused == []


DEBUG_RUNS = [
    ("train_teacher.py", "cnn6.yaml"),
    ("train_teacher.py", "resnet18.yaml"),
    ("train_teacher.py", "efficientnet.yaml"),
    ("train_teacher.py", "ast.yaml"),
    ("train_teacher.py", "audio_clap.yaml"),
    ("train_teacher.py", "bts.yaml"),
    ("distill.py", "distill_cnn6.yaml"),
]


@pytest.mark.parametrize("script, yaml_name", DEBUG_RUNS)
def test_registry_debug_flags_run(script, yaml_name, tmp_path):
    row = next(
        r for r in registry_rows() if r["Hparam_file"].endswith("/" + yaml_name)
    )
    out = tmp_path / "run"
    argv = [str(RECIPE / script), str(RECIPE / "hparams" / yaml_name)]
    argv += shlex.split(row["test_debug_flags"])
    argv += [
        f"--output_folder={out}",
        f"--synthetic_folder={tmp_path / 'synthetic'}",
        f"--prepare_folder={tmp_path / 'prepared'}",
        "--noprogressbar",
    ]
    old, sys.argv = sys.argv, argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = old
    expected = re.search(r"file_exists=\[(.*)\]", row["test_debug_checks"])
    for name in expected.group(1).split(","):
        assert (out / name).is_file(), name


# The reference trainings: BTS / Audio-CLAP use the BTS code, AST the
# Patch-Mix code with --ma_update --ma_beta 0.5; the CNNs do not average.
MOVING_AVERAGE = {
    "bts": 0.5,
    "audio_clap": 0.5,
    "ast": 0.5,
    "cnn6": None,
    "resnet18": None,
    "efficientnet_b0": None,
}


@pytest.mark.parametrize("yaml_file", TRAINING_YAMLS, ids=lambda p: p.stem)
def test_reference_training_details_are_on(yaml_file, tmp_path):
    overrides = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    with open(yaml_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    assert hparams["ma_beta"] == MOVING_AVERAGE[hparams["backbone"]]
    assert hparams["best_min_se"] == 5.0
    assert hparams["cuda_precision"] == "fp16"
    assert hparams["train_dataloader_opts"]["drop_last"] is True
    assert hparams["protocol"] == "validation"
    if yaml_file.stem.startswith("distill_"):
        # Table 2: every student distils from BTS++[k=5], mean teacher
        assert hparams["teacher_backbone"] == "bts"
        assert (hparams["k"], hparams["teacher_mode"]) == (5, "mean")
