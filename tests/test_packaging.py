"""The package declares what it imports, as ranges that accept the pinned
torch set CI installs; the installed torch and torchaudio match; LICENSE
and CITATION.cff are what setup.py and the paper say.
"""

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
import torch
import torchaudio
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / ".ci" / "constraints.txt"
# Where the package's code is: the library and the recipe scripts on it.
SOURCES = [REPO / "speechbrain_rsc", REPO / "recipes"]


def setup_literal(name):
    """A top-level list or dict assigned in setup.py, without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no {name}")


def requirements(names):
    return {canonicalize_name(r.name): r for r in map(Requirement, names)}


def install_requires():
    return requirements(setup_literal("INSTALL_REQUIRES"))


def pins():
    lines = CONSTRAINTS.read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line and line[0] != "#"]
    return {canonicalize_name(r.name): r for r in reqs}


def third_party_imports():
    """Top-level names imported (at any depth) by the package's code, less
    the standard library and the repository's own modules.
    """
    local = {"speechbrain_rsc"}
    names = {}
    for root in SOURCES:
        for path in root.rglob("*.py"):
            local.add(path.stem)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found = [node.module]
                else:
                    continue
                for name in found:
                    top = name.split(".")[0]
                    names.setdefault(top, path.relative_to(REPO))
    return {
        name: where
        for name, where in names.items()
        if name not in local and name not in sys.stdlib_module_names
    }


def test_constraints_pin_the_matched_torch_set():
    assert set(pins()) == {"torch", "torchaudio", "torchvision"}
    for req in pins().values():
        assert str(req.specifier).startswith("=="), req


@pytest.mark.parametrize("name", ["torch", "torchaudio"])
def test_setup_ranges_accept_the_pins(name):
    declared = install_requires()[name]
    pinned = Version(str(pins()[name].specifier)[2:])
    assert pinned in declared.specifier, (declared, pinned)
    assert not str(declared.specifier).startswith("=="), (
        f"setup.py pins {declared}: give a range, pin in {CONSTRAINTS.name}"
    )


def test_declared_ranges_exclude_the_torchaudio_that_crashes():
    # torchaudio 2.11.1 declares torch>=2.11, but its extension loads with
    # neither torch 2.11.0 nor 2.12.1: a plain pip install picked it.
    assert Version("2.11.1") not in install_requires()["torchaudio"].specifier
    assert Version("2.11.0") in install_requires()["torchaudio"].specifier
    # no torchaudio exists for torch 2.12 or newer
    assert Version("2.12.0") not in install_requires()["torch"].specifier


@pytest.mark.parametrize(
    "pair", [("2.11.0", "2.11.1"), ("2.10.0", "2.11.0"), ("2.12.1", "2.11.1")]
)
def test_a_mismatched_torch_pair_is_refused_by_name(pair):
    from speechbrain_rsc import check_torch_pair

    with pytest.raises(ImportError) as error:
        check_torch_pair(*pair)
    message = str(error.value)
    assert f"torch {pair[0]} with torchaudio {pair[1]}" in message
    assert "torch==2.11.0 torchaudio==2.11.0" in message


def test_ci_proves_a_plain_install_of_the_ranges():
    run = (REPO / ".ci" / "run").read_text()
    plain = re.search(r"venv-plain/bin/python -m pip install --quiet \.\n", run)
    assert plain, "CI must install the ranges without constraints"
    after = run[plain.end() :]
    assert "import torch, speechbrain_rsc.models" in after
    assert ".venv-plain/bin/rsc-classify --help" in after


def test_torchvision_pin_is_the_one_made_for_the_torch_pin():
    # each torchvision wheel requires exactly one torch version
    torch_pin = str(pins()["torch"].specifier)[2:]
    installed = version("torchvision")
    if installed != str(pins()["torchvision"].specifier)[2:]:
        pytest.skip(f"torchvision {installed} installed, not the pinned one")
    from importlib.metadata import requires

    wanted = [r for r in map(Requirement, requires("torchvision") or [])]
    torch_req = next(r for r in wanted if r.name == "torch")
    assert Version(torch_pin) in torch_req.specifier


def test_installed_torch_and_torchaudio_are_one_series():
    torch_version = Version(torch.__version__)
    audio_version = Version(torchaudio.__version__)
    assert torch_version.release[:2] == audio_version.release[:2], (
        f"torch {torch_version} with torchaudio {audio_version}: install a "
        f"matched pair, e.g. pip install -c {CONSTRAINTS.relative_to(REPO)}"
    )
    for name, installed in (
        ("torch", torch_version),
        ("torchaudio", audio_version),
    ):
        assert installed in install_requires()[name].specifier


def test_every_import_is_declared_and_every_requirement_imported():
    distributions = packages_distributions()
    declared = set(install_requires())
    extras = setup_literal("EXTRAS_REQUIRE")
    # extras of modules imported only where used (submitit: --executor slurm)
    optional = {
        canonicalize_name(Requirement(r).name)
        for extra in ("laion", "cluster")
        for r in extras[extra]
    }
    used, undeclared = set(), []
    for name, where in sorted(third_party_imports().items()):
        dists = {canonicalize_name(d) for d in distributions.get(name, [])}
        if not dists:
            undeclared.append(f"{name} ({where}): not installed")
        elif not dists & (declared | optional):
            undeclared.append(f"{name} ({where}) from {sorted(dists)}")
        used |= dists
    assert not undeclared, "imported but not in install_requires: " + ", ".join(
        undeclared
    )
    unused = declared - used
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_ci_installs_with_the_constraints():
    run = (REPO / ".ci" / "run").read_text()
    assert re.search(
        r"pip install .*-c \.ci/constraints\.txt -e \"\.\[dev\]\"", run
    )


def test_license_file_is_the_apache_license():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license="Apache-2.0"' in (REPO / "setup.py").read_text()


def test_citation_cites_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    assert " ".join(paper["title"].split()) == (
        "Improving Respiratory Sound Classification with Architecture-"
        "Agnostic Knowledge Distillation from Ensembles"
    )
    authors = [a["family-names"] for a in paper["authors"]]
    assert authors == ["Toikkanen", "Kim"]


def test_citation_has_the_papers_venue_year_and_arxiv_id():
    paper = yaml.safe_load((REPO / "CITATION.cff").read_text())[
        "preferred-citation"
    ]
    assert paper["type"] == "conference-paper"
    assert paper["collection-title"] == "Interspeech 2025"
    assert paper["year"] == 2025
    assert "arXiv:2505.22027" in [i["value"] for i in paper["identifiers"]]


def test_package_metadata_is_complete():
    done = subprocess.run(
        [sys.executable, "setup.py", "--url", "--author", "--classifiers"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "https://arxiv.org/abs/2505.22027"
    assert lines[1] == "speechbrain-rsc contributors"
    assert "License :: OSI Approved :: Apache Software License" in lines
    source = (REPO / "setup.py").read_text()
    assert 'python_requires=">=3.10"' in source
    assert 'long_description_content_type="text/markdown"' in source


def test_recipe_extra_requirements_are_what_speechbrain_lacks():
    from importlib.metadata import requires

    path = REPO / "recipes" / "ICBHI" / "extra_requirements.txt"
    lines = path.read_text().splitlines()
    extra = requirements([x for x in lines if x and not x.startswith("#")])
    speechbrain = {
        canonicalize_name(r.name)
        for r in map(Requirement, requires("speechbrain") or [])
        if r.marker is None
    }
    ours = {
        name: req
        for name, req in install_requires().items()
        if name not in speechbrain and name != "speechbrain"
    }
    assert set(extra) == set(ours) | {"speechbrain-rsc"}
    for name, req in ours.items():
        assert str(extra[name].specifier) == str(req.specifier), name
