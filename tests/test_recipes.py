"""The recipe scripts end to end on a tiny synthetic dataset (in-process)."""

import runpy
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_rsc.bank import (
    BANK_FILENAME,
    BankMismatchError,
    LogitBank,
    find_banks,
    read_manifest,
)
from speechbrain_rsc.brains import TeacherBrain
from speechbrain_rsc.ensemble import evaluate_banks
from speechbrain_rsc.metrics import icbhi_score

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"
TINY = {
    "synthetic_recordings": 12,
    "duration": 2.0,
    "number_of_epochs": 2,
    "batch_size": 8,
    "num_workers": 0,
    "lr": 0.003,
}
CNN6_TINY = "{spec_augment: True, channels: [8, 16, 32, 64]}"


def run_script(script, hparams, **overrides):
    argv = [str(RECIPE / script), str(RECIPE / "hparams" / hparams)]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    argv += ["--noprogressbar"]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = old


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    shared = {
        **TINY,
        "synthetic_folder": root / "synthetic",
        "prepare_folder": root / "prepared",
        "backbone_options": CNN6_TINY,
    }
    return root, shared


@pytest.fixture(scope="module")
def teachers(workspace):
    root, shared = workspace
    for seed in (1, 2):
        run_script(
            "train_teacher.py",
            "cnn6.yaml",
            seed=seed,
            output_folder=root / "cnn6" / str(seed),
            **shared,
        )
    return root / "cnn6"


def test_teacher_runs_write_banks_and_models(teachers, workspace):
    root, _ = workspace
    banks = find_banks(teachers)
    assert [b.info["seed"] for b in banks] == [1, 2]
    for split in ("train", "valid", "test"):
        ids, labels = read_manifest(root / "prepared" / f"{split}.csv")
        for bank in banks:
            bank.check_manifest(split, ids)
            rows = bank.rows(split, ids)
            assert torch.equal(bank.labels[split][rows], labels)
    bank = banks[0]
    assert bank.info["role"] == "teacher" and bank.info["backbone"] == "cnn6"
    assert bank.info["epoch"] in (1, 2)
    assert bank.info["metrics"]["test"] == bank.score("test")
    assert (teachers / "1" / "model" / "model.json").is_file()
    assert (teachers / "1" / "train_log.txt").read_text().count("epoch:") == 2


def test_ensemble_script_matches_hand_computation(teachers):
    sys.path.insert(0, str(RECIPE))
    try:
        from ensemble import main
    finally:
        sys.path.remove(str(RECIPE))
    rows = main([str(teachers), "--k", "2"])
    a, b = find_banks(teachers)
    ids = a.ids["test"]
    mean = (a.logits_for("test", ids) + b.logits_for("test", ids)) / 2
    expected = icbhi_score(mean.argmax(-1), a.labels["test"])
    assert rows[0]["score"] == pytest.approx(expected["score"])
    assert evaluate_banks([a, b])["se"] == pytest.approx(expected["se"])


def test_interrupted_teacher_resumes_to_the_same_result(workspace, monkeypatch):
    root, shared = workspace
    full = root / "resume_full"
    run_script(
        "train_teacher.py", "cnn6.yaml", seed=5, output_folder=full, **shared
    )

    cut = root / "resume_cut"
    original = TeacherBrain.on_stage_start

    def interrupt(self, stage, epoch=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, stage, epoch)

    monkeypatch.setattr(TeacherBrain, "on_stage_start", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_script(
            "train_teacher.py", "cnn6.yaml", seed=5, output_folder=cut, **shared
        )
    assert not (cut / BANK_FILENAME).exists()
    monkeypatch.setattr(TeacherBrain, "on_stage_start", original)
    run_script(
        "train_teacher.py", "cnn6.yaml", seed=5, output_folder=cut, **shared
    )
    a = LogitBank.load(full / BANK_FILENAME)
    b = LogitBank.load(cut / BANK_FILENAME)
    assert a.info["metrics"] == b.info["metrics"]
    for split in ("train", "valid", "test"):
        assert torch.allclose(a.logits[split], b.logits[split], atol=1e-5)
    log = (cut / "train_log.txt").read_text()
    assert log.count("epoch: 1") == 1 and log.count("epoch: 2") == 1


def test_student_distills_from_teacher_banks(teachers, workspace):
    root, shared = workspace
    out = root / "student"
    run_script(
        "distill.py",
        "distill_cnn6.yaml",
        seed=1,
        k=2,
        teacher_bank=teachers,
        output_folder=out,
        **shared,
    )
    bank = LogitBank.load(out / BANK_FILENAME)
    assert bank.info["role"] == "student"
    assert bank.info["teacher_mode"] == "mean"
    assert bank.info["teacher_seeds"] == [1, 2]
    assert bank.info["converged"] is True
    assert bank.info["metrics"]["test"] == bank.score("test")


def test_second_generation_ensemble_of_students(teachers, workspace):
    root, shared = workspace
    students = root / "gen2"
    for seed in (1, 2):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            seed=seed,
            k=2,
            teacher_bank=teachers,
            output_folder=students / str(seed),
            **shared,
        )
    banks = find_banks(students)
    assert [b.info["seed"] for b in banks] == [1, 2]
    ids = banks[0].ids["test"]
    mean = sum(b.logits_for("test", ids) for b in banks) / 2
    expected = icbhi_score(mean.argmax(-1), banks[0].labels["test"])
    assert evaluate_banks(banks) == expected


def test_student_refuses_a_bank_of_other_cycles(teachers, workspace, tmp_path):
    root, shared = workspace
    bank = LogitBank.load(teachers / "1" / BANK_FILENAME)
    keep = bank.ids["train"][5:]
    rows = bank.rows("train", keep)
    partial = LogitBank(
        {"train": keep},
        {"train": bank.logits["train"][rows]},
        {"train": bank.labels["train"][rows]},
        bank.info,
    )
    (tmp_path / "bad" / "1").mkdir(parents=True)
    partial.save(tmp_path / "bad" / "1" / BANK_FILENAME)
    with pytest.raises(BankMismatchError, match="5 of .* 'train' cycle IDs"):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            seed=1,
            k=1,
            teacher_bank=tmp_path / "bad",
            output_folder=tmp_path / "out",
            **shared,
        )
