"""BTS prompts from the recording's own chest location or, as the
reference code, from one location per patient; the option keys the data."""

import csv
import json
from pathlib import Path

import pytest

from speechbrain_rsc.data.icbhi import ICBHIFormatError
from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.data.prompts import PromptWriter
from speechbrain_rsc.data.schema import parse_stem
from speechbrain_rsc.hashing import sha256_file
from speechbrain_rsc.provenance import (
    ProvenanceMismatch,
    check_run,
    data_identity,
    record_run,
)

FAST = {"sample_rate": 4000, "duration": 1.0, "valid_fraction": 0}
# The reference's layout (patient, age, sex, adult BMI, child weight and
# height, location); the location of patient 101 is not that of its
# 101_1b1_Al recording.
METADATA = (
    "101\t3.0\tF\tNA\t19.0\t99.0\tPr\n"
    "102\t0.75\tF\tNA\t9.8\t73.0\tAr\n"
    "103\t70.0\tF\t33.0\tNA\tNA\tAr\n"
    "104\t70.0\tF\t28.47\tNA\tNA\tAl\n"
)


def _prompts(outputs):
    prompts = {}
    for split in ("train", "valid", "test"):
        with open(outputs[split], newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                prompts[row["recording"]] = row["prompt"]
    return prompts


def _manifests(outputs):
    return {s: outputs[s] for s in ("train", "valid", "test")}


def test_patient_location_gives_the_references_prompts(icbhi_sample, tmp_path):
    metadata = tmp_path / "metadata.txt"
    metadata.write_text(METADATA)
    save = tmp_path / "prepared"
    own = prepare_icbhi(icbhi_sample, save, **FAST)
    ref = prepare_icbhi(
        icbhi_sample,
        save,
        prompt_location="patient",
        prompt_metadata_file=metadata,
        **FAST,
    )
    assert Path(own["summary"]).parent != Path(ref["summary"]).parent
    own_prompts, ref_prompts = _prompts(own), _prompts(ref)
    stem = "101_1b1_Al_sc_Meditron"
    assert own_prompts[stem] == (
        "This sound was recorded from the left anterior chest of a female "
        "pediatric patient, using a Meditron stethoscope."
    )
    assert ref_prompts[stem] == (
        "This sound was recorded from the right posterior chest of a "
        "female pediatric patient, using a Meditron stethoscope."
    )
    assert ref_prompts["104_1b1_Pr_sc_Litt3200"] == (
        "This sound was recorded from the left anterior chest of an adult "
        "female patient, using a Litt3200 stethoscope."
    )
    # recordings whose own location is their patient's read the same
    assert (
        ref_prompts["102_1b1_Ar_sc_Meditron"]
        == (own_prompts["102_1b1_Ar_sc_Meditron"])
    )
    summary = json.loads(Path(ref["summary"]).read_text())
    assert summary["options"]["prompts"] == {
        "location": "patient",
        "metadata_file": sha256_file(metadata),
    }
    # a run made with one option refuses data prepared with the other
    run = tmp_path / "run"
    run.mkdir()
    record_run(run, {"data": data_identity(_manifests(own), own["summary"])})
    with pytest.raises(ProvenanceMismatch):
        check_run(run, {"data": data_identity(_manifests(ref), ref["summary"])})


def test_other_metadata_is_other_data(icbhi_sample, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(METADATA)
    second.write_text(METADATA.replace("Pr\n", "Al\n"))
    keys = {
        Path(
            prepare_icbhi(
                icbhi_sample,
                tmp_path / "prepared",
                prompt_location="patient",
                prompt_metadata_file=path,
                **FAST,
            )["summary"]
        ).parent.name
        for path in (first, second)
    }
    assert len(keys) == 2


def test_patient_223_reads_as_the_reference_reads_it(tmp_path):
    metadata = tmp_path / "metadata.txt"
    metadata.write_text("223\tNA\tNA\tNA\tNA\tNA\tLl\n")
    stem = parse_stem("223_1b1_Pr_sc_Meditron")
    assert PromptWriter("patient", metadata)(stem, "", "") == (
        "This sound was recorded from the left lateral chest of a female "
        "pediatric patient, using a Meditron stethoscope."
    )
    assert PromptWriter("recording")(stem, "", "") == (
        "This sound was recorded from the right posterior chest of a "
        "patient, using a Meditron stethoscope."
    )


def test_patient_location_needs_the_metadata_file(tmp_path):
    with pytest.raises(ValueError, match="prompt_metadata_file"):
        PromptWriter("patient")
    with pytest.raises(ValueError, match="prompt_location must be"):
        PromptWriter("file")
    metadata = tmp_path / "metadata.txt"
    metadata.write_text("101\t3.0\tF\tNA\t19.0\t99.0\tXx\n")
    with pytest.raises(ICBHIFormatError, match="line 1"):
        PromptWriter("patient", metadata)
    metadata.write_text("101\t3.0\tF\tNA\t19.0\t99.0\tPr\n")
    with pytest.raises(ICBHIFormatError, match="patient 102"):
        PromptWriter("patient", metadata)(
            parse_stem("102_1b1_Ar_sc_Meditron"), "", ""
        )
