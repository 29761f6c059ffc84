"""Loading a model runs nothing from it; rsc-classify answers clearly; the
classifier speaks SpeechBrain's interface (issue 19: items 6, 7 and 9).
"""

import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from test_export import COMMIT, fake_hub, tiny_run
from test_export import wavs as wavs  # noqa: F401 (a fixture)

from speechbrain_rsc.data.schema import CLASS_NAMES
from speechbrain_rsc.export import HPARAMS_FILE, export_ensemble
from speechbrain_rsc.inference import (
    RespiratoryClassifier,
    UntrustedModelError,
    cli,
)
from speechbrain_rsc.models.checkpoints import CheckpointError
from speechbrain_rsc.provenance import PROVENANCE_FILE
from speechbrain_rsc.trained_model import (
    NoModelError,
    read_weights,
    save_weights,
)

HOSTILE = 'pwn: !apply:os.system ["touch {marker}"]\n'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        tiny_run(root / str(seed) / "model", seed)
        (root / str(seed) / PROVENANCE_FILE).write_text("{}")
    return root


def hostile_folder(folder, marker, with_model=None):
    folder.mkdir()
    if with_model is not None:
        for path in with_model.iterdir():
            shutil.copy(path, folder / path.name)
    (folder / HPARAMS_FILE).write_text(HOSTILE.format(marker=marker))
    return folder


def test_exported_weights_are_safetensors(runs):
    path = runs / "1" / "model" / "model.ckpt"
    with safe_open(str(path), framework="pt") as f:
        assert len(list(f.keys())) > 0


def test_a_hostile_yaml_alone_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    folder = hostile_folder(tmp_path / "model", marker)
    with pytest.raises(UntrustedModelError, match="trust_remote_code"):
        RespiratoryClassifier.from_hparams(source=str(folder))
    assert not marker.exists()


def test_a_model_folder_loads_from_its_description_not_its_yaml(runs, tmp_path):
    marker = tmp_path / "pwned"
    folder = hostile_folder(
        tmp_path / "model", marker, with_model=runs / "1" / "model"
    )
    (folder / HPARAMS_FILE).write_text(HOSTILE.format(marker=marker))
    classifier = RespiratoryClassifier.from_hparams(source=str(folder))
    assert classifier.hparams.backbones == ["cnn6"]
    assert not marker.exists()


def test_a_hostile_hub_model_is_refused_by_rsc_classify(
    runs,
    wavs,
    tmp_path,
    monkeypatch,
    capsys,  # noqa: F811
):
    marker = tmp_path / "pwned"
    folder = hostile_folder(tmp_path / "published", marker)
    cache = fake_hub(tmp_path / "hub", "org/hostile", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(SystemExit) as done:
        cli([str(wavs[0]), "--model", "org/hostile", "--device", "cpu"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"only by {HPARAMS_FILE}" in err and "--trust_remote_code)" in err
    assert not marker.exists()


def test_the_opt_in_runs_the_yaml(tmp_path):
    marker = tmp_path / "pwned"
    folder = hostile_folder(tmp_path / "model", marker)
    with pytest.raises(Exception):  # noqa: B017 no modules: not a model
        RespiratoryClassifier.from_hparams(
            source=str(folder), savedir=tmp_path / "s", trust_remote_code=True
        )
    assert marker.exists()


def test_an_exported_ensemble_loads_without_its_yaml(runs, wavs, tmp_path):  # noqa: F811
    export_ensemble([runs], tmp_path / "ens")
    marker = tmp_path / "pwned"
    (tmp_path / "ens" / HPARAMS_FILE).write_text(HOSTILE.format(marker=marker))
    loaded = RespiratoryClassifier.from_hparams(source=str(tmp_path / "ens"))
    folder = RespiratoryClassifier.from_folder(runs, "cpu")
    a, b = loaded.classify_files(wavs), folder.classify_files(wavs)
    for x, y in zip(a, b):
        assert x["members"] == y["members"]
        for name in CLASS_NAMES:
            assert x["probabilities"][name] == pytest.approx(
                y["probabilities"][name], abs=1e-6
            )
    assert not marker.exists()


def test_a_hub_revision_is_honoured(runs, wavs, tmp_path, monkeypatch):  # noqa: F811
    cache = fake_hub(tmp_path / "hub", "org/tiny", runs / "1" / "model")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    argv = [str(wavs[0]), "--device", "cpu"]
    assert cli(argv + ["--model", f"org/tiny@{COMMIT}"]) == 0
    assert cli(argv + ["--model", "org/tiny", "--revision", COMMIT]) == 0
    with pytest.raises(SystemExit) as done:
        cli(argv + ["--model", "org/tiny@" + "f" * 40])
    assert done.value.code == 2


def test_a_model_that_outputs_nan_is_an_error_for_each_file(
    runs,
    wavs,
    tmp_path,
    capsys,  # noqa: F811
):
    folder = tmp_path / "nan"
    shutil.copytree(runs / "1" / "model", folder)
    state = read_weights(folder / "model.ckpt")
    state = {
        k: v * float("nan") if v.is_floating_point() else v
        for k, v in state.items()
    }
    save_weights(state, folder / "model.ckpt")
    assert cli([str(wavs[0]), "--model", str(folder), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert '"class"' not in out and "not finite" in out


def test_a_folder_of_runs_with_an_unfinished_run_is_refused(runs, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(runs, folder)
    shutil.rmtree(folder / "2" / "model")
    with pytest.raises(NoModelError, match=f"{folder / '2'} holds no model"):
        RespiratoryClassifier.from_folder(folder, "cpu")


def test_a_run_folder_uses_its_model(runs, wavs):  # noqa: F811
    (runs / "1" / HPARAMS_FILE).write_text("seed: 1\n")  # the recipe's copy
    assert (
        cli([str(wavs[0]), "--model", str(runs / "1"), "--device", "cpu"]) == 0
    )


def test_a_pickled_checkpoint_exits_2_with_our_message(
    runs,
    wavs,
    tmp_path,
    capsys,  # noqa: F811
):
    folder = tmp_path / "pickle"
    shutil.copytree(runs / "1" / "model", folder)
    torch.save({"anything": 1}, folder / "model.ckpt")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_weights(folder / "model.ckpt")
    with pytest.raises(SystemExit) as done:
        cli([str(wavs[0]), "--model", str(folder), "--device", "cpu"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "not a safetensors weights file" in err
    assert "Traceback" not in err and "weights_only" not in err


def test_speechbrain_interface(runs, wavs):  # noqa: F811
    classifier = RespiratoryClassifier.from_folder(runs / "1" / "model")
    out_prob, score, index, text_lab = classifier.classify_file(wavs[0])
    expected = classifier.classify_files([wavs[0]])[0]["probabilities"]
    assert out_prob.shape == (1, 4)
    assert out_prob[0].tolist() == pytest.approx(
        [expected[n] for n in CLASS_NAMES], abs=1e-6
    )
    assert score[0] == out_prob[0].max()
    assert index[0] == out_prob[0].argmax()
    assert text_lab == [CLASS_NAMES[int(index[0])]]
    cycles = torch.cat([classifier.load_cycle(w) for w in wavs])
    probs, _, idx, labels = classifier.classify_batch(cycles, torch.ones(2))
    assert probs.shape == (2, 4) and len(labels) == 2
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert labels == [CLASS_NAMES[i] for i in idx.tolist()]


def test_rsc_classify_prints_json_lines_only(runs, wavs):  # noqa: F811
    argv = [sys.executable, "-m", "speechbrain_rsc.inference", str(wavs[0])]
    argv += ["--model", str(runs / "1" / "model"), "--device", "cpu"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [line[0] for line in done.stdout.splitlines()] == ["{"]
