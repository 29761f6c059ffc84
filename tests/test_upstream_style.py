"""The recipe passes SpeechBrain's own upstream checks as upstream runs
them (issue 21, item 2): its ruff settings (a copy of the ``[tool.ruff]``
tables of SpeechBrain's pyproject.toml, where ``speechbrain`` is
first-party and speechbrain-rsc an installed package), and its docstring
rule (every public function and class, nested ones included, has a
docstring; ``tests/utils/check_docstrings.py`` upstream).
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RECIPE

SCRIPTS = sorted(RECIPE.glob("*.py"))
RUFF = Path(sys.executable).with_name("ruff")

# SpeechBrain's ruff settings (pyproject.toml, 2026-12; comments dropped).
UPSTREAM_RUFF = """
target-version = "py38"
line-length = 80
exclude = [
    ".eggs",
    ".git",
    ".mypy_cache",
    ".tox",
    ".venv",
    "tests/tmp",
]

[lint]
select = [
    "E",
    "W",
    "F",
    "I",
    "B",
    "C4", # flake8-comprehensions
    "UP", # pyupgrade
]
ignore = [
    "B007",
    "B904",
    "B028",
    "C400",
    "C401",
    "C403",
    "C404",
    "C405",
    "C408",
    "C409",
    "C414",
    "C416",
    "C417",
    "C419",
    "E203",
    "E266",
    "E501",
    "E721",
    "F601",
    "UP008",
    "UP028",
    "UP030",
    "UP031",
    "B008",
    "B006",
    "B011",
    "B019",
    "B023",
    "B026",
]

[lint.isort]
# Import sorting configuration (black-compatible)
combine-as-imports = true
force-wrap-aliases = true
known-first-party = ["speechbrain"]
known-third-party = [
    "torch",
    "torchaudio",
    "numpy",
    "scipy",
    "hyperpyyaml",
    "joblib",
    "packaging",
    "requests",
    "sentencepiece",
    "tqdm",
    "huggingface_hub",
]
split-on-trailing-comma = false

[lint.per-file-ignores]
"__init__.py" = ["F401"]

[format]
quote-style = "double"
indent-style = "space"
skip-magic-trailing-comma = false
line-ending = "auto"
docstring-code-format = true
"""


@pytest.fixture(scope="module")
def upstream_copy(tmp_path_factory):
    """The scripts where an upstream checkout would hold them."""
    root = tmp_path_factory.mktemp("speechbrain")
    (root / "ruff.toml").write_text(UPSTREAM_RUFF)
    recipe = root / "recipes" / "ICBHI"
    recipe.mkdir(parents=True)
    for script in SCRIPTS:
        shutil.copy(script, recipe)
    return root


@pytest.mark.skipif(not RUFF.exists(), reason="ruff is not installed")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_scripts_pass_speechbrains_ruff_settings(upstream_copy, command):
    done = subprocess.run(
        [str(RUFF), *command, "recipes"],
        cwd=upstream_copy,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_public_function_has_a_docstring(script):
    tree = ast.parse(script.read_text())
    assert ast.get_docstring(tree), f"{script.name}: no module docstring"
    missing = [
        f"{script.name}:{node.lineno} {node.name}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        and not node.name.startswith("_")
        and ast.get_docstring(node) is None
    ]
    assert not missing, "no docstring: " + ", ".join(missing)
