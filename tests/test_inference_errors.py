"""rsc-classify refuses bad arguments with a message, before loading."""

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_rsc import inference
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.inference import main
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
    assert "give wav files" in err


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
