"""SpeechBrain recipe checks: registry, YAML loading, keys, debug runs."""

import csv
import re
import shlex

import pytest
from conftest import RECIPE, REPO, run_recipe
from hyperpyyaml import load_hyperpyyaml

REGISTRY = REPO / "tests" / "recipes" / "ICBHI.csv"
PAPER_YAMLS = sorted((RECIPE / "hparams").glob("paper_*.yaml"))
TRAINING_YAMLS = sorted(
    p for p in (RECIPE / "hparams").glob("*.yaml") if p not in PAPER_YAMLS
)


def registry_rows():
    with open(REGISTRY, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_registry_covers_every_yaml_once():
    rows = registry_rows()
    listed = sorted(REPO / row["Hparam_file"] for row in rows)
    assert listed == sorted(TRAINING_YAMLS + PAPER_YAMLS)
    assert {row["Task"] for row in rows} == {"SoundClassification"}
    for row in rows:
        for column in ("Script_file", "Data_prep_file", "Readme_file"):
            assert (REPO / row[column]).is_file(), row[column]


@pytest.mark.parametrize("yaml_file", TRAINING_YAMLS, ids=lambda p: p.stem)
def test_yaml_loads_with_only_data_and_output_overridden(yaml_file, tmp_path):
    overrides = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    with open(yaml_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    assert hparams["modules"]["model"].sample_rate == hparams["sample_rate"]


@pytest.mark.parametrize("yaml_file", TRAINING_YAMLS, ids=lambda p: p.stem)
def test_yaml_names_its_model_class_and_fetches_nothing(
    yaml_file, tmp_path, monkeypatch
):
    """The model is a ``!new:`` of its class, its weights a Pretrainer's;
    loading the YAML fetches nothing (any fetch or socket fails here)."""
    import socket

    from speechbrain_rsc.models import BACKBONES, pretrained

    def no_fetch(*args, **kwargs):
        raise AssertionError("loading a YAML fetched weights")

    monkeypatch.setattr(pretrained, "resolve_weights", no_fetch)
    monkeypatch.setattr(socket.socket, "connect", no_fetch)
    text = yaml_file.read_text(encoding="utf-8")
    overrides = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    hparams = load_hyperpyyaml(text, overrides)
    model = hparams["model"]
    cls = type(model)
    assert f"model: !new:{cls.__module__}.{cls.__qualname__}\n" in text
    assert cls is BACKBONES[hparams["backbone"]]
    pretrainer = hparams["pretrainer"]
    assert type(pretrainer) is pretrained.Pretrainer
    assert pretrainer.loadables == {"model": model}
    assert (
        model.pending_weights == pretrained.DEFAULT_SOURCES[hparams["backbone"]]
    )
    assert model.weights_source is None
    assert not (tmp_path / "save" / "pretrained").exists()


def script_of(yaml_file):
    if yaml_file in PAPER_YAMLS:
        return RECIPE / "run_paper.py"
    if yaml_file.stem.startswith("distill_"):
        return RECIPE / "distill.py"
    return RECIPE / "train_teacher.py"


# Run options SpeechBrain's own rule accepts in a YAML without a script
# reading them.
RUN_OPTION_KEYS = {
    "debug",
    "debug_batches",
    "debug_epochs",
    "device",
    "cpu",
    "data_parallel_backend",
    "distributed_launch",
    "distributed_backend",
    "find_unused_parameters",
    "jit_module_keys",
    "auto_mix_prec",
    "max_grad_norm",
    "nonfinite_patience",
    "noprogressbar",
    "ckpt_interval_minutes",
    "grad_accumulation_factor",
    "optimizer_step_limit",
}


def keys_a_script_must_use(yaml_text):
    """Top-level keys that no later ``!ref <key>`` of the YAML uses, read as
    SpeechBrain's YAML-vs-script rule reads them: lines with ``!apply`` or
    ``!!`` declare nothing to check, indented lines are sub-keys."""
    keys = []
    for line in yaml_text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if ":" not in line and "- !ref" not in line:
            continue
        name = line[: line.find(":")]
        if name[:1] not in (" ", "\t") and not (
            "!!" in line or "!apply" in line
        ):
            keys.append(name)
        if "!ref" in line:
            for part in line.split("<")[1:]:
                used = part[: part.find(">")].split("[")[0]
                if used in keys:
                    keys.remove(used)
    return keys


def script_uses(script_text, key):
    """Whether a script visibly reads ``key`` (the same rule's patterns)."""
    patterns = (
        f'["{key}"]',
        f"hparams.{key}",
        f"modules.{key}",
        f'attr(self.hparams, "{key}',
        f'hparams.get("{key}',
    )
    return any(pattern in script_text for pattern in patterns)


@pytest.mark.parametrize(
    "yaml_file", TRAINING_YAMLS + PAPER_YAMLS, ids=lambda p: p.stem
)
def test_every_top_level_key_is_used_by_its_script_alone(yaml_file):
    code = script_of(yaml_file).read_text(encoding="utf-8")
    keys = keys_a_script_must_use(yaml_file.read_text(encoding="utf-8"))
    unused = [
        key
        for key in keys
        if not script_uses(code, key) and key not in RUN_OPTION_KEYS
    ]
    assert unused == []


def test_the_key_rule_reads_yaml_as_upstream_does():
    text = (
        "seed: 1\n__set_seed: !apply:f [!ref <seed>]\nused: 2\n"
        "unused: 3\nmodel: !apply:g\n    opt: 1\nlater: !ref <x>\nx: 4\n"
    )
    assert keys_a_script_must_use(text) == ["used", "unused", "later", "x"]
    assert script_uses('a = hparams["used"]', "used")
    assert not script_uses("a = unused", "unused")


def test_every_yaml_under_recipes_is_registered():
    # SpeechBrain's recipe-list rule: each hparams YAML in a registry row.
    listed = {REPO / row["Hparam_file"] for row in registry_rows()}
    found = {
        p
        for p in (REPO / "recipes").rglob("*.yaml")
        if "/results/" not in str(p) and "/models/" not in str(p)
    }
    assert found - listed == set()


DEBUG_RUNS = [
    ("train_teacher.py", "cnn6.yaml"),
    ("train_teacher.py", "resnet18.yaml"),
    ("train_teacher.py", "efficientnet.yaml"),
    ("train_teacher.py", "ast.yaml"),
    ("train_teacher.py", "audio_clap.yaml"),
    ("train_teacher.py", "bts.yaml"),
    ("distill.py", "distill_cnn6.yaml"),
    ("run_paper.py", "paper_icbhi.yaml"),
]


@pytest.mark.parametrize("script, yaml_name", DEBUG_RUNS)
def test_registry_debug_flags_run(script, yaml_name, tmp_path, monkeypatch):
    """As SpeechBrain's runner: only --output_folder added, from another
    working directory, which must stay untouched."""
    row = next(
        r for r in registry_rows() if r["Hparam_file"].endswith("/" + yaml_name)
    )
    out = tmp_path / "run"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_recipe(
        script,
        RECIPE / "hparams" / yaml_name,
        *shlex.split(row["test_debug_flags"]),
        f"--output_folder={out}",
        "--noprogressbar",
    )
    expected = re.search(r"file_exists=\[(.*)\]", row["test_debug_checks"])
    for name in expected.group(1).split(","):
        assert (out / name).is_file(), name
    assert list(cwd.iterdir()) == []


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
