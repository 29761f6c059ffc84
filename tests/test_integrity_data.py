"""What a run reads must be what was trained and prepared: no copied
teacher counted twice, no hand-edited bank or manifest, every cycle
checked (issue 20).

Each test here failed on the code before: a copied run folder gave the
seeds "1 1", edited manifests trained silently, and odd banks or rows
crashed deep inside torch or libsndfile.
"""

import csv
import json
import os
import re
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file

from speechbrain_rsc.bank import (
    BANK_FORMAT,
    BankMismatchError,
    CorruptBankError,
    LogitBank,
    find_banks,
    select_banks,
)
from speechbrain_rsc.data import cache
from speechbrain_rsc.data.cache import ManifestError
from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.data.synthetic import make_synthetic_icbhi
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.distillation import Targets
from speechbrain_rsc.ensemble import evaluate_banks, sweep
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.metrics import confusion_matrix
from speechbrain_rsc.models import build_backbone

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"
IDS = ["r1_0", "r1_1", "r2_0"]
LABELS = torch.tensor([0, 1, 3])
FAST = {"sample_rate": 4000, "duration": 1.0, "valid_fraction": 0.25}
RATE = 16000


def ensemble_main():
    return runpy.run_path(str(RECIPE / "ensemble.py"))["main"]


def refused(capsys, argv):
    """ensemble.py's refusal of ``argv``: exit status 2, its message."""
    with pytest.raises(SystemExit) as exit_info:
        ensemble_main()(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def save_bank(path, seed, logits=None, labels=LABELS):
    if logits is None:
        logits = torch.eye(4)[[0, 1, 3]] * seed
    bank = LogitBank(
        {"train": IDS},
        {"train": logits},
        {"train": labels},
        {"backbone": "cnn6", "seed": seed},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    bank.save(path)
    return path


def save_raw_bank(path, logits, labels, info=None):
    """A bank file written past LogitBank's checks, as a hand edit would."""
    header = {
        "format": BANK_FORMAT,
        "ids": {"train": IDS},
        "fingerprints": LogitBank(
            {"train": IDS}, {"train": torch.zeros(3, 4)}, {"train": LABELS}
        ).fingerprints,
        "info": info or {"backbone": "cnn6", "seed": 2},
    }
    tensors = {"logits/train": logits, "labels/train": labels}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), {"bank": json.dumps(header)})
    return path


# ---------------------------------------------- item 4: one seed twice


def test_a_copied_run_folder_is_refused_naming_both_banks(tmp_path, capsys):
    one = save_bank(tmp_path / "1" / "bank.safetensors", 1)
    save_bank(tmp_path / "2" / "bank.safetensors", 2)
    shutil.copytree(tmp_path / "1", tmp_path / "1_copy")
    copy = tmp_path / "1_copy" / "bank.safetensors"
    banks = find_banks(tmp_path)
    message = rf"seed 1 is held by 2 banks \({one}, {copy}\).*keep one"
    for selection in ({"k": 2}, {"seeds": [2]}, {"k": 1, "curate_on": None}):
        with pytest.raises(BankMismatchError, match=message):
            select_banks(banks, **selection)
    with pytest.raises(BankMismatchError, match=message):
        sweep(banks, "train")
    with pytest.raises(BankMismatchError, match=message):
        Targets("mean", 2).select_teachers(tmp_path, backbone="cnn6")
    assert re.search(
        message,
        refused(capsys, [str(tmp_path), "--k", "2", "--split", "train"]),
    )
    shutil.rmtree(tmp_path / "1_copy")
    chosen = Targets("mean", 2).select_teachers(tmp_path, backbone="cnn6")
    assert [b.info["seed"] for b in chosen] == [1, 2]


# ------------------------------------- items 6 and 9: hand-edited banks


@pytest.mark.parametrize("width", [3, 5])
def test_a_bank_without_four_logits_per_cycle_is_refused(
    tmp_path, width, capsys
):
    save_bank(tmp_path / "1" / "bank.safetensors", 1)
    bad = save_raw_bank(
        tmp_path / "2" / "bank.safetensors", torch.zeros(3, width), LABELS
    )
    expected = rf"{bad}: 'train' logits are \[3, {width}\], expected \[3, 4\]"
    with pytest.raises(CorruptBankError, match=expected):
        find_banks(tmp_path)
    with pytest.raises(BankMismatchError, match=expected):
        LogitBank.open(bad)
    assert re.search(
        expected,
        refused(capsys, [str(tmp_path), "--k", "1", "--split", "train"]),
    )
    # in memory too: a [n, 3] bank is never scored
    with pytest.raises(BankMismatchError, match=r"logits are \[3, 3\]"):
        LogitBank({"t": IDS}, {"t": torch.zeros(3, 3)}, {"t": LABELS})


def test_a_bank_label_that_is_not_a_class_is_named_by_row(tmp_path, capsys):
    save_bank(tmp_path / "1" / "bank.safetensors", 1)
    bad = save_raw_bank(
        tmp_path / "2" / "bank.safetensors",
        torch.zeros(3, 4),
        torch.tensor([0, 1, 99]),
    )
    banks = find_banks(tmp_path)  # headers only: the labels are not read
    expected = rf"{bad}: 'train' label 99 at row 2 \(cycle r2_0\) is not a"
    with pytest.raises(CorruptBankError, match=expected):
        select_banks(banks, k=2)
    with pytest.raises(CorruptBankError, match=expected):
        evaluate_banks(banks, "train")
    assert re.search(
        expected,
        refused(capsys, [str(tmp_path), "--k", "2", "--split", "train"]),
    )
    assert select_banks(banks, k=1)[0].info["seed"] == 1
    with pytest.raises(BankMismatchError, match="label 7 at row 0"):
        LogitBank({"t": IDS}, {"t": torch.zeros(3, 4)}, {"t": LABELS + 7})
    # and the metric itself names a class out of range
    with pytest.raises(ValueError, match="target 99 at row 1"):
        confusion_matrix([0, 0], [0, 99])


def test_bank_metadata_nested_too_deep_is_a_named_corrupt_bank(
    tmp_path, capsys
):
    save_bank(tmp_path / "1" / "bank.safetensors", 1)
    path = tmp_path / "2" / "bank.safetensors"
    path.parent.mkdir()
    nested = "[" * 100_000 + "]" * 100_000
    header = (
        f'{{"format": "{BANK_FORMAT}", "ids": {{}}, "fingerprints": {{}}, '
        f'"info": {nested}}}'
    )
    save_file({"x": torch.zeros(1)}, str(path), {"bank": header})
    with pytest.raises(CorruptBankError, match=rf"{path}: header nested too"):
        find_banks(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        ensemble_main()([str(tmp_path), "--k", "1", "--split", "train"])
    assert exit_info.value.code == 2
    assert "header nested too deeply" in capsys.readouterr().err


def test_ensemble_script_refuses_non_finite_banks_in_one_line(tmp_path, capsys):
    save_bank(tmp_path / "1" / "bank.safetensors", 1)
    logits = torch.zeros(3, 4)
    logits[1, 2] = float("nan")
    bad = save_bank(tmp_path / "2" / "bank.safetensors", 2, logits)
    with pytest.raises(SystemExit) as exit_info:
        ensemble_main()([str(tmp_path), "--k", "2", "--split", "train"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"ensemble.py: {bad}: 1 of 3 'train' rows hold")
    assert message.count("\n") == 1  # one line


# -------------------------------------------- items 6 and 9: manifests


def write_manifest(folder, rates, labels=None):
    rows = []
    for i, rate in enumerate(rates):
        path = folder / f"c_{i}.wav"
        signal = np.zeros(rate // 10, dtype="float32")
        soundfile.write(path, signal, rate, subtype="FLOAT")
        label = i % 4 if labels is None else labels[i]
        rows.append({"ID": f"c_{i}", "wav": str(path), "label": label})
    csv_path = folder / "test.csv"
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["ID", "wav", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def test_every_manifest_row_is_checked_not_only_the_first(tmp_path):
    manifest = write_manifest(tmp_path, [RATE, RATE, 8000])
    with pytest.raises(
        ManifestError,
        match=rf"{manifest}, line 4 \(cycle c_2\): cycles are cached at "
        r"8000 Hz .* but the model expects 16000 Hz",
    ):
        dataio_prep({"test": manifest}, RATE)


@pytest.mark.parametrize("label", ["7", "-1", "x", ""])
def test_a_manifest_label_that_is_not_a_class_is_named(tmp_path, label):
    manifest = write_manifest(tmp_path, [RATE] * 3, labels=[0, label, 2])
    with pytest.raises(
        ManifestError,
        match=rf"{manifest}, line 3 \(cycle c_1\): label '{label}' is not a "
        r"class 0-3",
    ):
        dataio_prep({"test": manifest}, RATE)


def test_a_missing_cycle_wav_is_named_with_its_row(tmp_path):
    manifest = write_manifest(tmp_path, [RATE] * 3)
    (tmp_path / "c_1.wav").unlink()
    (tmp_path / "c_2.wav").write_bytes(b"not audio")
    with pytest.raises(ManifestError, match=r"line 3 \(cycle c_1\).*does not"):
        dataio_prep({"test": manifest}, RATE)
    write_manifest(tmp_path, [RATE] * 2)
    (tmp_path / "c_1.wav").write_bytes(b"not audio")
    with pytest.raises(ManifestError, match=r"line 3 .*c_1.wav cannot be read"):
        dataio_prep({"test": manifest}, RATE)


def test_ensemble_audio_with_a_missing_wav_exits_naming_the_row(
    tmp_path, capsys
):
    runs = tmp_path / "runs"
    manifest = write_manifest(tmp_path, [RATE] * 4)
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_backbone("cnn6", {"channels": (8, 16, 16, 32)}).eval()
        model.sample_rate = RATE
        save_trained(model, runs / str(seed) / "model", {"seed": seed})
        bank = LogitBank(
            {"test": ["c_0", "c_1", "c_2", "c_3"]},
            {"test": torch.zeros(4, 4)},
            {"test": torch.tensor([0, 1, 2, 3])},
            {"backbone": "cnn6", "seed": seed},
        )
        bank.save(runs / str(seed) / "bank.safetensors")
    (tmp_path / "c_3.wav").unlink()
    with pytest.raises(SystemExit) as exit_info:
        ensemble_main()(
            [str(runs), "--k", "2", "--audio", str(manifest), "--device", "cpu"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"ensemble.py: {manifest}, line 5 (cycle c_3)" in err


@pytest.fixture
def prepared(tmp_path):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=6, seed=2)
    return (
        data,
        tmp_path / "prepared",
        prepare_icbhi(data, tmp_path / "prepared", **FAST),
    )


def test_hand_edited_manifest_labels_are_refused(prepared):
    data, save, outputs = prepared
    path = Path(outputs["train"])
    text = path.read_text()
    rows = list(csv.DictReader(text.splitlines()))
    rows[0]["label"] = str((int(rows[0]["label"]) + 1) % 4)  # still 0-3
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    edited = rf"{path} was changed after its preparation wrote it.*delete "
    with pytest.raises(ManifestError, match=edited):
        prepare_icbhi(data, save, **FAST)
    with pytest.raises(ManifestError, match=edited):
        dataio_prep({"train": path}, FAST["sample_rate"])
    path.write_text(text)  # restored: accepted again
    assert prepare_icbhi(data, save, **FAST) == outputs
    assert len(dataio_prep({"train": path}, FAST["sample_rate"])["train"])


def test_a_summary_without_the_manifest_checksums_is_refused(prepared):
    data, save, outputs = prepared
    summary = Path(outputs["summary"])
    text = summary.read_text()
    edited = json.loads(text)
    del edited[cache.DIGESTS]
    summary.write_text(json.dumps(edited))
    with pytest.raises(ManifestError, match=r"does not record the SHA-256"):
        prepare_icbhi(data, save, **FAST)
    summary.write_text(text)
    assert prepare_icbhi(data, save, **FAST) == outputs


# ------------------------------------------- item 5: changed recordings


def cycles_of(outputs):
    """Split -> [(ID, samples)] of every manifest row."""
    return {
        split: [
            (row["ID"], soundfile.read(row["wav"], dtype="float32")[0])
            for row in csv.DictReader(open(outputs[split], newline=""))
        ]
        for split in ("train", "valid", "test")
    }


def count_hashing(monkeypatch):
    hashed = []
    real = cache.DigestCache._hash

    def counting(self, path):
        hashed.append(Path(path).name)
        return real(self, path)

    monkeypatch.setattr(cache.DigestCache, "_hash", counting)
    return hashed


def test_a_recording_changed_in_the_middle_is_never_served_stale(
    prepared, tmp_path, monkeypatch
):
    data, save, outputs = prepared
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)
    hashed = count_hashing(monkeypatch)
    # the fixture's files were written just now: hashed, then remembered
    assert prepare_icbhi(data, save, **FAST) == outputs
    assert (save / cache.DIGESTS_FILE).is_file()
    hashed.clear()
    assert prepare_icbhi(data, save, **FAST) == outputs
    assert hashed == []
    # zero the middle: same size, same first and last 64 KiB
    wavs = [
        w for w in sorted(Path(data).rglob("*.wav")) if w.stat().st_size > 2**17
    ]
    assert len(wavs) == 5
    for wav in wavs:
        stat = wav.stat()
        content = bytearray(wav.read_bytes())
        middle = slice(len(content) // 2 - 1000, len(content) // 2 + 1000)
        content[middle] = bytes(2000)
        wav.write_bytes(bytes(content))
        os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert wav.stat().st_mtime_ns == stat.st_mtime_ns
    changed = prepare_icbhi(data, save, **FAST)
    assert sorted(hashed) == sorted(w.name for w in wavs)  # only those
    assert changed["train"] != outputs["train"]
    fresh = prepare_icbhi(data, tmp_path / "fresh", **FAST)
    got, want = cycles_of(changed), cycles_of(fresh)
    for split in want:
        assert [i for i, _ in got[split]] == [i for i, _ in want[split]]
        for (_, x), (_, y) in zip(got[split], want[split]):
            np.testing.assert_array_equal(x, y)


def test_an_unreadable_digest_file_only_costs_a_full_hashing(
    prepared, monkeypatch
):
    data, save, outputs = prepared
    (save / cache.DIGESTS_FILE).write_text("{not json")
    hashed = count_hashing(monkeypatch)
    assert prepare_icbhi(data, save, **FAST) == outputs
    assert len(hashed) == 2 * len(list(Path(data).rglob("*.wav")))
