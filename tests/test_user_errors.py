"""What a user reads when something is wrong (issue 23, items 1 and 2):
our refusals as one message and exit status 2, bugs with their
traceback, and the cheap checks before any download or preparation.
"""

import os
import subprocess
import sys

import pytest
from conftest import RECIPE, run_recipe

from speechbrain_rsc import recipe
from speechbrain_rsc.bank import NoBanksError
from speechbrain_rsc.errors import (
    DEBUG_VARIABLE,
    RecipeError,
    SelectionError,
    reported_errors,
)
from speechbrain_rsc.models.pretrained import Pretrainer
from speechbrain_rsc.provenance import ProvenanceMismatch, record_run


def run_in_empty_folder(tmp_path, script, *args):
    """The script as a user runs it: its own process, an empty working
    folder, no network and empty weight caches.
    """
    env = {k: v for k, v in os.environ.items() if k != DEBUG_VARIABLE}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        TORCH_HOME=str(tmp_path / "torch"),
    )
    work = tmp_path / "work"
    work.mkdir()
    return subprocess.run(
        [sys.executable, str(RECIPE / script), *map(str, args)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_teacher_without_weights_prints_the_message_and_exits_2(tmp_path):
    done = run_in_empty_folder(
        tmp_path,
        "train_teacher.py",
        RECIPE / "hparams" / "bts.yaml",
        "--seed",
        7,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pretrained weights for backbone 'bts'")
    assert "hf download laion/clap-htsat-unfused" in last
    assert "--use_pretrained False" in last


def test_student_before_any_teacher_prints_the_message_and_exits_2(tmp_path):
    done = run_in_empty_folder(
        tmp_path,
        "distill.py",
        RECIPE / "hparams" / "distill_cnn6.yaml",
        "--k",
        5,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no logit banks in results/bts (expected "
        "<run>/bank.safetensors); train teachers first"
    )


def test_a_refusal_exits_2_with_its_message(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_VARIABLE)
    with pytest.raises(SystemExit) as done:
        with reported_errors():
            raise ProvenanceMismatch("results/bts/1 was made from other data")
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "error: results/bts/1 was made from other data\n"
    )


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(DEBUG_VARIABLE)
    with pytest.raises(ValueError) as error:
        with reported_errors():
            int("not a number")
    assert not isinstance(error.value, RecipeError)


def test_debug_variable_shows_the_traceback_of_a_refusal(monkeypatch):
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(SelectionError):
        with reported_errors():
            raise SelectionError("k must be a positive integer")


@pytest.mark.parametrize(
    "name",
    [
        "bank.BankMismatchError",
        "bank.CorruptBankError",
        "bank.NoBanksError",
        "brains.NoTrainingError",
        "provenance.ProvenanceMismatch",
        "run_lock.RunFolderBusy",
        "models.weights.WeightsUnavailableError",
        "data.cache.ManifestError",
        "data.icbhi.ICBHIFormatError",
        "errors.WriteError",
        "errors.OptionError",
    ],
)
def test_every_refusal_is_a_recipe_error(name):
    import importlib

    module, cls = name.rsplit(".", 1)
    error = getattr(importlib.import_module(f"speechbrain_rsc.{module}"), cls)
    assert issubclass(error, RecipeError)


@pytest.fixture
def nothing_expensive(monkeypatch):
    """Fail the test if weights are fetched or data prepared."""

    def expensive(*args, **kwargs):
        raise AssertionError("an expensive step ran before the checks")

    monkeypatch.setattr(Pretrainer, "collect_files", expensive)
    monkeypatch.setattr(recipe, "prepare_data", expensive)


def test_student_checks_its_teachers_before_fetching_or_preparing(
    tmp_path, nothing_expensive
):
    with pytest.raises(NoBanksError):
        run_recipe(
            "distill.py",
            RECIPE / "hparams" / "distill_cnn6.yaml",
            "--teacher_bank",
            tmp_path / "no_teachers",
            "--output_folder",
            tmp_path / "student",
        )


def test_a_folder_of_another_run_is_refused_before_any_fetch(
    tmp_path, nothing_expensive
):
    folder = tmp_path / "run"
    record_run(folder, {"run": {"seed": 1}, "data": {"key": "a"}})
    with pytest.raises(ProvenanceMismatch, match="run.seed: was 1, now 7"):
        run_recipe(
            "train_teacher.py",
            RECIPE / "hparams" / "cnn6.yaml",
            "--seed",
            7,
            "--output_folder",
            folder,
        )


def test_the_readme_names_the_debug_variable():
    readme = (RECIPE.parents[1] / "README.md").read_text()
    assert f"{DEBUG_VARIABLE}=1" in readme


def test_a_clip_value_that_would_change_gradients_is_a_refusal():
    from speechbrain_rsc.brains import _check_grad_norm

    with pytest.raises(RecipeError, match="gradient ascent"):
        _check_grad_norm(-1.0)
