"""run_paper.py end to end on a tiny configuration, then inference."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from speechbrain_rsc.inference import RespiratoryClassifier, main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ICBHI"


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    config = yaml.safe_load(
        (RECIPE / "hparams" / "paper_demo.yaml").read_text()
    )
    config.update(
        output_folder=str(root / "results"),
        synthetic_recordings=10,
        teacher_seeds=[1, 2],
        student_seeds=[1, 2],
        ks=[1, 2],
        variants=["hard", "noise", "teacher_noise", "raw_logits"],
        variant_k=2,
        jobs=1,
    )
    config["overrides"].update(
        duration=1.0, number_of_epochs=1, batch_size=8, num_workers=0
    )
    hparams = root / "tiny.yaml"
    hparams.write_text(yaml.safe_dump(config))
    argv, sys.argv = sys.argv, [str(RECIPE / "run_paper.py"), str(hparams)]
    try:
        runpy.run_path(str(RECIPE / "run_paper.py"), run_name="__main__")
    finally:
        sys.argv = argv
    return root / "results", hparams


def test_report_has_every_table_and_figure(paper_run):
    results, _ = paper_run
    report = results / "report"
    text = (report / "report.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Confusion matrix"):
        assert title in text
    for name in (
        "figure2_cnn6.png",
        "figure3_cnn6.png",
        "confusion_best_student.png",
        "table1_cnn6.csv",
        "table3_cnn6.csv",
        "ensemble_sweep_cnn6.csv",
    ):
        assert (report / name).stat().st_size > 0, name
    # rows name the runs they come from
    assert str(results / "cnn6-d" / "cnn6_mean_k2" / "1") in text
    for row in ("Noised label (var=0.1)", "Single teacher", "Remove softmax"):
        assert row in text


def test_rerun_trains_nothing_and_reproduces_report(paper_run, capsys):
    results, hparams = paper_run
    before = (results / "report" / "report.md").read_text()
    argv, sys.argv = sys.argv, [str(RECIPE / "run_paper.py"), str(hparams)]
    try:
        runpy.run_path(str(RECIPE / "run_paper.py"), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "[run ]" not in out and out.count("[skip]") == 2 + 2 * 7
    assert (results / "report" / "report.md").read_text() == before


def test_classify_real_recordings(paper_run, icbhi_sample, capsys):
    results, _ = paper_run
    model = results / "cnn6-d" / "cnn6_mean_k2" / "1" / "model"
    wavs = sorted((icbhi_sample / "ICBHI_final_database").glob("*.wav"))
    assert len(wavs) == 10
    outputs = main([str(w) for w in wavs] + ["--model", str(model)])
    printed = [
        json.loads(line) for line in capsys.readouterr().out.split("\n") if line
    ]
    assert printed == outputs
    for result in outputs:
        assert result["class"] in ("normal", "crackle", "wheeze", "both")
        assert sum(result["probabilities"].values()) == pytest.approx(
            1, abs=1e-5
        )


def test_ensemble_classifier_reports_member_votes(paper_run, icbhi_sample):
    results, _ = paper_run
    classifier = RespiratoryClassifier.from_folder(results / "cnn6")
    wav = next((icbhi_sample / "ICBHI_final_database").glob("*.wav"))
    result = classifier.classify_file(wav)
    assert len(result["members"]) == 2
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
