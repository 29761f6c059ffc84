"""Pretrained weights from their real sources, resolved offline.

A fake Hugging Face hub cache (the real layout: ``refs/main``, blobs named
by their sha256, snapshot symlinks) and a torch.hub cache in tmp stand in
for the hub and Zenodo; every backbone loads its default source from them
with ``HF_HUB_OFFLINE=1`` and no network.
"""

import hashlib
import json
import logging
import os
import shutil

import pytest
import timm
import torch
from conftest import RECIPE, TINY_CLAP, run_recipe
from safetensors.torch import save_file
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    ClapConfig,
    ClapModel,
)

from speechbrain_rsc.models import build_backbone, clap
from speechbrain_rsc.models.clap_tokenizer import build_prompt_tokenizer
from speechbrain_rsc.models.cnn6 import CNN6
from speechbrain_rsc.models.pretrained import Pretrainer
from speechbrain_rsc.models.weights import (
    AST_SOURCE,
    CLAP_SOURCE,
    CNN6_SOURCE,
    DEFAULT_SOURCES,
    EFFICIENTNET_B0_SOURCE,
    RESNET18_SOURCE,
    WeightsUnavailableError,
    resolve_weights,
    url_cache_path,
)

TINY_CNN6 = (8, 16, 16, 32)
TINY_AST = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class FakeHub:
    """A hub cache and a torch.hub cache under ``root``."""

    def __init__(self, root):
        self.cache = root / "hub_cache"
        self.torch_home = root / "torch"
        self.checkpoints = self.torch_home / "hub" / "checkpoints"

    def add(self, repo_id, write, ref="main"):
        """Write a repository's files with ``write(folder)`` and cache them
        as hub downloads do; return the commit hash.
        """
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = self.cache / ("models--" + repo_id.replace("/", "--"))
        staging = repo / "staging"
        staging.mkdir(parents=True)
        write(staging)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (repo / "blobs").mkdir()
        for file in sorted(staging.iterdir()):
            blob = repo / "blobs" / sha256(file)
            shutil.move(file, blob)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
        staging.rmdir()
        (repo / "refs").mkdir()
        (repo / "refs" / ref).write_text(commit)
        return commit


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(fake.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(fake.torch_home))
    return fake


def tiny_clap(seed=0):
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(**TINY_CLAP))
    # A tokenizer distinct from the random-weight stand-in.
    tokenizer = build_prompt_tokenizer(["a wholly different corpus of words"])
    return model, tokenizer


def panns_checkpoint(path, seed=0):
    """A PANNs-style ``{"model": state_dict}`` of a tiny CNN6."""
    torch.manual_seed(seed)
    model = build_backbone("cnn6", {"channels": TINY_CNN6})
    state = {k: v for k, v in model.state_dict().items() if "head" not in k}
    state["fc_audioset.weight"] = torch.randn(527, TINY_CNN6[-1])
    torch.save({"model": state, "iteration": 1}, path)
    return state


# Per backbone: the source repository (or URL) and its writer, the
# options of the tiny backbone, and one tensor (model key, source key).
def write_clap(folder):
    model, tokenizer = tiny_clap()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.state_dict()


def write_ast(folder):
    torch.manual_seed(1)
    config = ASTConfig(**TINY_AST, max_length=1024, num_labels=527)
    model = ASTForAudioClassification(config)
    model.save_pretrained(folder)
    return model.audio_spectrogram_transformer.state_dict()


def timm_writer(arch):
    def write(folder):
        torch.manual_seed(2)
        state = timm.create_model(arch, num_classes=1000).state_dict()
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(f'{{"architecture": "{arch}"}}')
        return state

    return write


CASES = {
    "audio_clap": (
        write_clap,
        {"clap_config": TINY_CLAP},  # the architecture is what is declared
        (
            "clap.audio_projection.linear1.weight",
            "audio_projection.linear1.weight",
        ),
    ),
    "bts": (
        write_clap,
        {"clap_config": TINY_CLAP},
        (
            "clap.text_model.embeddings.word_embeddings.weight",
            "text_model.embeddings.word_embeddings.weight",
        ),
    ),
    "ast": (
        write_ast,
        {"duration": 1.0, "spec_augment": False, **TINY_AST},
        (
            "encoder.layers.0.attention.q_proj.weight",
            "layers.0.attention.q_proj.weight",
        ),
    ),
    "resnet18": (
        timm_writer("resnet18"),
        {"spec_augment": False},
        ("net.layer1.0.conv1.weight", "layer1.0.conv1.weight"),
    ),
    "efficientnet_b0": (
        timm_writer("efficientnet_b0"),
        {"spec_augment": False},
        ("net.blocks.0.0.conv_dw.weight", "blocks.0.0.conv_dw.weight"),
    ),
}


def test_default_sources_are_the_papers():
    assert DEFAULT_SOURCES == {
        "cnn6": CNN6_SOURCE,
        "resnet18": "timm/resnet18.tv_in1k",
        "efficientnet_b0": "timm/efficientnet_b0.ra_in1k",
        "ast": "MIT/ast-finetuned-audioset-10-10-0.4593",
        "audio_clap": "laion/clap-htsat-unfused",
        "bts": "laion/clap-htsat-unfused",
    }
    assert "zenodo.org/record/3960586/" in CNN6_SOURCE
    assert (RESNET18_SOURCE, EFFICIENTNET_B0_SOURCE) == (
        DEFAULT_SOURCES["resnet18"],
        DEFAULT_SOURCES["efficientnet_b0"],
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_hub_backbones_load_their_default_source_offline(hub, caplog, name):
    write, options, (ours, theirs) = CASES[name]
    saved = {}
    commit = hub.add(
        DEFAULT_SOURCES[name], lambda folder: saved.update(write(folder))
    )
    with caplog.at_level(logging.WARNING):
        model = build_backbone(name, options, use_pretrained=True)
    assert torch.equal(model.state_dict()[ours], saved[theirs])
    weights = hub.cache.glob(f"models--*/snapshots/{commit}/model.safetensors")
    (weights,) = list(weights)
    assert model.weights_source == {
        "source": DEFAULT_SOURCES[name],
        "kind": "hub",
        "revision": commit,
        "sha256": sha256(weights),
        "file": "model.safetensors",
    }
    assert "stand-in" not in caplog.text
    if name == "bts":  # the snapshot's tokenizer, not the stand-in
        with caplog.at_level(logging.WARNING), torch.no_grad():
            model(torch.zeros(1, 4800), prompts=["a prompt"])
        assert "stand-in" not in caplog.text
        _, tokenizer = tiny_clap()
        assert model.tokenizer.get_vocab() == tokenizer.get_vocab()
        assert len(model.tokenizer) != len(build_prompt_tokenizer())


def test_cnn6_default_url_pins_the_zenodo_md5_and_ignores_same_names(hub):
    assert CNN6_SOURCE.endswith("#md5=e25e26b84585b14c7754c91e48efc9be")
    # A file of the same name where torch.hub would keep it is no Zenodo
    # download: offline, the default source is refused.
    hub.checkpoints.mkdir(parents=True)
    panns_checkpoint(hub.checkpoints / "Cnn6_mAP=0.343.pth", seed=3)
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone("cnn6", {"channels": TINY_CNN6}, use_pretrained=True)
    assert "HF_HUB_OFFLINE=1" in str(error.value)
    assert "zenodo.org/record/3960586" in str(error.value)
    # Nor is one in the URL's own cache folder, even with a record that
    # matches it, when it is not the file whose md5 Zenodo lists.
    dest = url_cache_path(CNN6_SOURCE)
    dest.parent.mkdir(parents=True)
    panns_checkpoint(dest, seed=3)
    forged = {"url": CNN6_SOURCE.split("#")[0], "sha256": sha256(dest)}
    (dest.parent / (dest.name + ".json")).write_text(json.dumps(forged))
    with pytest.raises(WeightsUnavailableError, match="md5") as error:
        build_backbone("cnn6", {"channels": TINY_CNN6}, use_pretrained=True)
    assert f"delete {dest.parent}" in str(error.value)


def test_file_url_downloads_once_into_torch_hub_and_checks_sha256(
    hub, tmp_path
):
    source = tmp_path / "zenodo" / "Cnn6_mAP=0.343.pth"
    source.parent.mkdir()
    state = panns_checkpoint(source, seed=4)
    digest = sha256(source)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    # torch.hub's name-<sha256 prefix>.ext, right and wrong.
    good = tmp_path / "zenodo" / f"cnn6-{digest[:10]}.pth"
    bad = tmp_path / "zenodo" / "cnn6-0123456789.pth"
    shutil.copy(source, good)
    shutil.copy(source, bad)
    url = f"file://{tmp_path}/zenodo/Cnn6_mAP%3D0.343.pth?download=1"
    model = build_backbone(
        "cnn6", {"channels": TINY_CNN6}, f"{url}#md5={md5}", use_pretrained=True
    )
    key = "fc1.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    cached = url_cache_path(url)
    assert cached.parent.parent == hub.checkpoints / "by_url"
    assert cached.name == "Cnn6_mAP=0.343.pth" and sha256(cached) == digest
    assert model.weights_source["sha256"] == digest
    assert model.weights_source["kind"] == "url"
    record = cached.with_name(cached.name + ".json")
    assert json.loads(record.read_text()) == {
        "url": f"file://{tmp_path}/zenodo/Cnn6_mAP%3D0.343.pth",
        "sha256": digest,
        "md5": md5,
        "bytes": cached.stat().st_size,
    }
    # Reused from the cache: the source may be gone.
    source.unlink()
    path, record = resolve_weights(f"{url}#sha256={digest}", "cnn6")
    assert path == str(cached) and record["sha256"] == digest
    # A cached file that does not match the URL's hash is refused.
    for pin in (f"sha256={'0' * 64}", f"md5={'0' * 32}"):
        with pytest.raises(WeightsUnavailableError, match="delete"):
            resolve_weights(f"{url}#{pin}", "cnn6")
    # A hash in the file name is checked while downloading; nothing of a
    # download that does not match is kept.
    _, record = resolve_weights(f"file://{good}", "cnn6")
    assert record["sha256"] == digest
    with pytest.raises(WeightsUnavailableError, match="expected 0123"):
        resolve_weights(f"file://{bad}", "cnn6")
    assert not list(url_cache_path(f"file://{bad}").parent.iterdir())
    # A cached file changed since its download is refused, not reused.
    with open(cached, "ab") as file:
        file.write(b"tampered")
    with pytest.raises(WeightsUnavailableError, match="changed since"):
        resolve_weights(url, "cnn6")


def test_url_cache_is_keyed_by_url_not_file_name(hub, tmp_path):
    paths, states = [], []
    for seed, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        states.append(panns_checkpoint(tmp_path / folder / "w.pth", seed))
        paths.append(resolve_weights(f"file://{tmp_path}/{folder}/w.pth")[0])
    assert paths[0] != paths[1]
    key = "conv_block1.conv1.weight"
    for path, state in zip(paths, states, strict=True):
        cached = torch.load(path, weights_only=True)["model"]
        assert torch.equal(cached[key], state[key])


def test_unreachable_url_names_the_file_to_fetch(hub, tmp_path):
    url = f"file://{tmp_path}/nowhere/Cnn6_mAP%3D0.343.pth"
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone("cnn6", pretrained_path=url, use_pretrained=True)
    message = str(error.value)
    assert "backbone 'cnn6'" in message and url in message
    assert "curl -L -o 'Cnn6_mAP=0.343.pth'" in message
    assert "--use_pretrained False" in message
    assert error.value.backbone == "cnn6" and error.value.source == url


def test_hub_revisions_resolve_in_the_cache(hub):
    commit = hub.add("org/tiny-resnet", timm_writer("resnet18"))
    for source in ("org/tiny-resnet@main", f"org/tiny-resnet@{commit}"):
        path, record = resolve_weights(source, "resnet18")
        assert path.endswith(commit) and record["revision"] == commit
        assert record["source"] == source
    with pytest.raises(WeightsUnavailableError, match="--revision v9"):
        resolve_weights("org/tiny-resnet@v9", "resnet18")


def test_hub_id_absent_from_the_cache_names_both_ways_out(hub):
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone(
            "audio_clap",
            pretrained_path="someorg/absent-model",
            use_pretrained=True,
        )
    message = str(error.value)
    assert "backbone 'audio_clap'" in message
    assert "hf download someorg/absent-model" in message
    assert "set pretrained_path" in message
    assert "--use_pretrained False" in message
    # The default source too; nothing falls back to random weights.
    with pytest.raises(WeightsUnavailableError, match=CLAP_SOURCE):
        build_backbone("bts", use_pretrained=True)
    with pytest.raises(WeightsUnavailableError, match=AST_SOURCE):
        build_backbone("ast", use_pretrained=True)


def test_random_weights_build_offline_without_a_source(
    hub, caplog, monkeypatch
):
    monkeypatch.setattr(clap, "_warned_stand_in", False)  # once a process
    with caplog.at_level(logging.WARNING):
        model = build_backbone(
            "bts", {"clap_config": TINY_CLAP}, pretrained_path="x/absent"
        )
    assert model.weights_source is None
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(torch.zeros(1, 4800), prompts=["a prompt"])
    assert "stand-in offline byte-level BPE" in caplog.text
    assert len(model.tokenizer) == len(build_prompt_tokenizer())
    cnn6 = build_backbone("cnn6", {"channels": TINY_CNN6})
    assert cnn6.weights_source is None


def test_local_paths_are_used_as_they_are(hub, tmp_path):
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    state = panns_checkpoint(path, seed=5)
    for source in (path, tmp_path):  # the file, or the folder holding it
        model = build_backbone(
            "cnn6", {"channels": TINY_CNN6}, source, use_pretrained=True
        )
        key = "conv_block4.bn1.running_var"
        assert torch.equal(model.state_dict()[key], state[key])
        assert model.weights_source == {
            "source": str(source),
            "kind": "path",
            "revision": None,
            "sha256": sha256(path),
            "file": path.name,
        }
    # A missing file shaped like org/name is a file, not a hub ID.
    for missing in ("weights/Cnn6.pth", str(tmp_path / "absent.pth")):
        with pytest.raises(WeightsUnavailableError, match="no such local"):
            build_backbone("cnn6", pretrained_path=missing, use_pretrained=True)


def test_the_pretrainer_collects_then_loads_like_an_eager_build(hub, tmp_path):
    source = tmp_path / "Cnn6_mAP=0.343.pth"
    panns_checkpoint(source, seed=4)
    url = f"file://{source}"
    options = {"channels": TINY_CNN6}
    model = CNN6(**options)
    collect_in = tmp_path / "save" / "pretrained"
    pretrainer = Pretrainer(
        collect_in=collect_in,
        loadables={"model": model},
        paths={"model": url},
        conditions={"model": True},
    )
    assert model.pending_weights == url  # declared, nothing fetched yet
    assert model.weights_source is None and not collect_in.exists()
    pretrainer.collect_files()
    pretrainer.load_collected()
    eager = build_backbone("cnn6", options, url, use_pretrained=True)
    pretrained = [k for k in eager.state_dict() if not k.startswith("head")]
    assert len(pretrained) > 10
    for key in pretrained:  # the new 4-class head is random in both
        assert torch.equal(model.state_dict()[key], eager.state_dict()[key])
    assert model.weights_source == eager.weights_source
    assert model.weights_source["source"] == url
    assert model.pending_weights is None
    # Collected as SpeechBrain does: <key>.ckpt links to the fetched file,
    # and a process that did not collect (DDP: not the main one) loads it
    link = collect_in / "model.ckpt"
    assert link.is_symlink()
    assert link.resolve() == url_cache_path(url).resolve()
    other = CNN6(**options)
    Pretrainer(
        collect_in=collect_in,
        loadables={"model": other},
        paths={"model": url},
    ).load_collected()
    for key in pretrained:
        assert torch.equal(other.state_dict()[key], eager.state_dict()[key])
    assert other.weights_source == eager.weights_source


def test_a_false_condition_keeps_the_random_weights(tmp_path):
    model = CNN6(channels=TINY_CNN6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pretrainer = Pretrainer(
        collect_in=tmp_path / "pretrained",
        loadables={"model": model},
        paths={"model": None},
        conditions={"model": False},
    )
    assert pretrainer.collect_files() == {}
    assert not (tmp_path / "pretrained").exists()
    pretrainer.load_collected()
    assert getattr(model, "pending_weights", None) is None
    assert model.weights_source is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_a_null_path_is_the_papers_source():
    model = CNN6(channels=TINY_CNN6)
    Pretrainer(loadables={"model": model}, paths={"model": None})
    assert model.pending_weights == CNN6_SOURCE == DEFAULT_SOURCES["cnn6"]


def test_brain_refuses_declared_weights_never_loaded(hub):
    from speechbrain_rsc.brains import TeacherBrain

    model = CNN6(channels=TINY_CNN6)
    Pretrainer(loadables={"model": model}, paths={"model": None})
    with pytest.raises(RuntimeError, match="never loaded.*load_collected"):
        TeacherBrain(modules={"model": model}, run_opts={"device": "cpu"})


def test_teacher_without_the_weights_stops_with_the_way_out(hub, tmp_path):
    """``train_teacher.py hparams/bts.yaml`` offline without the CLAP
    weights: the error, no random-weight run; with --use_pretrained
    False, a run."""
    import shlex

    from test_recipe_consistency import registry_rows

    row = next(
        r for r in registry_rows() if r["Hparam_file"].endswith("/bts.yaml")
    )
    flags = shlex.split(row["test_debug_flags"])
    assert "--use_pretrained=False" in flags
    flags.remove("--use_pretrained=False")
    out = tmp_path / "run"
    with pytest.raises(WeightsUnavailableError) as error:
        run_recipe(
            "train_teacher.py",
            RECIPE / "hparams/bts.yaml",
            *flags,
            f"--output_folder={out}",
            "--seed=7",
            "--noprogressbar",
        )
    message = str(error.value)
    assert CLAP_SOURCE in message and "--use_pretrained False" in message
    assert not (out / "bank.safetensors").exists()
    assert not list(out.glob("save/CKPT*"))


def test_a_file_name_with_equals_mangled_by_the_command_line_is_named(
    tmp_path,
):
    """SpeechBrain's parser turns `--pretrained_path=.../Cnn6_mAP=0.343.pth`
    into `.../Cnn6_mAP 0.343.pth`: the error names the real file and why."""
    real = tmp_path / "Cnn6_mAP=0.343.pth"
    panns_checkpoint(real)
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_weights(str(tmp_path / "Cnn6_mAP 0.343.pth"), "cnn6")
    message = str(error.value)
    assert f"but there is {real}" in message
    assert "turns every '=' of a value into a space" in message
    assert "rename the file without '='" in message
