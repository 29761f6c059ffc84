"""ICBHI file parsing (icbhi.py) and the signal functions (cycles.py)."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_rsc.data.cycles import (
    RecordingError,
    cut,
    fade,
    fade_length,
    inspect_recording,
    read_recording,
    resample,
    standardise,
    write_cycle,
)
from speechbrain_rsc.data.icbhi import (
    ICBHIFormatError,
    discover_recordings,
    find_layout,
    match_renamed,
    read_annotations,
    read_demographics,
    read_diagnoses,
    read_split,
)

OFFICIAL_FILES = (
    "ICBHI_challenge_train_test.txt",
    "ICBHI_Challenge_demographic_information.txt",
    "ICBHI_Challenge_diagnosis.txt",
)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- split file


def test_split_crlf_and_no_final_newline(tmp_path):
    path = write(
        tmp_path / "s.txt",
        "101_1b1_Al_sc_Meditron\ttest\r\n\r\n103_2b2_Ar_mc_LittC2SE\ttrain",
    )
    assert read_split(path) == {
        "101_1b1_Al_sc_Meditron": "test",
        "103_2b2_Ar_mc_LittC2SE": "train",
    }


def test_split_same_stem_twice_same_split_is_kept_once(tmp_path, caplog):
    path = write(tmp_path / "s.txt", "a_1\ttrain\na_1\ttrain\n")
    assert read_split(path) == {"a_1": "train"}
    assert "listed twice" in caplog.text


def test_split_same_stem_in_both_splits_is_an_error(tmp_path):
    path = write(tmp_path / "s.txt", "x\ttrain\ny\ttest\nx\ttest\n")
    with pytest.raises(ICBHIFormatError, match=r"s\.txt:3: x .* line 1"):
        read_split(path)


@pytest.mark.parametrize("line", ["x\tvalid", "x", "x\ttrain\textra"])
def test_split_malformed_line_names_file_and_line(tmp_path, line):
    path = write(tmp_path / "s.txt", f"ok\ttest\n{line}\n")
    with pytest.raises(ICBHIFormatError, match=r"s\.txt:2:"):
        read_split(path)


# -------------------------------------------------------------- demographics


def test_demographics_official_tab_separated_with_na(tmp_path):
    path = write(
        tmp_path / "d.txt",
        "101\t3\tF\tNA\t19\t99\n103\t70\tF\t33\tNA\tNA\n"
        "223\tNA\tNA\tNA\tNA\tNA",
    )
    patients = read_demographics(path)
    assert patients[101].age == 3.0 and patients[101].bmi is None
    assert patients[101].child_weight == 19.0
    assert patients[103].bmi == 33.0 and patients[103].sex == "F"
    p223 = patients[223]
    assert (p223.age, p223.sex, p223.bmi, p223.child_height) == (
        None,
        "",
        None,
        None,
    )


def test_demographics_kaggle_whitespace_separated(tmp_path):
    path = write(
        tmp_path / "d.txt", "102 0.75 F NA 9.8 73\n104  70 M 28.47 NA NA\n"
    )
    patients = read_demographics(path)
    assert patients[102].age == 0.75 and patients[102].child_height == 73.0
    assert patients[104].sex == "M" and patients[104].bmi == 28.47


@pytest.mark.parametrize(
    "bad, match",
    [
        ("105\t30\tM\tNA\tNA", "expected 6 fields"),
        ("105\t30\tX\tNA\tNA\tNA", "sex 'X'"),
        ("105\tthirty\tM\tNA\tNA\tNA", "age 'thirty'"),
        ("10x\t30\tM\tNA\tNA\tNA", "patient id"),
        ("101\t30\tM\tNA\tNA\tNA", "patient 101 twice"),
    ],
)
def test_demographics_errors_name_file_and_line(tmp_path, bad, match):
    path = write(tmp_path / "d.txt", f"101\t3\tF\tNA\t19\t99\n{bad}\n")
    with pytest.raises(ICBHIFormatError, match=rf"d\.txt:2: .*{match}"):
        read_demographics(path)


# ----------------------------------------------------------------- diagnosis


def test_diagnosis_official_crlf_without_final_newline(tmp_path):
    path = write(tmp_path / "g.txt", "101\tURTI\r\n223\tCOPD\r\n226\tPneumonia")
    assert read_diagnoses(path) == {101: "URTI", 223: "COPD", 226: "Pneumonia"}


def test_diagnosis_kaggle_csv_with_optional_header(tmp_path):
    path = write(
        tmp_path / "g.csv", "patient,diagnosis\n101,URTI\n102,Healthy\n"
    )
    assert read_diagnoses(path) == {101: "URTI", 102: "Healthy"}


def test_diagnosis_duplicate_patient_is_an_error(tmp_path):
    path = write(tmp_path / "g.txt", "101\tURTI\n101\tCOPD\n")
    with pytest.raises(ICBHIFormatError, match=r"g\.txt:2: patient 101"):
        read_diagnoses(path)


# --------------------------------------------------------------- annotations


def test_annotations_tab_space_crlf_and_indices(tmp_path):
    path = write(
        tmp_path / "r.txt",
        "0.036\t0.579\t0\t0\r\n0.579 2.45 1 0\r\n\r\n2.45  3.893\t0\t1\r\n"
        "3.893\t5.1\t1\t1",
    )
    cycles, skips = read_annotations(path)
    assert skips == []
    # the blank third line keeps its number: indices are line numbers - 1
    assert [(c.index, c.start, c.end, c.label) for c in cycles] == [
        (0, 0.036, 0.579, 0),
        (1, 0.579, 2.45, 1),
        (3, 2.45, 3.893, 2),
        (4, 3.893, 5.1, 3),
    ]


def test_annotations_bad_lines_are_skips_with_line_numbers(tmp_path):
    path = write(
        tmp_path / "r.txt",
        "0\t1\t0\t0\n"  # 1 ok
        "1\t2\t0\n"  # 2 three fields
        "2\tx\t0\t0\n"  # 3 not a number
        "3\t4\t2\t0\n"  # 4 flag 2
        "-0.5\t1\t0\t0\n"  # 5 negative start
        "5\t4.5\t0\t0\n"  # 6 end before start
        "6\t6\t0\t1\n"  # 7 zero length
        "nan\t7\t0\t0\n"  # 8 not finite
        "7\t8\t1\t0\n",  # 9 ok
    )
    cycles, skips = read_annotations(path)
    assert [c.line for c in cycles] == [1, 9]
    assert [(s.line, s.reason) for s in skips] == [
        (2, "malformed annotation line"),
        (3, "malformed annotation line"),
        (4, "malformed annotation line"),
        (5, "negative start"),
        (6, "end before start"),
        (7, "zero-length cycle"),
        (8, "malformed annotation line"),
    ]
    assert all(s.file == str(path) for s in skips)
    assert skips[0].detail == repr("1\t2\t0")


def test_annotations_binary_file_is_an_error(tmp_path):
    path = write(tmp_path / "r.txt", b"\xff\xfe\x00\x81")
    with pytest.raises(ICBHIFormatError, match="not a UTF-8"):
        read_annotations(path)


# ------------------------------------------------------------ stem matching


def test_match_renamed_single_candidate():
    matches, missing = match_renamed(
        ["226_1b1_Pl_sc_Meditron", "101_1b1_Al_sc_Meditron"],
        ["226_1b1_Pl_sc_LittC2SE", "102_1b1_Ar_sc_Meditron"],
    )
    assert matches == {"226_1b1_Pl_sc_Meditron": "226_1b1_Pl_sc_LittC2SE"}
    assert missing == ["101_1b1_Al_sc_Meditron"]


def test_match_renamed_needs_same_index_location_mode():
    listed = ["226_1b1_Pl_sc_Meditron"]
    for disk in (
        "226_1b2_Pl_sc_LittC2SE",  # other index
        "226_1b1_Pr_sc_LittC2SE",  # other location
        "226_1b1_Pl_mc_LittC2SE",  # other mode
        "225_1b1_Pl_sc_LittC2SE",  # other patient
    ):
        assert match_renamed(listed, [disk]) == ({}, listed)


def test_match_renamed_ambiguous_or_already_listed_is_not_matched():
    medi, litt, akg = (
        "226_1b1_Pl_sc_Meditron",
        "226_1b1_Pl_sc_LittC2SE",
        "226_1b1_Pl_sc_AKGC417L",
    )
    # two candidates on disk
    assert match_renamed([medi], [litt, akg]) == ({}, [medi])
    # the only candidate is listed itself: it is its own recording
    assert match_renamed([medi, litt], [litt]) == ({}, [medi])
    # two absent listed stems claim the one candidate
    assert match_renamed([medi, litt], [akg]) == ({}, [litt, medi])


# ------------------------------------------------------------------- layout


def make_official_files(root):
    (root / "ICBHI_final_database").mkdir(parents=True)
    for name in OFFICIAL_FILES:
        write(root / name, "")
    return root


def test_find_layout_official(tmp_path):
    layout = find_layout(make_official_files(tmp_path))
    assert layout.name == "official"
    assert layout.audio_folder == tmp_path / "ICBHI_final_database"
    assert layout.split_file == tmp_path / OFFICIAL_FILES[0]
    assert layout.demographics_file == tmp_path / OFFICIAL_FILES[1]


def test_find_layout_nested_kaggle_archive(tmp_path):
    inner = (
        tmp_path / "Respiratory_Sound_Database" / "Respiratory_Sound_Database"
    )
    (inner / "audio_and_txt_files").mkdir(parents=True)
    write(inner / "patient_diagnosis.csv", "101,URTI\n")
    write(tmp_path / "demographic_info.txt", "101 3 F NA 19 99\n")
    split = write(tmp_path / "split.txt", "x\ttrain\n")
    with pytest.raises(ICBHIFormatError, match="Kaggle layout has no"):
        find_layout(tmp_path)
    layout = find_layout(tmp_path, split_file=split)
    assert layout.name == "kaggle"
    assert layout.audio_folder == inner / "audio_and_txt_files"
    assert layout.diagnosis_file == inner / "patient_diagnosis.csv"
    assert layout.demographics_file == tmp_path / "demographic_info.txt"


def test_find_layout_errors(tmp_path):
    with pytest.raises(ICBHIFormatError, match="is not a folder"):
        find_layout(tmp_path / "nowhere")
    with pytest.raises(ICBHIFormatError, match="found none"):
        find_layout(tmp_path)
    root = make_official_files(tmp_path / "a")
    (root / OFFICIAL_FILES[0]).unlink()
    with pytest.raises(ICBHIFormatError, match="split file .* not found"):
        find_layout(root)
    with pytest.raises(ICBHIFormatError, match="split_file .* does not"):
        find_layout(root, split_file=tmp_path / "absent.txt")
    (root / OFFICIAL_FILES[2]).unlink()
    with pytest.raises(ICBHIFormatError, match="diagnosis file"):
        find_layout(root, split_file=root / OFFICIAL_FILES[1])
    make_official_files(tmp_path / "b")
    (tmp_path / "b" / "audio_and_txt_files").mkdir()
    with pytest.raises(ICBHIFormatError, match="exactly one"):
        find_layout(tmp_path / "b")


def test_discover_same_stem_in_two_places_is_an_error(tmp_path):
    write(tmp_path / "101_1b1_Al_sc_Meditron.wav", b"")
    write(tmp_path / "101_1b1_Al_sc_Meditron.txt", "")
    write(tmp_path / "copy" / "101_1b1_Al_sc_Meditron.wav", b"")
    with pytest.raises(ICBHIFormatError, match="on disk twice") as info:
        discover_recordings(tmp_path)
    assert "copy" in str(info.value)


# ------------------------------------------------------------------ signals


def test_fade_matches_torchaudio_linear_fade():
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    n = fade_length(16000)
    reference = torchaudio.transforms.Fade(n, n, "linear")(torch.from_numpy(x))
    np.testing.assert_allclose(fade(x, n), reference.numpy(), atol=1e-6)
    reference_out = torchaudio.transforms.Fade(0, n, "linear")(
        torch.from_numpy(x)
    )
    np.testing.assert_allclose(fade(x, 0, n), reference_out.numpy(), atol=1e-6)


def test_fade_longer_than_signal_is_shortened():
    np.testing.assert_allclose(
        fade(np.ones(3, dtype=np.float32), 10), [0.0, 0.25, 0.0]
    )


def test_resample_lengths_and_content():
    sr_in = 4000
    t = np.arange(2 * sr_in) / sr_in
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(tone, sr_in, 16000)
    assert out.dtype == np.float32 and len(out) == 32000
    # the 440 Hz tone survives: compare with an ideal tone mid-signal
    t_out = np.arange(32000) / 16000
    ideal = np.sin(2 * np.pi * 440 * t_out)
    assert np.abs(out[4000:28000] - ideal[4000:28000]).max() < 0.02
    assert len(resample(np.zeros(44100, np.float32), 44100, 16000)) == 16000
    assert len(resample(np.zeros(10000, np.float32), 10000, 16000)) == 16000


def test_cut_is_truncating_and_clamped():
    x = np.arange(100, dtype=np.float32)
    # int(0.579 * 10) = 5, int(0.999 * 10) = 9
    np.testing.assert_array_equal(cut(x, 0.579, 0.999, 10), [5, 6, 7, 8])
    assert len(cut(x, 9.5, 12.0, 10)) == 5  # clamped to the end
    assert len(cut(x, 11.0, 12.0, 10)) == 0  # past the end


def test_standardise_repeat_by_hand():
    cycle = np.arange(1, 4, dtype=np.float32)  # [1, 2, 3]
    out = standardise(cycle, 8, "repeat", fade_out=4)
    # tiled [1 2 3 1 2 3 1 2], last 4 times [1, 2/3, 1/3, 0]
    np.testing.assert_allclose(
        out, [1, 2, 3, 1, 2, 3 * 2 / 3, 1 / 3, 0], rtol=1e-6
    )


def test_standardise_exact_length_is_faded_longer_is_cropped():
    x = np.ones(6, dtype=np.float32)
    np.testing.assert_allclose(
        standardise(x, 6, "repeat", fade_out=3), [1, 1, 1, 1, 0.5, 0]
    )
    y = np.arange(10, dtype=np.float32)
    for pad in ("repeat", "zero"):
        np.testing.assert_array_equal(
            standardise(y, 4, pad, fade_out=3), [0, 1, 2, 3]
        )


def test_standardise_zero_centres():
    out = standardise(np.ones(3, dtype=np.float32), 8, "zero", fade_out=3)
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="pad"):
        standardise(np.ones(3), 8, "mirror")
    with pytest.raises(ValueError, match="empty"):
        standardise(np.ones(0), 8)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8"])
def test_read_any_pcm_width_as_float32(tmp_path, subtype):
    values = np.array([0.0, 0.5, -0.5, 0.25], dtype=np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, values, 10000, subtype=subtype)
    signal, rate = read_recording(path)
    assert rate == 10000 and signal.dtype == np.float32
    np.testing.assert_allclose(signal, values, atol=1 / 127)


def test_inspect_rejects_stereo_float_truncated_junk(tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((100, 2)), 4000, subtype="PCM_16")
    with pytest.raises(RecordingError, match="2 channels"):
        inspect_recording(stereo)
    floating = tmp_path / "float.wav"
    sf.write(floating, np.zeros(100), 4000, subtype="FLOAT")
    with pytest.raises(RecordingError, match="not a PCM WAV"):
        inspect_recording(floating)
    full = tmp_path / "full.wav"
    sf.write(full, np.zeros(1000), 4000, subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(full.read_bytes()[:1044])
    with pytest.raises(RecordingError, match="truncated.*2000 bytes.*1000"):
        inspect_recording(truncated)
    junk = write(tmp_path / "junk.wav", b"not audio at all" * 8)
    with pytest.raises(RecordingError, match="unreadable"):
        inspect_recording(junk)
    with pytest.raises(RecordingError, match="unreadable"):
        inspect_recording(tmp_path / "absent.wav")
    assert inspect_recording(full).frames == 1000


def test_write_cycle_is_float32_and_leaves_no_temp(tmp_path):
    x = np.linspace(-1, 1, 11, dtype=np.float32) / math.pi
    write_cycle(tmp_path / "c.wav", x, 16000)
    assert sf.info(tmp_path / "c.wav").subtype == "FLOAT"
    np.testing.assert_array_equal(
        sf.read(tmp_path / "c.wav", dtype="float32")[0], x
    )
    assert [p.name for p in tmp_path.iterdir()] == ["c.wav"]
