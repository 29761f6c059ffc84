"""Intervals and calibration in ensemble.py's printout and CSVs."""

import csv
import runpy

import torch
from conftest import RECIPE

from speechbrain_rsc.bank import LogitBank
from speechbrain_rsc.ensemble import bank_breakdown
from speechbrain_rsc.models.cnn6 import CNN6

DEVICES = ("AKGC417L", "Meditron")


def save_banks(folder, seeds=(1, 2)):
    """Banks of 12 patients x 4 cycles (2 normal, 2 abnormal), on two
    devices; each seed's model errs on a few patients."""
    ids, labels = [], []
    for patient in range(12):
        device = DEVICES[patient % 2]
        for i in range(4):
            ids.append(f"{101 + patient}_1b1_Al_sc_{device}_{i}")
            labels.append(0 if i < 2 else 1 + patient % 3)
    labels = torch.tensor(labels)
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        logits = torch.nn.functional.one_hot(labels, 4).float() * 2
        logits += torch.randn(len(ids), 4, generator=generator)
        bank = LogitBank(
            {"test": ids},
            {"test": logits},
            {"test": labels},
            {"backbone": "cnn6", "seed": seed},
        )
        (folder / str(seed)).mkdir(parents=True)
        bank.save(folder / str(seed) / "bank.safetensors")
    return folder


def test_ensemble_script_writes_the_six_interval_columns(tmp_path, capsys):
    save_banks(tmp_path / "banks")
    main = runpy.run_path(str(RECIPE / "ensemble.py"))["main"]
    out = tmp_path / "x.csv"
    main([str(tmp_path / "banks"), "--k", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    (row,) = csv.DictReader(out.open())
    for metric in ("sp", "se", "score"):
        low, point, high = (
            float(row[f"{metric}{end}"]) for end in ("_lo", "", "_hi")
        )
        assert low <= point <= high
        assert f"{point:.2f} [{low:.2f}, {high:.2f}]" in printed
    assert 0 <= float(row["ece"]) <= 100 and 0 <= float(row["brier"]) <= 2
    for by in ("device", "location"):
        (group,) = list(csv.DictReader(open(tmp_path / f"x_by_{by}.csv")))[:1]
        assert float(group["score_lo"]) <= float(group["score_hi"])
    # the same seed gives the same file; --bootstrap 0 gives no interval
    first = out.read_text()
    main([str(tmp_path / "banks"), "--k", "1", "--out", str(out)])
    assert out.read_text() == first
    main(
        [str(tmp_path / "banks"), "--k", "1", "--out", str(out)]
        + ["--bootstrap", "0"]
    )
    assert "score_lo" not in out.read_text()


def test_device_intervals_resample_that_devices_patients(tmp_path):
    save_banks(tmp_path)
    bank = LogitBank.load(tmp_path / "1" / "bank.safetensors")
    table = bank_breakdown([bank], bootstrap=200)["device"]
    plain = bank_breakdown([bank])["device"]
    assert table[plain.columns].equals(plain)
    assert list(table.columns[-6:]) == [
        "sp_lo",
        "sp_hi",
        "se_lo",
        "se_hi",
        "score_lo",
        "score_hi",
    ]
    assert (table["score_lo"] <= table["score"]).all()
    assert (table["score"] <= table["score_hi"]).all()


def test_model_card_shows_the_runs_intervals_and_calibration(tmp_path):
    from speechbrain_rsc.ensemble import evaluate_banks
    from speechbrain_rsc.export import save_trained
    from speechbrain_rsc.model_card import write_model_card

    save_banks(tmp_path, seeds=(1,))
    bank = LogitBank.load(tmp_path / "1" / "bank.safetensors")
    model = CNN6(channels=[4, 8, 8, 8])
    save_trained(model, tmp_path / "1" / "model", {"seed": 1})
    card = write_model_card(tmp_path / "1" / "model").read_text()
    row = evaluate_banks([bank], "test", bootstrap=1000)
    cells = [
        f"{row[m]:.2f} [{row[m + '_lo']:.2f}, {row[m + '_hi']:.2f}]"
        for m in ("sp", "se", "score")
    ]
    assert f"| test | {' | '.join(cells)} |" in card
    assert "resamples the test **patients**" in card
