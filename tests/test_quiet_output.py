"""Quiet, clean output: the stand-in tokenizer warning once, no
transformers load report, and rsc-classify's stdout holding JSON lines
only."""

import json
import logging
import sys

import numpy as np
import soundfile
import torch
from conftest import TINY_CLAP
from transformers import ASTConfig, ASTForAudioClassification
from transformers.utils import logging as hf_logging

from speechbrain_rsc import inference
from speechbrain_rsc.models import clap
from speechbrain_rsc.models.ast import AST

TINY_AST = {
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 16,
}


def test_stand_in_tokenizer_warning_once_for_an_ensemble(monkeypatch, caplog):
    monkeypatch.setattr(clap, "_warned_stand_in", False)
    caplog.set_level(logging.WARNING, logger=clap.logger.name)
    members = [clap.BTS(clap_config=TINY_CLAP) for _ in range(3)]
    assert not [r for r in caplog.records if "stand-in" in r.getMessage()]
    prompts = ["This sound was recorded from the trachea of a patient."]
    with torch.no_grad():
        for member in members:  # a random-weights BTS ensemble
            member(torch.zeros(1, 4800), prompts=prompts)
    warnings = [r for r in caplog.records if "stand-in" in r.getMessage()]
    assert len(warnings) == 1  # when its prompts are tokenized, once


def test_ast_folder_loads_without_transformers_report(tmp_path, capsys):
    """A folder of an AST audio classifier (as MIT's on the hub): its
    classifier is dropped without transformers' load report, even where
    logs reach stdout (SpeechBrain's console handler; transformers
    propagates to the root logger when CI is set)."""
    config = ASTConfig(**TINY_AST, max_length=98, num_mel_bins=128)
    ASTForAudioClassification(config).save_pretrained(tmp_path / "ast")
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    root.addHandler(handler)
    # transformers' report is a warning; our own INFO lines do not count
    # (an earlier test may have set the root logger to INFO)
    level = root.level
    root.setLevel(logging.WARNING)
    hf_logging.enable_propagation()
    try:
        AST(duration=1.0, **TINY_AST).load_pretrained(str(tmp_path / "ast"))
    finally:
        hf_logging.disable_propagation()
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capsys.readouterr()
    assert out == ""
    assert "LOAD REPORT" not in err


def test_rsc_classify_stdout_holds_json_lines_only(
    tmp_path, monkeypatch, capsys
):
    """Whatever prints on stdout while the model loads or runs goes to
    stderr."""
    wav = tmp_path / "cycle.wav"
    soundfile.write(wav, np.zeros(16000, dtype="float32"), 16000)

    class Noisy:
        def classify_files(self, files, metadata, batch_size):
            print("a library's progress line")
            return [{"file": f, "class": "normal"} for f in files]

    def load_classifier(*args, **kwargs):
        print("a library's load report")
        return Noisy()

    monkeypatch.setattr(inference, "load_classifier", load_classifier)
    assert inference.cli([str(wav), "--model", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["class"] for line in out.splitlines()] == [
        "normal"
    ]
    assert "load report" in err and "progress line" in err
