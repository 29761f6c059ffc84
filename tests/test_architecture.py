"""Checkpoints of another size than the class defaults (issue 19, item 2):
the architecture is what the options declare, on every path; a mismatch
is one short error naming the sizes and the options to set; the export
records the resolved architecture, so the model loads again.
"""

import json

import pytest
from conftest import RECIPE, run_recipe
from test_export import wavs as wavs  # noqa: F401 (a fixture)
from test_weights import TINY_AST, write_ast
from test_weights import hub as hub  # noqa: F401 (a fixture)

from speechbrain_rsc.inference import RespiratoryClassifier, cli
from speechbrain_rsc.models import build_backbone
from speechbrain_rsc.models.checkpoints import CheckpointError
from speechbrain_rsc.trained_model import CONFIG_FILE

SOURCE = "org/small-ast"


def teacher(tmp_path, **options):
    args = {
        "use_pretrained": True,
        "pretrained_path": SOURCE,
        "synthetic_recordings": 8,
        "synthetic_folder": tmp_path / "synthetic",
        "prepare_folder": tmp_path / "prepared",
        "duration": 1.0,
        "number_of_epochs": 1,
        "batch_size": 4,
        "num_workers": 0,
        "output_folder": tmp_path / "ast" / "1",
        **options,
    }
    argv = [RECIPE / "hparams" / "ast.yaml", "--noprogressbar"]
    for key, value in args.items():
        argv += [f"--{key}", value]
    run_recipe("train_teacher.py", *argv)
    return tmp_path / "ast" / "1" / "model"


def test_the_recipe_names_the_sizes_to_declare(hub, tmp_path):
    hub.add(SOURCE, write_ast)
    with pytest.raises(CheckpointError) as error:
        teacher(tmp_path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "hidden_size: 768 declared, 32 in the weights" in message
    assert "num_hidden_layers: 12 declared, 1 in the weights" in message
    assert (
        'the model\'s options: {"hidden_size": 32, "num_hidden_layers": 1'
        in (message)
    )


def test_the_api_follows_the_same_rule(hub):
    hub.add(SOURCE, write_ast)
    with pytest.raises(CheckpointError, match="hidden_size: 768 declared"):
        build_backbone("ast", {"duration": 1.0}, SOURCE, use_pretrained=True)
    model = build_backbone(
        "ast", {"duration": 1.0, **TINY_AST}, SOURCE, use_pretrained=True
    )
    assert model.backbone_config["options"]["hidden_size"] == 32
    assert model.backbone_config["options"]["patch_size"] == 16


def test_a_declared_small_ast_trains_exports_and_loads(
    hub,
    tmp_path,
    wavs,
):
    hub.add(SOURCE, write_ast)
    model = teacher(tmp_path, spec_augment=False, **TINY_AST)
    options = json.loads((model / CONFIG_FILE).read_text())["options"]
    assert {k: options[k] for k in TINY_AST} == TINY_AST
    assert options["num_mel_bins"] == 128  # the resolved architecture
    assert cli([str(wavs[0]), "--model", str(model), "--device", "cpu"]) == 0
    for trust in (False, True):
        loaded = RespiratoryClassifier.from_hparams(
            source=str(model),
            savedir=tmp_path / f"saved{trust}",
            trust_remote_code=trust,
        )
        assert loaded.hparams.backbones == ["ast"]
