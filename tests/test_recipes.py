"""The recipe scripts end to end on a tiny synthetic dataset (in-process)."""

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import RECIPE, run_recipe

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
from speechbrain_rsc.provenance import ProvenanceMismatch

TINY = {
    "use_pretrained": False,
    "synthetic_recordings": 12,
    "duration": 2.0,
    "number_of_epochs": 2,
    "batch_size": 8,
    "num_workers": 0,
    "lr": 0.003,
}
CNN6_TINY = {"spec_augment": True, "channels": "[8, 16, 32, 64]"}


def run_script(script, hparams, **overrides):
    args = [RECIPE / "hparams" / hparams]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    run_recipe(script, *args, "--noprogressbar")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    shared = {
        **TINY,
        "synthetic_folder": root / "synthetic",
        "prepare_folder": root / "prepared",
        **CNN6_TINY,
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
    key = banks[0].info["provenance"]["data"]["key"]
    prepared = root / "prepared" / f"manifests_{key}"
    for split in ("train", "valid", "test"):
        ids, labels = read_manifest(prepared / f"{split}.csv")
        for bank in banks:
            bank.check_manifest(split, ids)
            rows = bank.rows(split, ids)
            assert torch.equal(bank.labels[split][rows], labels)
    bank = banks[0]
    assert bank.info["role"] == "teacher" and bank.info["backbone"] == "cnn6"
    assert bank.info["epoch"] in (1, 2)
    recorded = bank.info["metrics"]["test"]
    assert {k: recorded[k] for k in ("sp", "se", "score")} == bank.score("test")
    assert recorded["score_lo"] <= recorded["score"] <= recorded["score_hi"]
    assert (teachers / "1" / "model" / "model.json").is_file()
    assert (teachers / "1" / "train_log.txt").read_text().count("epoch:") == 2


def test_ensemble_script_matches_hand_computation(teachers, tmp_path):
    sys.path.insert(0, str(RECIPE))
    try:
        from ensemble import main
    finally:
        sys.path.remove(str(RECIPE))
    rows = main([str(teachers), "--k", "2", "--out", str(tmp_path / "e.csv")])
    a, b = find_banks(teachers)
    ids = a.ids["test"]
    mean = (a.logits_for("test", ids) + b.logits_for("test", ids)) / 2
    expected = icbhi_score(mean.argmax(-1), a.labels["test"])
    assert rows[0]["score"] == pytest.approx(expected["score"])
    assert evaluate_banks([a, b])["se"] == pytest.approx(expected["se"])
    # per device: the same mean logits, restricted to each device's cycles
    with open(tmp_path / "e_by_device.csv", newline="") as f:
        by_device = list(csv.DictReader(f))
    devices = [cid.rsplit("_", 2)[1] for cid in ids]
    assert sum(int(r["cycles"]) for r in by_device) == len(ids)
    for row in by_device:
        rows_of = [i for i, d in enumerate(devices) if d == row["device"]]
        hand = icbhi_score(mean[rows_of].argmax(-1), a.labels["test"][rows_of])
        score = float(row["score"])
        if math.isnan(hand["score"]):
            assert math.isnan(score)
        else:
            assert score == pytest.approx(hand["score"])


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


def test_student_distills_from_teacher_banks(student):
    bank = LogitBank.load(student / BANK_FILENAME)
    assert bank.info["role"] == "student"
    assert bank.info["targets"]["mode"] == "mean"
    assert "teacher_mode" not in bank.info  # one record: targets
    assert bank.info["targets"]["text"].startswith("the softmax of the mean")
    assert bank.info["teacher_seeds"] == [1, 2]
    assert bank.info["converged"] is True
    recorded = bank.info["metrics"]["test"]
    assert {k: recorded[k] for k in ("sp", "se", "score")} == bank.score("test")
    assert recorded["score_lo"] <= recorded["score"] <= recorded["score_hi"]


def test_second_generation_ensemble_of_students(teachers, workspace):
    root, shared = workspace
    students = root / "gen2"
    for seed in (1, 2):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            teacher_backbone="cnn6",
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
            teacher_backbone="cnn6",
            seed=1,
            k=1,
            teacher_bank=tmp_path / "bad",
            output_folder=tmp_path / "out",
            **shared,
        )


@pytest.fixture(scope="module")
def student(teachers, workspace):
    root, shared = workspace
    out = root / "student_k2"
    run_script(
        "distill.py",
        "distill_cnn6.yaml",
        teacher_backbone="cnn6",
        seed=1,
        k=2,
        teacher_bank=teachers,
        output_folder=out,
        **shared,
    )
    return out


def test_teacher_resumed_on_other_data_is_refused(teachers, workspace):
    root, shared = workspace
    bank = teachers / "1" / BANK_FILENAME
    before = bank.read_bytes()
    other = {**shared, "synthetic_recordings": 10}
    with pytest.raises(ProvenanceMismatch) as error:
        run_script(
            "train_teacher.py",
            "cnn6.yaml",
            seed=1,
            output_folder=teachers / "1",
            **other,
        )
    message = str(error.value)
    assert "data.fingerprints.recordings" in message
    assert "data.cycles.train" in message and "delete" in message
    assert bank.read_bytes() == before


def test_folder_without_provenance_is_refused(workspace, tmp_path):
    _, shared = workspace
    (tmp_path / "out" / "save" / "CKPT+old").mkdir(parents=True)
    with pytest.raises(ProvenanceMismatch, match="no provenance.json"):
        run_script(
            "train_teacher.py",
            "cnn6.yaml",
            output_folder=tmp_path / "out",
            **shared,
        )
    assert not (tmp_path / "out" / "hyperparams.yaml").exists()


def no_files(folder):
    """True if ``folder`` holds no file (the YAML's checkpointer makes an
    empty save folder when it is loaded)."""
    return not [p for p in Path(folder).rglob("*") if p.is_file()]


def copy_teachers(teachers, folder, change=None):
    """Copy the teachers' banks; ``change(seed, bank)`` may edit them."""
    for bank in find_banks(teachers):
        seed = bank.info["seed"]
        bank = LogitBank.load(bank.source)
        if change is not None:
            change(seed, bank)
        (folder / str(seed)).mkdir(parents=True)
        bank.save(folder / str(seed) / BANK_FILENAME)
    return folder


def test_student_resumed_on_other_teachers_is_refused(
    student, teachers, workspace, tmp_path
):
    _, shared = workspace

    def retrain(seed, bank):
        if seed == 2:
            bank.logits["train"] = bank.logits["train"] + 1.0

    other = copy_teachers(teachers, tmp_path / "other", retrain)
    with pytest.raises(ProvenanceMismatch, match=r"teachers\[1\]\.sha256"):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            teacher_backbone="cnn6",
            seed=1,
            k=2,
            teacher_bank=other,
            output_folder=student,
            **shared,
        )
    # The same teachers, moved: the run is recognised and resumed.
    same = copy_teachers(teachers, tmp_path / "moved")
    run_script(
        "distill.py",
        "distill_cnn6.yaml",
        teacher_backbone="cnn6",
        seed=1,
        k=2,
        teacher_bank=same,
        output_folder=student,
        **shared,
    )
    assert LogitBank.load(student / BANK_FILENAME).info["teacher_seeds"] == [
        1,
        2,
    ]


@pytest.mark.parametrize(
    "selection, message",
    [
        ({"k": -1}, "k must be a positive"),
        ({"k": 0}, "k must be a positive"),
        ({"k": 1.5}, "k must be a positive"),
        ({"k": 3}, "3 teachers"),
        ({"teacher_seeds": "[1, 1]"}, "duplicate"),
    ],
)
def test_distill_refuses_nonsense_teacher_selection(
    teachers, workspace, tmp_path, selection, message
):
    _, shared = workspace
    with pytest.raises(ValueError, match=message):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            teacher_backbone="cnn6",
            teacher_bank=teachers,
            output_folder=tmp_path / "out",
            **{**shared, **selection},
        )
    assert no_files(tmp_path / "out")


def test_distill_refuses_non_finite_teacher_logits(
    teachers, workspace, tmp_path
):
    _, shared = workspace

    def poison(seed, bank):
        if seed == 2:
            bank.logits["train"][3, 1] = float("nan")

    bad = copy_teachers(teachers, tmp_path / "nan", poison)
    with pytest.raises(ValueError, match=r"2/bank.safetensors.*non-finite"):
        run_script(
            "distill.py",
            "distill_cnn6.yaml",
            teacher_backbone="cnn6",
            k=2,
            teacher_bank=bad,
            output_folder=tmp_path / "out",
            **shared,
        )
    assert no_files(tmp_path / "out")


def test_mid_epoch_resume_is_exact(workspace, monkeypatch):
    root, shared = workspace
    options = {**shared, "seed": 6, "ckpt_interval_steps": 1}
    full = root / "steps_full"
    run_script("train_teacher.py", "cnn6.yaml", output_folder=full, **options)

    cut = root / "steps_cut"
    original = TeacherBrain.fit_batch

    def interrupt(self, batch):
        if self.epoch == 2 and self.step == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(TeacherBrain, "fit_batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_script(
            "train_teacher.py", "cnn6.yaml", output_folder=cut, **options
        )
    monkeypatch.setattr(TeacherBrain, "fit_batch", original)
    run_script("train_teacher.py", "cnn6.yaml", output_folder=cut, **options)
    a = LogitBank.load(full / BANK_FILENAME)
    b = LogitBank.load(cut / BANK_FILENAME)
    for split in ("train", "valid", "test"):
        assert torch.equal(a.logits[split], b.logits[split])


def test_each_run_folder_keeps_the_script_that_ran(teachers, student):
    # SpeechBrain archives the file that calls create_experiment_directory
    teacher_files = {p.name for p in (teachers / "1").iterdir()}
    assert "train_teacher.py" in teacher_files
    assert "recipe.py" not in teacher_files
    student_files = {p.name for p in student.iterdir()}
    assert "distill.py" in student_files
    assert "recipe.py" not in student_files
