"""run_paper.py end to end on a tiny configuration, then inference."""

import csv
import json
import statistics

import pytest
import yaml
from conftest import RECIPE, run_recipe

from speechbrain_rsc.bank import find_banks
from speechbrain_rsc.inference import RespiratoryClassifier, main
from speechbrain_rsc.provenance import ProvenanceMismatch
from speechbrain_rsc.report import collect_runs, k_curves


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
        table2_k=2,
        table2_seeds=[1, 2],
        table2={
            "resnet18": {
                "teacher_hparams": "hparams/resnet18.yaml",
                "student_hparams": "hparams/distill_resnet18.yaml",
                "overrides": {"spec_augment": False},
            }
        },
    )
    config["overrides"].update(
        duration=1.0, number_of_epochs=1, batch_size=8, num_workers=0
    )
    hparams = root / "tiny.yaml"
    hparams.write_text(yaml.safe_dump(config))
    run_recipe("run_paper.py", hparams)
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
    run_recipe("run_paper.py", hparams)
    out = capsys.readouterr().out
    # 2 teachers, 2 x 7 students, 2 x 2 ResNet18 runs of Table 2
    assert "[run ]" not in out and out.count("[skip]") == 2 + 2 * 7 + 4
    assert (results / "report" / "report.md").read_text() == before


def test_table2_is_hard_vs_soft_per_backbone_by_hand(paper_run):
    results, _ = paper_run
    rows = list(csv.DictReader((results / "report" / "table2.csv").open()))
    assert [r["backbone"] for r in rows] == ["ResNet18", "CNN6", "Average"]
    gains = []
    for row, backbone in zip(rows, ("resnet18", "cnn6")):
        hard = find_banks(results / backbone)
        soft = find_banks(results / f"{backbone}-d" / "cnn6_mean_k2")
        assert soft[0].info["teacher_backbone"] == "cnn6"
        assert soft[0].info["teacher_seeds"] == [1, 2]
        means = [
            statistics.mean(b.info["metrics"]["test"]["score"] for b in runs)
            for runs in (hard, soft)
        ]
        assert row["hard_score"].startswith(f"{means[0]:.2f} ± ")
        assert row["soft_score"].startswith(f"{means[1]:.2f} ± ")
        assert row["gain"] == f"{means[1] - means[0]:+.2f}"
        assert row["teachers"] == "CNN6++[k=2]" and row["n"] == "2/2"
        assert row["params"].endswith("M")
        gains.append(means[1] - means[0])
    assert rows[2]["gain"] == f"{statistics.mean(gains):+.2f}"


def test_figure2_has_the_hard_label_student_at_k0(paper_run):
    results, _ = paper_run
    groups = collect_runs(results)
    curves = k_curves(groups, "cnn6")
    hard = find_banks(results / "cnn6-d" / "cnn6_hard_k2")
    mean_k1 = find_banks(results / "cnn6-d" / "cnn6_mean_k1")
    expected = statistics.mean(b.info["metrics"]["test"]["score"] for b in hard)
    assert list(curves["mean"]) == [0, 1, 2]
    assert list(curves["random"]) == [0, 1, 2]
    assert curves["mean"][0][0] == pytest.approx(expected)
    k1 = statistics.mean(b.info["metrics"]["test"]["score"] for b in mean_k1)
    assert curves["random"][1][0] == pytest.approx(k1)


def test_per_device_tables_count_every_test_cycle(paper_run):
    results, _ = paper_run
    teacher = find_banks(results / "cnn6")[0]
    n_test = len(teacher.ids["test"])
    for by in ("device", "location"):
        rows = list(
            csv.DictReader((results / "report" / f"by_{by}_cnn6.csv").open())
        )
        models = {r["model"] for r in rows}
        assert "CNN6++[k=2]" in models and "CNN6 (hard labels)" in models
        for model in models:
            cycles = [int(r["cycles"]) for r in rows if r["model"] == model]
            assert sum(cycles) == n_test


def test_rerun_on_other_data_is_refused(paper_run, tmp_path):
    results, hparams = paper_run
    config = yaml.safe_load(hparams.read_text())
    config["synthetic_recordings"] = 11
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    before = (results / "report" / "report.md").read_text()
    with pytest.raises(ProvenanceMismatch, match="data.fingerprints"):
        run_recipe("run_paper.py", other)
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
    result = classifier.describe_file(wav)
    assert len(result["members"]) == 2
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
