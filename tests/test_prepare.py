"""prepare_icbhi end to end: real sample, bad input, caching, splits, CLI."""

import csv
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_rsc.data.cache import (
    CACHE_DONE_FILE,
    MANIFEST_COLUMNS,
    MANIFESTS_PREFIX,
)
from speechbrain_rsc.data.icbhi import ICBHIFormatError
from speechbrain_rsc.data.prepare import prepare_icbhi

REPO = Path(__file__).resolve().parents[1]
SR = 4000  # source and target rate of the small fixtures
FAST = {"sample_rate": SR, "duration": 1.0}  # 4000-sample cycles
DEMOGRAPHICS = (
    "101\t3\tF\tNA\t19\t99\n"
    "102\t0.75\tF\tNA\t9.8\t73\n"
    "103\t70\tF\t33\tNA\tNA\n"
    "104\t70\tM\t28.47\tNA\tNA\n"
    "223\tNA\tNA\tNA\tNA\tNA\n"
)
DIAGNOSES = "101\tURTI\r\n102\tHealthy\r\n103\tAsthma\r\n104\tCOPD\r\n223\tCOPD"


def signal(seconds, sr=SR, channels=1, seed=0):
    """A deterministic breath-like test signal."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = 0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / sr)
    x = (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def add_recording(
    audio, stem, lines, seconds=3.0, sr=SR, subtype="PCM_16", channels=1
):
    """Write ``stem.wav`` and ``stem.txt`` (lines ``None``: no txt)."""
    audio.mkdir(parents=True, exist_ok=True)
    if seconds is not None:
        data = signal(seconds, sr, channels, seed=len(stem))
        sf.write(audio / f"{stem}.wav", data, sr, subtype=subtype)
    if lines is not None:
        (audio / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))


def make_official(root, split, demographics=DEMOGRAPHICS, diagnoses=DIAGNOSES):
    """Metadata and split of an official layout; returns the audio folder."""
    root.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{stem}\t{name}\r\n" for stem, name in split.items())
    (root / "ICBHI_challenge_train_test.txt").write_text(text)
    (root / "ICBHI_Challenge_demographic_information.txt").write_text(
        demographics
    )
    (root / "ICBHI_Challenge_diagnosis.txt").write_text(diagnoses)
    audio = root / "ICBHI_final_database"
    audio.mkdir(exist_ok=True)
    return audio


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def summary_of(outputs):
    return json.loads(Path(outputs["summary"]).read_text())


def small_dataset(root):
    """Two good recordings, patients 101 (train) and 103 (test)."""
    audio = make_official(
        root,
        {"101_1b1_Al_sc_Meditron": "train", "103_2b2_Ar_mc_LittC2SE": "test"},
    )
    add_recording(
        audio, "101_1b1_Al_sc_Meditron", ["0.1\t0.9\t0\t0", "0.9\t2.5\t1\t0"]
    )
    add_recording(audio, "103_2b2_Ar_mc_LittC2SE", ["0.5\t1\t0\t1"], sr=8000)
    return root


# ------------------------------------------------------- real ICBHI sample


@pytest.fixture(scope="module")
def sample_outputs(icbhi_sample, tmp_path_factory):
    save = tmp_path_factory.mktemp("sample_prepared")
    return prepare_icbhi(icbhi_sample, save, valid_fraction=0)


def test_sample_counts_and_splits(sample_outputs):
    rows = {s: read_csv(sample_outputs[s]) for s in ("train", "valid", "test")}
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [6, 0, 91]
    assert {r["recording"] for r in rows["train"]} == {"103_2b2_Ar_mc_LittC2SE"}
    assert len({r["recording"] for r in rows["test"]}) == 9
    header = Path(sample_outputs["valid"]).read_text().splitlines()
    assert header == [",".join(MANIFEST_COLUMNS)]
    summary = summary_of(sample_outputs)
    assert summary["missing_from_disk"]["count"] == 910
    assert summary["skips"]["count"] == 0 and summary["renamed"] == []
    assert summary["splits"]["total"]["cycles"] == 97
    # ten recordings are not the official split's 4142 / 2756 cycles
    assert summary["official_split"] == {
        "expected": {"train": 4142, "test": 2756},
        "found": {"train": 6, "test": 91},
        "matches": False,
    }
    assert summary["splits"]["train"]["classes"] == {
        "normal": 2,
        "crackle": 0,
        "wheeze": 4,
        "both": 0,
    }


def test_sample_labels_equal_annotation_lines(sample_outputs, icbhi_sample):
    audio = icbhi_sample / "ICBHI_final_database"
    for split in ("train", "test"):
        for row in read_csv(sample_outputs[split]):
            stem, index = row["ID"].rsplit("_", 1)
            assert stem == row["recording"]
            lines = (audio / f"{stem}.txt").read_text().splitlines()
            start, end, crackle, wheeze = lines[int(index)].split()
            assert (row["start"], row["end"]) == (
                str(float(start)),
                str(float(end)),
            )
            assert (row["crackle"], row["wheeze"]) == (crackle, wheeze)
            assert int(row["label"]) == int(crackle) + 2 * int(wheeze)


def test_sample_cycles_are_cached_at_exact_length(sample_outputs):
    rates = set()
    for split in ("train", "test"):
        for row in read_csv(sample_outputs[split]):
            info = sf.info(row["wav"])
            assert Path(row["wav"]).is_absolute()
            assert (info.samplerate, info.frames, info.subtype) == (
                16000,
                128000,
                "FLOAT",
            )
            assert float(row["duration"]) == 8.0
            rates.add(row["source_sample_rate"])
    assert rates == {"44100", "4000"}
    summary = summary_of(sample_outputs)
    assert summary["splits"]["test"]["source_sample_rates"] == {
        "4000": 6,
        "44100": 3,
    }


def reference_cycle(wav, start, end, sr=16000, seconds=8):
    """The de facto pipeline, written with torchaudio's own transforms."""
    data, orig = sf.read(wav, dtype="float32")
    x = torchaudio.transforms.Resample(orig, sr)(torch.from_numpy(data)[None])
    n = int(sr / 16)
    x = torchaudio.transforms.Fade(n, n, "linear")(x)
    x = x[:, min(int(start * sr), x.shape[1]) : min(int(end * sr), x.shape[1])]
    target = seconds * sr
    if x.shape[1] > target:
        return x[0, :target].numpy()
    x = x.repeat(1, -(-target // x.shape[1]))[:, :target]
    return torchaudio.transforms.Fade(0, n, "linear")(x)[0].numpy()


@pytest.mark.parametrize(
    "cycle_id",
    ["103_2b2_Ar_mc_LittC2SE_2", "104_1b1_Ar_sc_Litt3200_0"],  # 44.1k, 4k
)
def test_sample_cycle_equals_pipeline_reference(
    sample_outputs, icbhi_sample, cycle_id
):
    rows = read_csv(sample_outputs["train"]) + read_csv(sample_outputs["test"])
    row = next(r for r in rows if r["ID"] == cycle_id)
    wav = icbhi_sample / "ICBHI_final_database" / f"{row['recording']}.wav"
    expected = reference_cycle(wav, float(row["start"]), float(row["end"]))
    cached, _ = sf.read(row["wav"], dtype="float32")
    # transforms.Resample and functional.resample round differently
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-6)


def test_sample_metadata_and_prompt(sample_outputs):
    row = read_csv(sample_outputs["train"])[0]
    assert (row["patient"], row["age"], row["age_group"], row["sex"]) == (
        "103",
        "70",
        "adult",
        "F",
    )
    assert (row["location"], row["mode"], row["device"]) == (
        "Ar",
        "mc",
        "LittC2SE",
    )
    assert row["diagnosis"] == "Asthma"
    assert row["prompt"] == (
        "This sound was recorded from the right anterior chest of an adult "
        "female patient, using a LittC2SE stethoscope."
    )
    test_rows = read_csv(sample_outputs["test"])
    child = next(r for r in test_rows if r["patient"] == "102")
    assert (child["age"], child["age_group"]) == ("0.75", "pediatric")


def test_sample_manifests_load_in_speechbrain(sample_outputs):
    dataset = DynamicItemDataset.from_csv(sample_outputs["test"])
    assert len(dataset) == 91
    first = dataset.data["101_1b1_Al_sc_Meditron_0"]
    assert first["duration"] == 8.0 and first["label"] == "0"


# ------------------------------------------------------------- bad input


@pytest.fixture
def messy(tmp_path):
    """One official layout holding every kind of per-item problem."""
    split = {
        "101_1b1_Al_sc_Meditron": "train",
        "101_1b1_Pr_sc_Meditron": "train",
        "102_1b1_Ar_sc_Meditron": "train",
        "102_1b1_Tc_sc_Meditron": "train",
        "102_1b1_Ll_sc_Meditron": "train",
        "102_1b1_Lr_sc_Meditron": "train",
        "102_1b1_Pl_sc_Meditron": "train",
        "223_1b1_Tc_sc_Meditron": "train",
        "103_1b1_Xx_sc_Meditron": "test",
        "103_2b2_Ar_mc_LittC2SE": "test",
        "104_1b1_Pr_sc_Litt3200": "test",
        "226_1b1_Pl_sc_Meditron": "test",
        "150_1b1_Al_sc_Meditron": "test",
    }
    audio = make_official(
        tmp_path / "icbhi",
        split,
        diagnoses=DIAGNOSES + "\r\n226\tPneumonia",
    )
    add_recording(
        audio,
        "101_1b1_Al_sc_Meditron",
        [
            "0.1\t0.9\t0\t0",  # 1 kept
            "0.9\t1.8\t1\t0",  # 2 kept
            "1.8 2.2 0 1",  # 3 kept (spaces)
            "2.2\t2.0\t0\t0",  # 4 end before start
            "2.5\t3.2\t1\t1",  # 5 end 0.2 s beyond the 3 s audio
            "2.6\t3.03\t0\t0",  # 6 end 0.03 s beyond: clamped, kept
            "1.0\t1.0\t0\t0",  # 7 zero length
            "x y",  # 8 malformed
            "3.01\t3.04\t0\t0",  # 9 starts after the audio
            "1.0\t1.0001\t0\t0",  # 10 under one sample at 4 kHz
        ],
    )
    add_recording(audio, "101_1b1_Pr_sc_Meditron", ["0\t1\t0\t0"], None)
    add_recording(audio, "102_1b1_Ar_sc_Meditron", None)
    (audio / "102_1b1_Tc_sc_Meditron.wav").write_bytes(b"junk" * 40)
    (audio / "102_1b1_Tc_sc_Meditron.txt").write_text("0\t1\t0\t0\n")
    add_recording(audio, "102_1b1_Ll_sc_Meditron", ["0\t1\t0\t0"])
    wav = audio / "102_1b1_Ll_sc_Meditron.wav"
    wav.write_bytes(wav.read_bytes()[:5000])  # truncated
    add_recording(
        audio, "102_1b1_Lr_sc_Meditron", ["0\t1\t0\t0"], subtype="FLOAT"
    )
    add_recording(audio, "102_1b1_Pl_sc_Meditron", ["0\t1\t0\t0"], channels=2)
    add_recording(audio, "223_1b1_Tc_sc_Meditron", ["0.5\t1.5\t0\t0"])
    add_recording(audio, "103_1b1_Xx_sc_Meditron", ["0\t1\t0\t0"])
    add_recording(audio, "103_1b1_Al_sc_Foo", ["0\t1\t0\t0"])
    add_recording(
        audio, "103_2b2_Ar_mc_LittC2SE", ["0.5\t1\t0\t1", "1\t2\t1\t0"], sr=8000
    )
    add_recording(audio, "104_1b1_Al_sc_Litt3200", ["0\t1\t0\t0"])
    add_recording(audio, "104_1b1_Pr_sc_Litt3200", [])
    add_recording(audio, "226_1b1_Pl_sc_LittC2SE", ["0.2\t1.2\t1\t1"])
    return tmp_path / "icbhi"


def test_bad_input_is_skipped_counted_and_listed(messy, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    outputs = prepare_icbhi(messy, tmp_path / "out", valid_fraction=0, **FAST)
    summary = summary_of(outputs)
    assert summary["skips"]["by_reason"] == {
        "bad file name": 2,
        "end before start": 1,
        "end beyond the audio": 1,
        "malformed annotation line": 1,
        "missing annotation file": 1,
        "missing wav": 1,
        "not in split file": 1,
        "start beyond the audio": 1,
        "unusable recording": 5,
        "zero-length cycle": 2,
    }
    items = summary["skips"]["items"]
    assert summary["skips"]["count"] == len(items) == 16
    txt = str(messy / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.txt")
    lines = {(i["reason"], i["line"]) for i in items if i["file"] == txt}
    assert lines == {
        ("end before start", 4),
        ("end beyond the audio", 5),
        ("zero-length cycle", 7),
        ("malformed annotation line", 8),
        ("start beyond the audio", 9),
        ("zero-length cycle", 10),
    }
    unusable = {
        Path(i["file"]).stem: i["detail"]
        for i in items
        if i["reason"] == "unusable recording"
    }
    assert sorted(unusable) == [
        "102_1b1_Ll_sc_Meditron",
        "102_1b1_Lr_sc_Meditron",
        "102_1b1_Pl_sc_Meditron",
        "102_1b1_Tc_sc_Meditron",
        "104_1b1_Pr_sc_Litt3200",
    ]
    assert "truncated" in unusable["102_1b1_Ll_sc_Meditron"]
    assert "FLOAT" in unusable["102_1b1_Lr_sc_Meditron"]
    assert "2 channels" in unusable["102_1b1_Pl_sc_Meditron"]
    assert "unreadable" in unusable["102_1b1_Tc_sc_Meditron"]
    assert "no cycle" in unusable["104_1b1_Pr_sc_Litt3200"]
    # every skip was logged, naming its file
    for item in items:
        assert Path(item["file"]).name in caplog.text
    assert summary["clamped"] == [
        {"file": txt, "line": 6, "end": 3.03, "audio_end": 3.0}
    ]


def test_bad_input_kept_rows_and_reports(messy, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    outputs = prepare_icbhi(messy, tmp_path / "out", valid_fraction=0, **FAST)
    train, test = read_csv(outputs["train"]), read_csv(outputs["test"])
    assert [r["ID"] for r in train] == [
        "101_1b1_Al_sc_Meditron_0",
        "101_1b1_Al_sc_Meditron_1",
        "101_1b1_Al_sc_Meditron_2",
        "101_1b1_Al_sc_Meditron_5",
        "223_1b1_Tc_sc_Meditron_0",
    ]
    assert [r["ID"] for r in test] == [
        "103_2b2_Ar_mc_LittC2SE_0",
        "103_2b2_Ar_mc_LittC2SE_1",
        "226_1b1_Pl_sc_LittC2SE_0",
    ]
    for row in train + test:
        assert sf.info(row["wav"]).frames == 4000
    # patient 223: all NA, kept with empty fields and a prompt without them
    p223 = train[-1]
    assert (p223["age"], p223["sex"], p223["age_group"]) == ("", "", "")
    assert p223["diagnosis"] == "COPD"
    assert p223["prompt"] == (
        "This sound was recorded from the trachea of a patient, using a "
        "Meditron stethoscope."
    )
    # the renamed recording is used under its on-disk name and device
    renamed = test[-1]
    assert (renamed["device"], renamed["label"]) == ("LittC2SE", "3")
    summary = summary_of(outputs)
    assert summary["renamed"] == [
        {
            "split_file_stem": "226_1b1_Pl_sc_Meditron",
            "disk_stem": "226_1b1_Pl_sc_LittC2SE",
        }
    ]
    assert summary["missing_from_disk"] == {
        "count": 1,
        "stems": ["150_1b1_Al_sc_Meditron"],
    }
    assert summary["patients_without_demographics"] == [226]
    assert renamed["age"] == "" and renamed["diagnosis"] == "Pneumonia"
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("absent from" in m for m in warnings) == 1
    assert sum("226_1b1_Pl_sc_LittC2SE" in m for m in warnings) == 1


def test_clamped_cycle_is_cut_to_the_audio_end(messy, tmp_path):
    outputs = prepare_icbhi(messy, tmp_path / "out", valid_fraction=0, **FAST)
    row = read_csv(outputs["train"])[3]
    assert row["ID"] == "101_1b1_Al_sc_Meditron_5"
    wav = messy / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.wav"
    x, _ = sf.read(wav, dtype="float32")
    n = SR // 16
    x[:n] *= np.linspace(0, 1, n, dtype=np.float32)
    x[-n:] *= np.linspace(1, 0, n, dtype=np.float32)
    segment = x[int(2.6 * SR) :]  # to the end: 1600 samples
    expected = np.concatenate([segment, segment, segment[:800]])
    expected[-n:] *= np.linspace(1, 0, n, dtype=np.float32)
    cached, _ = sf.read(row["wav"], dtype="float32")
    np.testing.assert_allclose(cached, expected, atol=1e-7)


def test_zero_pad_centres_the_cycle(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    outputs = prepare_icbhi(
        root, tmp_path / "out", pad="zero", valid_fraction=0, **FAST
    )
    row = read_csv(outputs["train"])[0]  # 0.1-0.9 s: 3200 samples
    cached, _ = sf.read(row["wav"], dtype="float32")
    x, _ = sf.read(
        root / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.wav",
        dtype="float32",
    )
    assert np.all(cached[:400] == 0) and np.all(cached[3600:] == 0)
    np.testing.assert_allclose(cached[400:3600], x[400:3600], atol=1e-7)


# ---------------------------------------------------------------- errors


def test_missing_split_file_is_an_error(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    (root / "ICBHI_challenge_train_test.txt").unlink()
    with pytest.raises(ICBHIFormatError, match="split file"):
        prepare_icbhi(root, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


def test_stem_in_both_splits_is_an_error(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text() + "101_1b1_Al_sc_Meditron\ttest\n")
    with pytest.raises(ICBHIFormatError, match=r"train_test\.txt:3:"):
        prepare_icbhi(root, tmp_path / "out", **FAST)


def test_same_stem_twice_on_disk_is_an_error(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    audio = root / "ICBHI_final_database"
    add_recording(audio / "again", "101_1b1_Al_sc_Meditron", ["0\t1\t0\t0"])
    with pytest.raises(ICBHIFormatError, match="on disk twice"):
        prepare_icbhi(root, tmp_path / "out", **FAST)


def test_no_usable_cycle_is_an_error(tmp_path):
    audio = make_official(
        tmp_path / "icbhi", {"101_1b1_Al_sc_Meditron": "train"}
    )
    add_recording(audio, "101_1b1_Al_sc_Meditron", ["5\t6\t0\t0"])
    with pytest.raises(ICBHIFormatError, match="no usable cycle"):
        prepare_icbhi(tmp_path / "icbhi", tmp_path / "out", **FAST)


@pytest.mark.parametrize(
    "option",
    [
        {"pad": "mirror"},
        {"valid_fraction": 1.0},
        {"sample_rate": 0},
        {"duration": -1.0},
    ],
)
def test_bad_options_are_errors(tmp_path, option):
    root = small_dataset(tmp_path / "icbhi")
    with pytest.raises(ValueError):
        prepare_icbhi(root, tmp_path / "out", **{**FAST, **option})


def test_kaggle_layout_needs_and_uses_a_split_file(tmp_path):
    inner = tmp_path / "kaggle" / "Respiratory_Sound_Database"
    audio = inner / "audio_and_txt_files"
    add_recording(audio, "101_1b1_Al_sc_Meditron", ["0.1\t0.9\t0\t1"])
    add_recording(audio, "104_1b1_Al_sc_Litt3200", ["0.2\t1.1\t1\t0"])
    (inner / "patient_diagnosis.csv").write_text("101,URTI\n104,COPD\n")
    (tmp_path / "kaggle" / "demographic_info.txt").write_text(
        "101 3 F NA 19 99\n104 70 M 28.47 NA NA\n"
    )
    with pytest.raises(ICBHIFormatError, match="split_file"):
        prepare_icbhi(tmp_path / "kaggle", tmp_path / "out", **FAST)
    split = tmp_path / "split.txt"
    split.write_text(
        "101_1b1_Al_sc_Meditron\ttest\n104_1b1_Al_sc_Litt3200\ttrain\n"
    )
    outputs = prepare_icbhi(
        tmp_path / "kaggle",
        tmp_path / "out",
        split_file=split,
        valid_fraction=0,
        **FAST,
    )
    (train,), (test,) = read_csv(outputs["train"]), read_csv(outputs["test"])
    assert (train["ID"], train["label"], train["sex"]) == (
        "104_1b1_Al_sc_Litt3200_0",
        "1",
        "M",
    )
    assert (test["label"], test["diagnosis"], test["age"]) == ("2", "URTI", "3")
    assert summary_of(outputs)["options"]["layout"] == "kaggle"


# ---------------------------------------------------------------- caching


def stamp(paths):
    """Set old mtimes, so that a rewrite is visible whatever the clock."""
    for path in paths:
        os.utime(path, ns=(10**9, 10**9))


def rewritten(paths):
    return [Path(p).stat().st_mtime_ns != 10**9 for p in paths]


def test_same_options_do_not_rewrite_changed_ones_do(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    out = tmp_path / "out"
    outputs = prepare_icbhi(root, out, valid_fraction=0, **FAST)
    files = [outputs[k] for k in ("train", "valid", "test", "summary")]
    cycles = [r["wav"] for r in read_csv(outputs["train"])]
    stamp(files + cycles)

    assert prepare_icbhi(root, out, valid_fraction=0, **FAST) == outputs
    assert not any(rewritten(files + cycles))

    # a split option: other manifests beside these, cycles reused
    seed7 = prepare_icbhi(root, out, valid_fraction=0, seed=7, **FAST)
    assert Path(seed7["train"]).parent != Path(outputs["train"]).parent
    assert [r["wav"] for r in read_csv(seed7["train"])] == cycles
    assert not any(rewritten(files + cycles))

    # an audio option: a new cache folder
    zero_outputs = prepare_icbhi(
        root, out, valid_fraction=0, pad="zero", **FAST
    )
    zero = [r["wav"] for r in read_csv(zero_outputs["train"])]
    assert Path(zero[0]).parent != Path(cycles[0]).parent
    assert not any(rewritten(files + cycles))
    assert not np.array_equal(sf.read(zero[0])[0], sf.read(cycles[0])[0])

    outputs16 = prepare_icbhi(
        root, out, sample_rate=16000, duration=1.0, valid_fraction=0
    )
    wav = read_csv(outputs16["train"])[0]["wav"]
    assert sf.info(wav).frames == 16000 and sf.info(wav).samplerate == 16000


def test_changed_annotation_file_is_redone(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    before = prepare_icbhi(root, tmp_path / "out", valid_fraction=0, **FAST)
    txt = root / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.txt"
    txt.write_text("0.1\t0.9\t1\t1\n")
    outputs = prepare_icbhi(root, tmp_path / "out", valid_fraction=0, **FAST)
    assert outputs["train"] != before["train"]
    (row,) = read_csv(outputs["train"])
    assert row["label"] == "3"
    assert len(read_csv(before["train"])) == 2  # the old data's, untouched


def test_interrupted_run_is_finished_and_leaves_no_temp(tmp_path):
    root = small_dataset(tmp_path / "icbhi")
    out = tmp_path / "out"
    outputs = prepare_icbhi(root, out, valid_fraction=0, **FAST)
    cycles = [r["wav"] for r in read_csv(outputs["train"])]
    cache = Path(cycles[0]).parent
    # as if the run died after one cycle: no marker, a cycle missing, a
    # stale temp cycle and a stale temp manifests folder
    (cache / CACHE_DONE_FILE).unlink()
    Path(cycles[1]).unlink()
    (cache / f".{Path(cycles[1]).name}.123-abcd.tmp").write_bytes(b"partial")
    (out / f".{MANIFESTS_PREFIX}0123.123-abcd.tmp").mkdir()
    stamp([cycles[0], outputs["train"]])
    assert prepare_icbhi(root, out, valid_fraction=0, **FAST) == outputs
    assert rewritten([cycles[0], outputs["train"]]) == [False, True]
    assert sf.info(cycles[1]).frames == 4000
    assert (cache / CACHE_DONE_FILE).is_file()
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------ valid split


def many_patients(root):
    """12 patients with two cycles each; 112 has recordings in both splits."""
    split = {f"{p}_1b1_Al_sc_Meditron": "train" for p in range(101, 113)}
    split["111_1b1_Al_sc_Meditron"] = "test"
    split["112_2b1_Tc_sc_Meditron"] = "test"
    audio = make_official(root, split, demographics="", diagnoses="")
    for stem in split:
        add_recording(audio, stem, ["0.1\t1\t0\t0", "1\t2\t1\t0"])
    return root


def test_valid_split_is_patient_disjoint_and_deterministic(tmp_path):
    root = many_patients(tmp_path / "icbhi")
    outputs = prepare_icbhi(root, tmp_path / "a", valid_fraction=0.3, **FAST)
    rows = {s: read_csv(outputs[s]) for s in ("train", "valid", "test")}
    patients = {s: {r["patient"] for r in rows[s]} for s in rows}
    # 11 train patients (101-110, 112): round(0.3 * 11) = 3, none from 112
    assert len(patients["valid"]) == 3 and "112" not in patients["valid"]
    assert not patients["valid"] & patients["train"]
    assert not patients["valid"] & patients["test"]
    assert len(rows["train"]) + len(rows["valid"]) == 22
    summary = summary_of(outputs)
    assert summary["valid_patients"] == sorted(
        int(p) for p in patients["valid"]
    )
    again = prepare_icbhi(root, tmp_path / "b", valid_fraction=0.3, **FAST)
    again_ids = [r["ID"] for r in read_csv(again["valid"])]
    assert again_ids == [r["ID"] for r in rows["valid"]] != []
    draws = set()
    for seed in range(4):
        out = tmp_path / f"seed{seed}"
        drawn = prepare_icbhi(root, out, valid_fraction=0.3, seed=seed, **FAST)
        draws.add(tuple(summary_of(drawn)["valid_patients"]))
    assert len(draws) > 1  # the seed matters


def test_valid_fraction_zero_gives_header_only(tmp_path):
    root = many_patients(tmp_path / "icbhi")
    outputs = prepare_icbhi(root, tmp_path / "out", valid_fraction=0, **FAST)
    assert (
        Path(outputs["valid"]).read_text() == ",".join(MANIFEST_COLUMNS) + "\n"
    )
    assert len(read_csv(outputs["train"])) == 22


# -------------------------------------------------------------------- CLI


def test_cli(tmp_path, capsys):
    root = small_dataset(tmp_path / "icbhi")
    path = REPO / "recipes" / "ICBHI" / "icbhi_prepare.py"
    spec = importlib.util.spec_from_file_location("icbhi_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.prepare_icbhi is prepare_icbhi
    module.main(
        [
            "--data_folder",
            str(root),
            "--save_folder",
            str(tmp_path / "out"),
            "--sample_rate",
            "4000",
            "--duration",
            "1",
            "--pad",
            "zero",
            "--valid_fraction",
            "0",
        ]
    )
    printed = dict(
        line.split(": ", 1) for line in capsys.readouterr().out.splitlines()
    )
    assert sorted(printed) == ["summary", "test", "train", "valid"]
    train = Path(printed["train"])
    assert train.name == "train.csv" and train.is_file()
    assert train.parent.parent == tmp_path / "out"
    options = json.loads(Path(printed["summary"]).read_text())["options"]
    assert (options["pad"], options["duration"]) == ("zero", 1.0)


def test_process_pool_gives_the_same_cycles(tmp_path, monkeypatch):
    from speechbrain_rsc.data import cycles

    root = many_patients(tmp_path / "icbhi")
    serial = prepare_icbhi(root, tmp_path / "serial", valid_fraction=0, **FAST)
    pools = []

    class Spy(cycles.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cycles, "ProcessPoolExecutor", Spy)
    monkeypatch.setattr(cycles, "POOL_MIN_RECORDINGS", 2)
    monkeypatch.setattr(cycles.os, "cpu_count", lambda: 2)
    pooled = prepare_icbhi(root, tmp_path / "pool", valid_fraction=0, **FAST)
    assert pools == [(2,)]
    for split in ("train", "test"):
        a, b = read_csv(serial[split]), read_csv(pooled[split])
        assert [r["ID"] for r in a] == [r["ID"] for r in b] and a
        for x, y in zip(a, b):
            np.testing.assert_array_equal(
                sf.read(x["wav"])[0], sf.read(y["wav"])[0]
            )
