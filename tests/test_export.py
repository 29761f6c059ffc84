"""Published model folders load the SpeechBrain way (from_hparams, from a
folder or a Hugging Face hub cache) and give what today's loader gives.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.utils.fetching import FetchConfig

from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.distillation import Targets
from speechbrain_rsc.export import HPARAMS_FILE, export_ensemble, save_trained
from speechbrain_rsc.inference import RespiratoryClassifier
from speechbrain_rsc.model_card import CARD_FILE, write_model_card
from speechbrain_rsc.models import build_backbone
from speechbrain_rsc.trained_model import read_config

TINY = {"channels": [4, 8, 8, 8]}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_run(folder, seed, duration=1.0, **info):
    torch.manual_seed(seed)
    model = build_backbone("cnn6", TINY)
    save_trained(model, folder, {"seed": seed, "duration": duration, **info})
    return folder


def fake_hub(cache, repo_id, folder):
    """The Hugging Face hub cache layout holding ``folder``'s files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for path in folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    return cache


def probabilities(classifier, wavs):
    return torch.tensor(
        [
            list(result["probabilities"].values())
            for result in classifier.classify_files(wavs)
        ]
    )


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((1.0, 2.5)):
        path = folder / f"clip{i}.wav"
        signal = rng.normal(0, 0.1, int(seconds * 16000)).astype("float32")
        soundfile.write(path, signal, 16000, subtype="FLOAT")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run") / "1" / "model", 1)


@pytest.fixture(scope="module")
def reference(student, wavs):
    classifier = RespiratoryClassifier.from_folder(student, "cpu")
    return probabilities(classifier, wavs)


def test_save_trained_writes_a_speechbrain_model_folder(student):
    names = sorted(p.name for p in student.iterdir())
    assert names == [CARD_FILE, HPARAMS_FILE, "model.ckpt", "model.json"]
    text = (student / HPARAMS_FILE).read_text()
    assert "model: !new:speechbrain_rsc.models.cnn6.CNN6\n" in text
    assert "    channels: [4, 8, 8, 8]\n" in text
    # weights are found through the from_hparams source, not a path
    assert "paths:" not in text


def test_from_hparams_folder_equals_from_folder(
    student, wavs, reference, tmp_path
):
    classifier = RespiratoryClassifier.from_hparams(
        source=str(student),
        savedir=tmp_path / "saved",
        run_opts={"device": "cpu"},
        trust_remote_code=True,  # SpeechBrain's own loading
    )
    torch.testing.assert_close(
        probabilities(classifier, wavs), reference, atol=1e-6, rtol=0
    )
    linked = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert linked == [HPARAMS_FILE, "model.ckpt"]
    assert classifier.hparams.duration == 1.0


def test_from_hparams_hub_id_from_offline_cache(
    student, wavs, reference, tmp_path
):
    cache = fake_hub(tmp_path / "hub", "org/tiny-cnn6", student)
    classifier = RespiratoryClassifier.from_hparams(
        source="org/tiny-cnn6",
        savedir=tmp_path / "saved",
        run_opts={"device": "cpu"},
        fetch_config=FetchConfig(
            allow_network=False, huggingface_cache_dir=str(cache)
        ),
        trust_remote_code=True,
    )
    torch.testing.assert_close(
        probabilities(classifier, wavs), reference, atol=1e-6, rtol=0
    )


def test_rsc_classify_hub_id_with_offline_environment(
    student, wavs, reference, tmp_path
):
    # What a user does: HF_HUB_OFFLINE=1 and HF_HUB_CACHE, nothing else.
    cache = fake_hub(tmp_path / "hub", "org/tiny-cnn6", student)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    argv = ["--model", "org/tiny-cnn6", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_rsc.inference"]
        + [str(w) for w in wavs]
        + argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    got = torch.tensor([list(r["probabilities"].values()) for r in lines])
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=0)


def test_missing_hub_model_is_named(tmp_path, capsys):
    from speechbrain_rsc.inference import main

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(16000, dtype="float32"), 16000)
    with pytest.raises(SystemExit) as exit_info:
        main([str(wav), "--model", "org/not-cached", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model org/not-cached: no such folder, and no Hugging Face" in err


def test_weights_that_do_not_fit_the_yaml_are_refused(student, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in student.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    yaml_path = folder / HPARAMS_FILE
    text = yaml_path.read_text().replace("[4, 8, 8, 8]", "[4, 8, 8, 16]")
    yaml_path.write_text(text)
    with pytest.raises(RuntimeError, match="does not fit the network built"):
        RespiratoryClassifier.from_hparams(
            source=str(folder),
            run_opts={"device": "cpu"},
            trust_remote_code=True,
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for seed in (1, 2, 3):
        tiny_run(runs / str(seed) / "model", seed, role="teacher")
    return runs


def test_exported_ensemble_equals_the_folder_of_runs(runs, wavs, tmp_path):
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "member_4.ckpt").write_bytes(b"an earlier export")
    members = export_ensemble([runs], tmp_path / "ens")
    assert [m.parent.name for m in members] == ["1", "2", "3"]
    names = sorted(p.name for p in (tmp_path / "ens").iterdir())
    assert names == [
        CARD_FILE,
        "ensemble.json",
        HPARAMS_FILE,
        "member_1.ckpt",
        "member_2.ckpt",
        "member_3.ckpt",
    ]
    expected = RespiratoryClassifier.from_folder(runs, "cpu")
    for loaded in (
        RespiratoryClassifier.from_hparams(
            source=str(tmp_path / "ens"),
            savedir=tmp_path / "saved",
            run_opts={"device": "cpu"},
        ),
        RespiratoryClassifier.from_folder(tmp_path / "ens", "cpu"),
    ):
        torch.testing.assert_close(
            probabilities(loaded, wavs),
            probabilities(expected, wavs),
            atol=1e-6,
            rtol=0,
        )
        votes = [r["members"] for r in loaded.classify_files(wavs)]
        assert votes == [r["members"] for r in expected.classify_files(wavs)]
    card = (tmp_path / "ens" / CARD_FILE).read_text()
    assert "cnn6++[k=3] ensemble" in card
    assert "No scores were recorded" in card


def test_exported_ensemble_card_scores_from_the_banks(tmp_path):
    ids = [f"101_1b1_Al_sc_Meditron_{i}" for i in range(3)]
    ids += [f"104_1b1_Ar_sc_Litt3200_{i}" for i in range(3)]
    labels = torch.tensor([0, 1, 2, 0, 3, 0])
    runs = tmp_path / "runs"
    for seed in (1, 2):
        tiny_run(
            runs / str(seed) / "model",
            seed,
            protocol="validation",
            select_on="valid",
        )
        logits = torch.nn.functional.one_hot(labels, 4).float()
        logits[1] = torch.tensor([1.0, 0, 0, 0])  # one crackle missed
        bank = LogitBank(
            {"test": ids}, {"test": logits}, {"test": labels}, {"seed": seed}
        )
        bank.save(runs / str(seed) / BANK_FILENAME)
    export_ensemble([runs / "1", runs / "2" / "model"], tmp_path / "ens")
    facts = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    test = facts["metrics"]["test"]
    assert (test["sp"], test["se"]) == (100.0, pytest.approx(200 / 3))
    card = (tmp_path / "ens" / CARD_FILE).read_text()
    assert "| test | 100.00 | 66.67 | 83.33 |" in card
    assert "| Litt3200 |" in card and "| Meditron |" in card
    assert "Protocol: **validation**" in card


@pytest.mark.parametrize(
    "change, named",
    [
        ({"duration": 2.0}, "duration: {0}/1/model 1.0, {0}/2/model 2.0"),
        ({"sample_rate": 32000}, "sample_rate: {0}/1/model 16000"),
    ],
)
def test_ensemble_of_different_preparations_refused(tmp_path, change, named):
    runs = tmp_path / "runs"
    tiny_run(runs / "1" / "model", 1)
    tiny_run(runs / "2" / "model", 2, duration=change.get("duration", 1.0))
    if "sample_rate" in change:
        path = runs / "2" / "model" / "model.json"
        config = read_config(path.parent)
        config["sample_rate"] = change["sample_rate"]
        path.write_text(json.dumps(config))
    message = f"ensemble members expect different {named.format(runs)}"
    with pytest.raises(ValueError, match="expect different") as error:
        export_ensemble([runs], tmp_path / "ens")
    assert message in str(error.value)
    assert not (tmp_path / "ens").exists()
    with pytest.raises(ValueError) as error:
        RespiratoryClassifier.from_folder(runs, "cpu")
    assert message in str(error.value)


def test_ensemble_of_mixed_protocols_says_so(tmp_path):
    tiny_run(
        tmp_path / "runs" / "1" / "model",
        1,
        protocol="validation",
        select_on="valid",
    )
    tiny_run(
        tmp_path / "runs" / "2" / "model", 2, protocol="paper", select_on="test"
    )
    export_ensemble([tmp_path / "runs"], tmp_path / "ens")
    card = (tmp_path / "ens" / CARD_FILE).read_text()
    assert "Protocol: mixed (1: validation, 2: paper)" in card
    assert "not one known protocol" in card


def test_single_run_is_not_an_ensemble(student, tmp_path):
    with pytest.raises(ValueError, match="at least two trained models"):
        export_ensemble([student], tmp_path / "ens")


# ----------------------------------------------------------------- model card


STUDENT_INFO = {
    "role": "student",
    "seed": 2,
    "epoch": 17,
    "protocol": "paper",
    "select_on": "test",
    "targets": Targets("mean", k=5).describe(),
    "teacher_backbone": "bts",
    "teacher_seeds": [1, 2, 3, 4, 5],
    "metrics": {"test": {"sp": 81.25, "se": 47.5, "score": 64.375}},
}


@pytest.mark.parametrize("as_frame", [True, False])
def test_model_card_has_scores_teachers_and_disclaimer(
    student, tmp_path, as_frame
):
    import pandas as pd

    per_device = [
        {"device": "AKGC417L", "cycles": 10, "sp": 70.0, "score": 60.0},
        {"device": "Meditron", "cycles": 4, "sp": 90.0, "score": 75.5},
    ]
    if as_frame:
        per_device = pd.DataFrame(per_device)
    folder = tmp_path / "model"
    folder.mkdir()
    for path in student.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    card = write_model_card(folder, STUDENT_INFO, per_device, "org/x")
    text = card.read_text()
    assert "## Not a medical device; research use only" in text
    assert "**not a medical device**" in text
    assert "| test | 81.25 | 47.50 | 64.38 |" in text
    assert "| Meditron | 4 | 90.00 | 75.50 |" in text
    assert "mode `mean`" in text
    assert "k = 5 bts models, seeds 1 2 3 4 5" in text
    assert "selected (and curated teachers were ranked) on the" in text
    assert "official **test** split" in text
    assert "optimistic" in text
    assert "Toikkanen, Miika and Kim, June-Woo" in text
    assert 'source="org/x"' in text
    assert "ICBHI 2017 Respiratory Sound Database" in text


def test_save_trained_card_reads_model_json(student):
    text = (student / CARD_FILE).read_text()
    assert "# cnn6 model for ICBHI 2017" in text
    assert "Protocol: not recorded" in text
    assert "No scores were recorded" in text
    assert "resampled to 16000 Hz" in text
