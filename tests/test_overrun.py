"""A cycle whose end is past its recording's: clamped to the audio's end,
as the reference code does, or skipped; the option keys the data and the
paper configuration takes the reference's."""

import re

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import RECIPE
from test_prepare import (
    FAST,
    SR,
    add_recording,
    make_official,
    read_csv,
    summary_of,
)

from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.recipe import prepare_data

SCRIPTS = ("train_teacher.py", "distill.py", "run_paper.py")


@pytest.fixture
def overrunning(tmp_path):
    """A 3 s train recording whose second cycle ends 0.5 s past it."""
    split = {
        "101_1b1_Al_sc_Meditron": "train",
        "103_1b1_Ar_sc_Meditron": "test",
    }
    audio = make_official(tmp_path / "icbhi", split)
    add_recording(
        audio, "101_1b1_Al_sc_Meditron", ["0.1\t1.5\t0\t0", "2.5\t3.5\t1\t0"]
    )
    add_recording(audio, "103_1b1_Ar_sc_Meditron", ["0.2\t1.2\t0\t1"])
    return tmp_path / "icbhi"


def test_clamp_keeps_the_overrunning_cycle_cut_at_the_audio_end(
    overrunning, tmp_path
):
    save = tmp_path / "out"
    skip = prepare_icbhi(overrunning, save, valid_fraction=0, **FAST)
    clamp = prepare_icbhi(
        overrunning, save, valid_fraction=0, overrun="clamp", **FAST
    )
    skipped, clamped = summary_of(skip), summary_of(clamp)
    assert skipped["options"]["overrun"] == "skip"
    assert clamped["options"]["overrun"] == "clamp"
    assert skipped["key"] != clamped["key"]  # the option keys the data
    assert skipped["skips"]["by_reason"] == {"end beyond the audio": 1}
    assert clamped["skips"]["count"] == 0
    txt = str(overrunning / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron")
    assert clamped["clamped"] == [
        {"file": txt + ".txt", "line": 2, "end": 3.5, "audio_end": 3.0}
    ]
    assert [r["ID"] for r in read_csv(skip["train"])] == [
        "101_1b1_Al_sc_Meditron_0"
    ]
    rows = read_csv(clamp["train"])
    assert [r["ID"] for r in rows] == [
        "101_1b1_Al_sc_Meditron_0",
        "101_1b1_Al_sc_Meditron_1",
    ]
    # cut from 2.5 s to the end (the faded recording), tiled to 1 s
    x, _ = sf.read(txt + ".wav", dtype="float32")
    n = SR // 16
    x[:n] *= np.linspace(0, 1, n, dtype=np.float32)
    x[-n:] *= np.linspace(1, 0, n, dtype=np.float32)
    segment = x[int(2.5 * SR) :]
    expected = np.tile(segment, 2)[:SR]
    expected[-n:] *= np.linspace(1, 0, n, dtype=np.float32)
    cached, _ = sf.read(rows[1]["wav"], dtype="float32")
    np.testing.assert_allclose(cached, expected, atol=1e-7)
    # summary.json says whether the counts are the official split's
    for summary, train in ((skipped, 1), (clamped, 2)):
        assert summary["official_split"] == {
            "expected": {"train": 4142, "test": 2756},
            "found": {"train": train, "test": 1},
            "matches": False,
        }


def test_a_cycle_starting_past_the_audio_is_skipped_even_clamped(tmp_path):
    split = {"101_1b1_Al_sc_Meditron": "train"}
    audio = make_official(tmp_path / "icbhi", split)
    add_recording(
        audio, "101_1b1_Al_sc_Meditron", ["0.1\t1.5\t0\t0", "3.1\t3.6\t0\t0"]
    )
    out = prepare_icbhi(
        tmp_path / "icbhi", tmp_path / "out", overrun="clamp", **FAST
    )
    assert summary_of(out)["skips"]["by_reason"] == {
        "start beyond the audio": 1
    }


def test_unknown_overrun_is_refused_by_name(overrunning, tmp_path):
    with pytest.raises(ValueError, match="overrun must be one of"):
        prepare_icbhi(overrunning, tmp_path / "out", overrun="pad", **FAST)


def test_prepare_data_passes_overrun_on(overrunning, tmp_path):
    data = prepare_data(
        overrunning,
        tmp_path / "prepared",
        sample_rate=SR,
        duration=1.0,
        pad="repeat",
        valid_fraction=0,
        split_seed=1,
        overrun="clamp",
    )
    assert data.summary["options"]["overrun"] == "clamp"
    assert len(data.datasets["train"]) == 2


def test_paper_configuration_clamps_as_the_reference():
    with open(RECIPE / "hparams" / "paper_icbhi.yaml", encoding="utf-8") as f:
        paper = yaml.load(f, Loader=yaml.BaseLoader)
    assert paper["overrides"]["overrun"] == "clamp"
    for path in sorted((RECIPE / "hparams").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "prompt_metadata_file: null" in text and "overrides:" not in text:
            assert re.search(r"^overrun: skip ", text, re.M), path.name
    for script in SCRIPTS:
        text = (RECIPE / script).read_text(encoding="utf-8")
        assert re.search(r'overrun=\w+\["overrun"\]', text), script
    text = (RECIPE / "icbhi_prepare.py").read_text(encoding="utf-8")
    assert '"--overrun"' in text
