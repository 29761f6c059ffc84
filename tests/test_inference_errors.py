"""rsc-classify refuses bad arguments with a message, before loading;
classifies any audio soundfile reads; reports bad files on their own line,
short clips, missing BTS metadata and ill-matched ensembles.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from conftest import TINY_CLAP

from speechbrain_rsc import inference
from speechbrain_rsc.data.cycles import RecordingError
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.inference import RespiratoryClassifier, cli, main
from speechbrain_rsc.models import build_backbone


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "model"
    torch.manual_seed(0)
    model = build_backbone("cnn6", {"channels": [4, 8, 8, 8]})
    save_trained(model, folder, {"duration": 1.0})
    return folder


@pytest.fixture(scope="module")
def wav(model_folder):
    path = model_folder.parent / "104_1b1_Al_sc_Litt3200.wav"
    signal = np.random.default_rng(0).normal(0, 0.1, 16000)
    soundfile.write(path, signal.astype("float32"), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Make any model loading fail the test: refusals come first."""

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(inference.RespiratoryClassifier, "from_folder", load)


def refusal(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    return capsys.readouterr().err


def test_good_inputs_still_classify(model_folder, wav, capsys):
    argv = [str(wav), "--model", str(model_folder), "--device", "cpu"]
    for extra in ([], ["--age", "0"], ["--age", "63.5", "--sex", "F"]):
        (result,) = main(argv + extra)
        assert result["class"] in ("normal", "crackle", "wheeze", "both")
        assert sum(result["probabilities"].values()) == pytest.approx(1)
    assert capsys.readouterr().out.count("probabilities") == 3


def test_folder_given_as_audio_file(model_folder, wav, capsys, no_loading):
    err = refusal(capsys, [str(wav), str(wav.parent), "--model", "m"])
    assert f"{wav.parent} is a folder, not an audio file" in err
    assert "give audio files" in err


def test_missing_audio_file(model_folder, wav, capsys, no_loading):
    missing = wav.parent / "nowhere.wav"
    err = refusal(capsys, [str(missing), "--model", str(model_folder)])
    assert f"audio file {missing} does not exist" in err


@pytest.mark.parametrize("device", ["gpu7", "CPU", ""])
def test_unknown_device(model_folder, wav, capsys, no_loading, device):
    argv = [str(wav), "--model", str(model_folder), "--device", device]
    err = refusal(capsys, argv)
    assert f"argument --device: {device!r} is not a torch device" in err
    assert "use cpu, cuda or cuda:N" in err


def test_cuda_without_cuda(model_folder, wav, capsys, no_loading, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [str(wav), "--model", str(model_folder), "--device", "cuda"]
    err = refusal(capsys, argv)
    assert "'cuda': this machine has no cuda device; use cpu" in err


def test_cuda_index_out_of_range(
    model_folder, wav, capsys, no_loading, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    argv = [str(wav), "--model", str(model_folder), "--device", "cuda:2"]
    err = refusal(capsys, argv)
    assert "'cuda:2': this machine has 2 cuda device(s)" in err
    assert "numbered from 0 to 1" in err


@pytest.mark.parametrize("age", ["abc", "-3", "nan", "inf"])
def test_bad_age(model_folder, wav, capsys, no_loading, age):
    argv = [str(wav), "--model", str(model_folder), "--age", age]
    err = refusal(capsys, argv)
    assert f"argument --age: {age!r} is not an age" in err
    assert "non-negative number" in err


@pytest.mark.parametrize("location", ["Xx", "al"])
def test_bad_location_code(model_folder, wav, capsys, no_loading, location):
    argv = [str(wav), "--model", str(model_folder), "--location", location]
    err = refusal(capsys, argv)
    assert f"argument --location: invalid choice: '{location}'" in err


def test_missing_model_folder(wav, tmp_path, capsys):
    missing = tmp_path / "results" / "cnn6" / "1" / "model"
    err = refusal(capsys, [str(wav), "--model", str(missing)])
    assert f"model {missing}: no such folder" in err


# ------------------------------------------------------- exit status, formats


def test_exit_status_zero_when_every_file_is_classified(
    model_folder, wav, capsys
):
    # The console script is sys.exit(cli()); sys.exit(main()) exited 1
    # every time, main returning the list of results.
    assert cli([str(wav), "--model", str(model_folder)]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(wav)


def test_console_script_entry_point_is_cli():
    from pathlib import Path

    setup = (Path(__file__).parents[1] / "setup.py").read_text()
    assert '"rsc-classify=speechbrain_rsc.inference:cli"' in setup


@pytest.fixture(scope="module")
def formats(model_folder):
    """One signal written as 16-bit, 24-bit, float WAV, FLAC and stereo."""
    folder = model_folder.parent / "formats"
    folder.mkdir()
    signal = np.random.default_rng(1).uniform(-0.5, 0.5, 24000)
    paths = {}
    for name, subtype in [
        ("pcm16.wav", "PCM_16"),
        ("pcm24.wav", "PCM_24"),
        ("float.wav", "FLOAT"),
        ("double.wav", "DOUBLE"),
        ("clip.flac", "PCM_16"),
    ]:
        paths[name] = folder / name
        soundfile.write(paths[name], signal, 22050, subtype=subtype)
    paths["stereo.flac"] = folder / "stereo.flac"
    soundfile.write(paths["stereo.flac"], np.stack([signal, signal], 1), 22050)
    return paths


def test_any_format_soundfile_reads(model_folder, formats):
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    results = classifier.classify_files(list(formats.values()))
    probs = torch.tensor([list(r["probabilities"].values()) for r in results])
    # the same signal, to the rounding of each format's samples
    torch.testing.assert_close(
        probs, probs[:1].expand_as(probs), atol=1e-3, rtol=0
    )
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in results}
    assert by_name["stereo.flac"]["warnings"][0] == (
        "2 channels averaged to mono"
    )
    assert by_name["float.wav"]["warnings"] == [
        "clip is 1.09 s: only its first 1.0 s are classified; cut the "
        "recording into its respiratory cycles"
    ]


def test_batches_give_the_results_of_single_files(model_folder, formats):
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    files = list(formats.values())
    one = classifier.classify_files(files, batch_size=1)
    for batch_size in (3, 8):
        batched = classifier.classify_files(files, batch_size=batch_size)
        assert [r["file"] for r in batched] == [str(f) for f in files]
        for a, b in zip(one, batched):
            for name, p in a["probabilities"].items():
                assert b["probabilities"][name] == pytest.approx(p, abs=1e-6)
    with pytest.raises(ValueError, match="batch_size 0: give a positive"):
        classifier.classify_files(files, batch_size=0)


def test_bad_batch_size(model_folder, wav, capsys, no_loading):
    argv = [str(wav), "--model", str(model_folder), "--batch_size", "0"]
    assert "--batch_size 0: give a positive number" in refusal(capsys, argv)


@pytest.fixture(scope="module")
def bad_files(model_folder, wav):
    folder = model_folder.parent / "bad"
    folder.mkdir()
    (folder / "noise.wav").write_bytes(b"not audio at all " * 40)
    (folder / "empty.flac").write_bytes(b"")
    truncated = wav.read_bytes()
    (folder / "truncated.wav").write_bytes(truncated[: len(truncated) // 2])
    nan = np.zeros(16000, dtype="float32")
    nan[10] = np.nan
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    return {p.name: p for p in folder.iterdir()}


def test_bad_files_reported_and_the_others_classified(
    model_folder, wav, bad_files, capsys
):
    files = [wav, *sorted(bad_files.values()), wav]
    assert cli([str(f) for f in files] + ["--model", str(model_folder)]) == 1
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    assert "class" in lines[0] and "class" in lines[-1]
    errors = {line["file"].rsplit("/", 1)[1]: line for line in lines[1:-1]}
    assert all(set(e) == {"file", "error"} for e in errors.values())
    assert "unreadable audio" in errors["noise.wav"]["error"]
    assert "unreadable audio" in errors["empty.flac"]["error"]
    assert "truncated, the header declares" in errors["truncated.wav"]["error"]
    assert "NaN or infinite samples" in errors["nan.wav"]["error"]
    for name, line in errors.items():
        assert line["error"].startswith(str(bad_files[name]))
    assert "rsc-classify: 4 of 6 files could not be classified" in err


def test_classify_file_raises_for_a_bad_file(model_folder, bad_files):
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    with pytest.raises(RecordingError, match="noise.wav: unreadable"):
        classifier.describe_file(bad_files["noise.wav"])


def test_exit_status_of_the_module_as_a_program(model_folder, wav, bad_files):
    argv = [sys.executable, "-m", "speechbrain_rsc.inference"]
    argv += [str(wav), str(bad_files["noise.wav"])]
    argv += ["--model", str(model_folder), "--device", "cpu"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert len(done.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "seconds, warned",
    [(0.5, True), (0.999, True), (1.0, False), (1.02, False)],
)
def test_clips_shorter_than_a_breath_cycle_warned(
    model_folder, tmp_path, seconds, warned
):
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.full(int(seconds * 16000), 0.1), 16000)
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    result = classifier.describe_file(path)
    short = [w for w in result["warnings"] if "shorter than one breath" in w]
    assert bool(short) == warned
    if warned:
        assert short[0].startswith(f"clip is {seconds:.2f} s")


def test_warnings_also_on_stderr(model_folder, tmp_path, capsys):
    path = tmp_path / "short.wav"
    soundfile.write(path, np.full(4000, 0.1), 16000)
    assert cli([str(path), "--model", str(model_folder)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: clip is 0.25 s, shorter than one breath" in err


def test_metadata_list_must_match_files(model_folder, wav):
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    with pytest.raises(ValueError, match="2 metadata for 1 files"):
        classifier.classify_files([wav], [{}, {}])
    with pytest.raises(ValueError, match="'Xx' is not an ICBHI location"):
        classifier.classify_files([wav], {"location": "Xx"})


# ------------------------------------------------------------------ ensembles


def test_ensemble_of_different_durations_refused(tmp_path, wav, capsys):
    runs = tmp_path / "runs"
    for seed, duration in ((1, 1.0), (2, 2.0)):
        model = build_backbone("cnn6", {"channels": [4, 8, 8, 8]})
        save_trained(model, runs / str(seed) / "model", {"duration": duration})
    err = refusal(capsys, [str(wav), "--model", str(runs)])
    assert (
        f"ensemble members expect different duration: {runs}/1/model 1.0, "
        f"{runs}/2/model 2.0" in err
    )


# ------------------------------------------------------------------------ BTS


@pytest.fixture(scope="module")
def bts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bts") / "model"
    torch.manual_seed(0)
    model = build_backbone("bts", {"clap_config": TINY_CLAP})
    save_trained(model, folder, {"duration": 1.0})
    return RespiratoryClassifier.from_hparams(
        source=str(folder), run_opts={"device": "cpu"}
    )


@pytest.mark.parametrize(
    "name, metadata, missing",
    [
        ("recording.wav", None, ["location", "device", "age", "sex"]),
        ("104_1b1_Al_sc_Litt3200.wav", None, ["age", "sex"]),
        ("104_1b1_Al_sc_Litt3200.wav", {"age": 63, "sex": "F"}, []),
        (
            "x.wav",
            {"location": "Pl", "device": "AKGC417L", "age": "5"},
            ["sex"],
        ),
    ],
)
def test_bts_names_missing_metadata(bts, tmp_path, name, metadata, missing):
    path = tmp_path / name
    soundfile.write(path, np.full(48000, 0.1), 48000)
    result = bts.describe_file(path, metadata)
    assert result["missing_metadata"] == missing
    notes = [w for w in result["warnings"] if w.startswith("BTS prompt")]
    if not missing:
        assert notes == []
        assert result["prompt"] == (
            "This sound was recorded from the left anterior chest of an "
            "adult female patient, using a Litt3200 stethoscope."
        )
        return
    assert notes[0].startswith(f"BTS prompt without {', '.join(missing)}")
    if "location" in missing:
        assert "location 'Tc' used in its place" in notes[0]
        assert "trachea" in result["prompt"]
    if "sex" in missing:
        assert "left out of the prompt" in notes[0]


def test_non_bts_results_have_no_prompt(model_folder, wav):
    classifier = RespiratoryClassifier.from_folder(model_folder, "cpu")
    result = classifier.describe_file(wav)
    assert "prompt" not in result and "missing_metadata" not in result
