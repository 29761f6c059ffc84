"""A run that trained nothing, or whose outputs disagree, or that meets
another run's folder, never exits 0 with a result (issue 20: items 1-3, 7
and 8).
"""

import fcntl
import shutil

import pytest
import torch
from conftest import RECIPE, run_recipe

from speechbrain_rsc import recipe
from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.brains import NoTrainingError
from speechbrain_rsc.checkpointer import Checkpointer
from speechbrain_rsc.provenance import ProvenanceMismatch
from speechbrain_rsc.recipe import check_training_runs, run_is_complete
from speechbrain_rsc.run_lock import LOCK_FILE, RunFolderBusy
from speechbrain_rsc.trained_model import read_weights, save_weights

TINY = {
    "use_pretrained": False,
    "synthetic_recordings": 8,
    "duration": 1.0,
    "number_of_epochs": 2,
    "batch_size": 8,
    "num_workers": 0,
    "spec_augment": False,
    "channels": "[4, 8, 8, 8]",
}


def teacher(folder, shared, **overrides):
    args = [RECIPE / "hparams" / "cnn6.yaml", "--noprogressbar"]
    for key, value in {**TINY, **shared, **overrides}.items():
        args += [f"--{key}", value]
    run_recipe("train_teacher.py", *args, "--output_folder", folder)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("completion")
    return {
        "synthetic_folder": root / "synthetic",
        "prepare_folder": root / "prepared",
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared):
    folder = tmp_path_factory.mktemp("finished") / "1"
    teacher(folder, shared)
    return folder


@pytest.mark.parametrize("epochs", [0, -3])
def test_no_epoch_is_refused_before_any_output(tmp_path, shared, epochs):
    folder = tmp_path / "run"
    with pytest.raises(NoTrainingError, match=f"number_of_epochs is {epochs}"):
        teacher(folder, shared, number_of_epochs=epochs)
    assert not (folder / BANK_FILENAME).exists()
    assert not (folder / "model").exists()


def test_a_batch_larger_than_the_train_split_is_refused(tmp_path, shared):
    folder = tmp_path / "run"
    with pytest.raises(NoTrainingError) as error:
        teacher(folder, shared, batch_size=100_000)
    message = str(error.value)
    assert "fewer than one batch of batch_size 100000 with drop_last" in (
        message
    )
    assert not (folder / BANK_FILENAME).exists()


def test_steps_per_epoch_by_hand():
    kwargs = {"batch_size": 128, "drop_last": True}
    with pytest.raises(NoTrainingError, match="has 127 cycles"):
        check_training_runs(50, 127, kwargs)
    check_training_runs(50, 128, kwargs)
    check_training_runs(1, 1, {"batch_size": 128, "drop_last": False})
    with pytest.raises(NoTrainingError):
        check_training_runs(1.5, 1000, kwargs)


def test_the_real_sample_with_the_default_batch_is_refused(
    tmp_path, icbhi_sample
):
    with pytest.raises(NoTrainingError, match="batch_size 128"):
        run_recipe(
            "train_teacher.py",
            RECIPE / "hparams" / "cnn6.yaml",
            "--data_folder",
            icbhi_sample,
            "--protocol",
            "paper",
            "--use_pretrained",
            "False",
            "--output_folder",
            tmp_path / "run",
            "--prepare_folder",
            tmp_path / "prepared",
            "--noprogressbar",
        )


def test_a_finished_run_is_complete_and_records_its_steps(finished):
    assert run_is_complete(finished) == (True, "")
    bank = LogitBank.open(finished / BANK_FILENAME)
    assert bank.info["selection"]["optimizer_steps"] >= 1
    assert bank.info["provenance"]["run"]["seed"] == 1


def test_a_model_of_another_epoch_makes_the_run_incomplete(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    weights = copy / "model" / "model.ckpt"
    state = read_weights(weights)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.033
    save_weights(state, weights)
    done, why = run_is_complete(copy)
    assert not done
    assert "computed with another model" in why


def test_a_kill_during_export_leaves_no_bank(
    finished, shared, tmp_path, monkeypatch
):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "save_trained", killed)
    with pytest.raises(KeyboardInterrupt):
        teacher(copy, shared)  # resumes the finished run, then exports
    assert not (copy / BANK_FILENAME).exists()
    assert run_is_complete(copy)[0] is False


@pytest.mark.parametrize(
    "option, value, line",
    [
        ("seed", 9, "run.seed: was 1, now 9"),
        ("lr", 0.01, "run.lr: was 0.001, now 0.01"),
        ("number_of_epochs", 3, "run.number_of_epochs: was 2, now 3"),
        ("channels", "[4, 8, 8, 16]", "run.channels[3]: was 8, now 16"),
    ],
)
def test_a_rerun_with_other_options_is_refused_naming_them(
    finished, shared, option, value, line
):
    bank = (finished / BANK_FILENAME).read_bytes()
    with pytest.raises(ProvenanceMismatch) as error:
        teacher(finished, shared, **{option: value})
    assert f"  - {line}" in str(error.value).splitlines()
    assert (finished / BANK_FILENAME).read_bytes() == bank


def test_a_rerun_with_the_same_options_resumes(finished, shared):
    teacher(finished, shared, num_workers=0)
    assert run_is_complete(finished)[0]


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, shared):
    folder = tmp_path / "busy"
    folder.mkdir()
    with open(folder / LOCK_FILE, "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("process 4242 on node17\n")
        other.flush()
        with pytest.raises(RunFolderBusy, match="process 4242 on node17"):
            teacher(folder, shared)
    assert not (folder / "train_log.txt").exists()


def test_an_output_folder_that_cannot_be_written_is_named(tmp_path, shared):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write in output_folder"):
        teacher(blocker / "run", shared)


def test_a_full_disk_is_named_when_checkpointing(tmp_path, monkeypatch):
    ckpts = Checkpointer(tmp_path / "save", {"w": torch.nn.Linear(2, 2)})

    def full(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0)
    )
    with pytest.raises(OSError) as error:
        ckpts.save_checkpoint()
    message = str(error.value)
    assert str(tmp_path / "save") in message
    assert "is full" in message and "iostream error" in message


def test_a_full_disk_is_named_when_exporting(tmp_path, monkeypatch):
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0)
    )

    def full(tmp):
        raise RuntimeError("basic_ios::clear: iostream error")

    target = tmp_path / "model" / "model.ckpt"
    with pytest.raises(OSError, match="is full") as error:
        write_atomically(target, full)
    assert str(target) in str(error.value)
    assert list(target.parent.iterdir()) == []


def test_a_writer_bug_is_not_mistaken_for_a_full_disk(tmp_path):
    def buggy(tmp):
        raise RuntimeError("a bug in the writer")

    target = tmp_path / "model" / "model.ckpt"
    with pytest.raises(RuntimeError, match="a bug in the writer") as error:
        write_atomically(target, buggy)
    assert not isinstance(error.value, OSError)
    assert list(target.parent.iterdir()) == []


def test_another_bootstrap_resumes_the_same_run(finished, shared):
    teacher(finished, shared, bootstrap=0)
    assert run_is_complete(finished)[0]
