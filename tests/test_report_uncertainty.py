"""The report's intervals, paired gains, calibration and the all-"normal"
baseline, on banks written by hand (tiny, CPU, offline)."""

import csv

import torch

from speechbrain_rsc.bank import LogitBank
from speechbrain_rsc.metrics import score_logits
from speechbrain_rsc.report import write_report

DEVICES = ("AKGC417L", "Meditron")
IDS, LABELS = [], []
for patient in range(10):
    for i in range(4):
        IDS.append(f"{101 + patient}_1b1_Al_sc_{DEVICES[patient % 2]}_{i}")
        LABELS.append(0 if i < 2 else 1 + patient % 3)
LABELS = torch.tensor(LABELS)


def save(folder, logits, **info):
    info = {"protocol": "validation", "select_on": "valid", **info}
    info["metrics"] = {"test": score_logits(logits, LABELS)}
    bank = LogitBank({"test": IDS}, {"test": logits}, {"test": LABELS}, info)
    folder.mkdir(parents=True)
    bank.save(folder / "bank.safetensors")


def good(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.nn.functional.one_hot(LABELS, 4).float() * 1.5
    return logits + torch.randn(len(IDS), 4, generator=generator)


def normal_only(seed):
    logits = torch.zeros(len(IDS), 4)
    logits[:, 0] = 1.0 + seed
    return logits


def write(root):
    for seed in (1, 2):
        teacher = {"role": "teacher", "backbone": "cnn6", "seed": seed}
        save(root / "cnn6" / str(seed), good(seed), **teacher)
        student = {
            "role": "student",
            "backbone": "cnn6",
            "seed": seed,
            "teacher_backbone": "cnn6",
            "teacher_seeds": [1, 2],
        }
        # the soft-label students are their teachers again: a gain of 0
        save(
            root / "cnn6-d" / "mean" / str(seed),
            good(seed),
            targets={"mode": "mean"},
            **student,
        )
        save(
            root / "cnn6-d" / "raw" / str(seed),
            normal_only(seed),
            targets={"mode": "raw_logits"},
            **student,
        )
    return write_report(root, root / "report", ["cnn6"], 2, 200, 0)


def rows(path):
    return list(csv.DictReader(open(path)))


def test_report_has_intervals_gains_baseline_and_reliability(tmp_path):
    report = write(tmp_path)
    text = open(report).read()
    folder = tmp_path / "report"
    table1 = rows(folder / "table1_cnn6.csv")
    assert table1[0]["model"] == 'All "normal" (trivial baseline)'
    assert table1[0]["sp"] == "100.00 [100.00, 100.00]"
    assert table1[0]["se"] == "0.00 [0.00, 0.00]"
    assert table1[0]["score"] == "50.00 [50.00, 50.00]"
    for row in table1[1:]:
        assert float(row["score_lo"]) <= float(row["score_mean"])
        assert float(row["score_mean"]) <= float(row["score_hi"])
        assert row["ece"] != "" and row["brier"] != ""
    # Table 2: soft = hard bank for bank, so the paired gain is exactly 0
    (cnn6,) = rows(folder / "table2.csv")
    assert cnn6["gain"] == "+0.00"
    assert (cnn6["gain_lo"], cnn6["gain_hi"]) == ("0.0", "0.0")
    assert cnn6["p_not_positive"] == "1.0"
    assert "CNN6: gain +0.00, 95 % interval [0.00, 0.00]" in text
    assert "within noise" in text
    # Table 3: the raw-logit students predict normal everywhere
    table3 = {r["model"]: r for r in rows(folder / "table3_cnn6.csv")}
    raw = table3["Remove softmax (raw logits)"]
    assert raw["score"].startswith("50.00 ± 0.00 [50.00, 50.00]")
    assert float(raw["gain_hi"]) < 0 and raw["p_not_positive"] == "1.0"
    assert "Remove softmax (raw logits): gain" in text
    assert "a loss beyond noise" in text
    assert "**Does not beat predicting" in text
    assert "Remove softmax (raw logits): 50.00" in text
    # per device: the baseline's rows and intervals
    by_device = rows(folder / "by_device_cnn6.csv")
    base = [r for r in by_device if r["model"].startswith("All")]
    assert [r["device"] for r in base] == list(DEVICES)
    assert {r["score"] for r in base} == {"50.0"}
    assert all(r["score_lo"] != "" for r in by_device)
    for name in ("reliability.png", "figure2_cnn6.png", "figure3_cnn6.png"):
        assert (folder / name).stat().st_size > 0
    assert "![reliability](reliability.png)" in text
    assert "CNN6++[k=2] teachers: ECE" in text


def test_report_is_deterministic_and_bootstrap_0_turns_it_off(tmp_path):
    report = write(tmp_path)
    first = open(report).read()
    write_report(tmp_path, tmp_path / "report", ["cnn6"], 2, 200, 0)
    assert open(report).read() == first
    write_report(tmp_path, tmp_path / "plain", ["cnn6"], 2, 0, 0)
    plain = open(tmp_path / "plain" / "report.md").read()
    assert "trivial baseline" in plain and "100.00 [" not in plain
    assert "score_lo" not in open(tmp_path / "plain" / "table1_cnn6.csv").read()
    assert not (tmp_path / "plain" / "reliability.png").exists()
