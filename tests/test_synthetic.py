"""The synthetic ICBHI database: layout, formats, split, sounds."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from speechbrain_rsc.data.schema import DEVICES, parse_stem
from speechbrain_rsc.data.synthetic import (
    CLASS_PRIOR,
    _plan,
    main,
    make_synthetic_icbhi,
)

SPLIT = "ICBHI_challenge_train_test.txt"
DEMO = "ICBHI_Challenge_demographic_information.txt"
DIAG = "ICBHI_Challenge_diagnosis.txt"
AUDIO = "ICBHI_final_database"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """The default database: 60 recordings, seed 0."""
    return make_synthetic_icbhi(tmp_path_factory.mktemp("syn"))


def read_split(root):
    text = (Path(root) / SPLIT).read_bytes().decode()
    return dict(line.split("\t") for line in text.split("\r\n") if line)


def read_cycles(root, stem):
    lines = (Path(root) / AUDIO / f"{stem}.txt").read_text().splitlines()
    return [line.split("\t") for line in lines]


def auc(score, positive):
    """Mann-Whitney AUC: chance gives 0.5."""
    ranks = np.argsort(np.argsort(score)) + 1
    n_pos = positive.sum()
    n_neg = len(positive) - n_pos
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_layout_complete(db):
    assert sorted(p.name for p in db.iterdir()) == sorted(
        [AUDIO, DEMO, DIAG, SPLIT]
    )
    split = read_split(db)
    assert len(split) == 60
    on_disk = sorted(p.name for p in (db / AUDIO).iterdir())
    assert on_disk == sorted(
        f"{stem}{ext}" for stem in split for ext in (".txt", ".wav")
    )


def test_every_stem_parses(db):
    stems = [parse_stem(s) for s in read_split(db)]
    assert all(101 <= s.patient <= 226 for s in stems)
    assert {s.device for s in stems} == set(DEVICES)
    assert len({s.name for s in stems}) == len(stems)


def test_split_is_patient_disjoint(db):
    split = read_split(db)
    assert set(split.values()) == {"train", "test"}
    patients = {
        part: {parse_stem(s).patient for s, p in split.items() if p == part}
        for part in ("train", "test")
    }
    assert not patients["train"] & patients["test"]
    test_share = list(split.values()).count("test") / len(split)
    assert 0.3 <= test_share <= 0.42
    full = _plan(920, seed=0)[0]
    assert sum(r.split == "test" for r in full) / 920 == pytest.approx(
        0.4, abs=0.02
    )


def test_text_formats(db):
    split = (db / SPLIT).read_bytes()
    assert split.endswith(b"\r\n") and b"\n" not in split.replace(b"\r\n", b"")
    diag = (db / DIAG).read_bytes()
    assert not diag.endswith(b"\n") and diag.count(b"\r\n") == (
        diag.count(b"\n")
    )
    demo = (db / DEMO).read_bytes()
    assert demo.endswith(b"\n") and b"\r" not in demo
    rows = [line.split("\t") for line in demo.decode().splitlines()]
    assert {len(row) for row in rows} == {6}
    assert ["NA"] * 5 in [row[1:] for row in rows]
    for _pid, age, sex, bmi, weight, height in rows:
        if age == "NA":
            continue
        assert sex in ("M", "F")
        if float(age) >= 19:  # adults: BMI (or NA), never child measures
            assert weight == height == "NA"
        else:
            assert bmi == "NA" and float(weight) > 0 and float(height) > 0
    patients = {parse_stem(s).patient for s in read_split(db)}
    assert {int(row[0]) for row in rows} == patients
    diag_ids = {int(line.split(b"\t")[0]) for line in diag.split(b"\r\n")}
    assert diag_ids == patients


def test_formats_match_real_sample(db, icbhi_sample):
    def shape(path):
        data = path.read_bytes()
        crlf = b"\r\n" in data
        first = data.decode().splitlines()[0]
        return crlf, data.endswith(b"\n"), first.count("\t")

    for name in (SPLIT, DEMO, DIAG):
        assert shape(db / name) == shape(icbhi_sample / name), name
    real = next((icbhi_sample / AUDIO).glob("*.txt"))
    ours = next((db / AUDIO).glob("*.txt"))
    assert shape(ours) == shape(real)


def test_annotations(db):
    n_cycles = 0
    for stem in read_split(db):
        duration = sf.info(str(db / AUDIO / f"{stem}.wav")).duration
        cycles = read_cycles(db, stem)
        assert 4 <= len(cycles) <= 11
        for start, end, crackle, wheeze in cycles:
            assert len(start.split(".")[-1]) <= 3
            assert 0 <= float(start) < float(end) <= duration
            assert 0.999 <= float(end) - float(start) <= 5.001
            assert crackle in ("0", "1") and wheeze in ("0", "1")
        n_cycles += len(cycles)
    assert 300 <= n_cycles <= 600


def test_audio_formats(db):
    rates, subtypes = set(), set()
    for stem in read_split(db):
        info = sf.info(str(db / AUDIO / f"{stem}.wav"))
        assert info.channels == 1
        assert (info.samplerate == 4000) == stem.endswith("Litt3200")
        rates.add(info.samplerate)
        subtypes.add(info.subtype)
    assert rates == {4000, 10000, 44100}
    assert subtypes == {"PCM_16", "PCM_24"}


def test_deterministic_per_seed(tmp_path):
    first = make_synthetic_icbhi(tmp_path / "a", recordings=5, seed=3)
    again = make_synthetic_icbhi(tmp_path / "b", recordings=5, seed=3)
    other = make_synthetic_icbhi(tmp_path / "c", recordings=5, seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*.*"))
    assert len(files) == 13
    for rel in files:
        assert (first / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert (first / SPLIT).read_bytes() != (other / SPLIT).read_bytes()
    wav = next((first / AUDIO).glob("*.wav")).name
    assert not (other / AUDIO / wav).exists() or (
        (first / AUDIO / wav).read_bytes() != (other / AUDIO / wav).read_bytes()
    )


def test_label_distribution():
    for seed in (0, 1):
        recs = _plan(920, seed)[0]
        heard = np.concatenate([r.classes for r in recs])
        written = np.concatenate([r.annotated for r in recs])
        assert 6300 <= len(written) <= 7500
        assert len({r.stem.patient for r in recs}) == 126
        assert len({r.stem.name for r in recs}) == 920
        share = np.bincount(written, minlength=4) / len(written)
        assert share == pytest.approx(CLASS_PRIOR, abs=0.05)
        assert 0.015 <= (heard != written).mean() <= 0.05


def cycle_features(root):
    """Per cycle: crackle score, wheeze score, crackle flag, wheeze flag.

    Crackle: loudest 2 ms frame against the median of its 21 neighbours.
    Wheeze: peak against median power in 100-1000 Hz (0.1 s frames).
    """
    rows = []
    for stem in read_split(root):
        audio, sr = sf.read(str(root / AUDIO / f"{stem}.wav"), dtype="float32")
        for start, end, crackle, wheeze in read_cycles(root, stem):
            x = audio[int(float(start) * sr) : int(float(end) * sr)]
            step = int(0.002 * sr)
            energy = (x[: len(x) // step * step].reshape(-1, step) ** 2).mean(1)
            local = np.median(
                sliding_window_view(np.pad(energy, 10, mode="edge"), 21), 1
            )
            size = sr // 10
            frames = x[: len(x) // size * size].reshape(-1, size)
            power = np.abs(np.fft.rfft(frames * np.hanning(size))) ** 2
            freq = np.fft.rfftfreq(size, 1 / sr)
            band = power.mean(0)[(freq >= 100) & (freq <= 1000)]
            rows.append(
                (
                    np.max(energy / (local + 1e-12)),
                    band.max() / np.median(band),
                    int(crackle),
                    int(wheeze),
                )
            )
    return np.array(rows)


def test_classes_learnable_but_not_trivial(db):
    feats = cycle_features(db)
    crackle, wheeze = feats[:, 2] == 1, feats[:, 3] == 1
    # pure noise would give 0.5; perfect separation would give 1
    assert 0.7 < auc(feats[:, 0], crackle) < 0.97
    assert 0.75 < auc(feats[:, 1], wheeze) < 0.97
    # each score tracks its own event, not the other one
    assert abs(auc(feats[:, 1], crackle) - 0.5) < 0.15


def test_refuses_stale_folder_and_bad_sizes(tmp_path):
    make_synthetic_icbhi(tmp_path, recordings=2, seed=0)
    make_synthetic_icbhi(tmp_path, recordings=2, seed=0)  # same plan: fine
    with pytest.raises(FileExistsError, match="ICBHI_final_database"):
        make_synthetic_icbhi(tmp_path, recordings=2, seed=1)
    with pytest.raises(ValueError, match="at least 2"):
        make_synthetic_icbhi(tmp_path / "x", recordings=1)


def test_cli(tmp_path, capsys):
    main([str(tmp_path), "--recordings", "3", "--seed", "2"])
    assert "3 recordings" in capsys.readouterr().out
    assert len(read_split(tmp_path)) == 3
