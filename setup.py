"""Install speechbrain-rsc: ``pip install -e ".[dev]"``.

The requirements are ranges, as a library's should be, so that
speechbrain-rsc installs beside other packages; CI installs one tested set
on top with ``pip install -c .ci/constraints.txt -e ".[dev]"``.

- torch and torchaudio must be one release (torchaudio's compiled
  extension is built against one torch release, and ``import speechbrain``
  imports torchaudio; ``speechbrain_rsc`` refuses a mismatched pair on
  import, naming both). torchaudio 2.11.1 is excluded: it declares only
  ``torch>=2.11`` but its extension loads with neither torch 2.11.0 nor
  2.12.1, and pip's resolver picks it for a plain ``pip install``; 2.11.0
  declares no torch at all, so the torch cap makes pip pair it with torch
  2.11.0 (CI installs the ranges without constraints to prove it). Their
  floor, 2.7.1, is SpeechBrain 1.1.2's own (transformers 5 asks for torch
  >= 2.6); the cap excludes torch 2.12 and newer, for which no torchaudio
  release exists (torchaudio's newest is 2.11.1). torchvision is not
  imported here: timm brings it, and pip matches it to torch (each
  torchvision pins one torch).
- Every other requirement is a package that ``speechbrain_rsc`` imports
  (``tests/test_packaging.py`` checks both ways).
- Extras: ``cluster`` (submitit, imported only by ``run_paper.py
  --executor slurm``), ``laion`` (laion_clap, imported only by
  ``tests/test_laion_reference.py``, the reference of our LAION-CLAP
  conversion; it pins numpy < 2 and pulls in wandb, so CI installs it in
  a venv of its own beside the matched torch set) and ``dev`` (the checks;
  it has submitit too, so that CI tests the cluster path).
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.7.1,<2.12",
    "torchaudio>=2.7.1,<2.11.1",
    "speechbrain>=1.1,<1.2",
    "hyperpyyaml>=1.2",
    "transformers>=5.17",
    "tokenizers>=0.21",
    "timm>=1.0.29",
    "numpy>=1.24",
    "pandas>=2.0",
    "PyYAML>=6.0",
    "soundfile>=0.12",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "matplotlib>=3.7",
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8",
        "ruff>=0.6",
        "yamllint>=1.35",
        "codespell>=2.3",
        "packaging>=23",
        "submitit>=1.5",
    ],
    "cluster": ["submitit>=1.5"],
    "laion": ["laion-clap>=1.1.6"],
}

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="speechbrain-rsc",
    version="0.1.0",
    description=(
        "Respiratory sound classification on ICBHI 2017 with "
        "SpeechBrain: teacher ensembles distilled into one student "
        "with soft labels."
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    author="speechbrain-rsc contributors",
    # No public repository of its own yet: the paper it implements.
    url="https://arxiv.org/abs/2505.22027",
    project_urls={
        "Paper": "https://arxiv.org/abs/2505.22027",
        "Reference code": "https://github.com/RSC-Toolkit/rsc-ensemble-kd",
        "SpeechBrain": "https://speechbrain.github.io",
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    keywords="respiratory sound, ICBHI, knowledge distillation, SpeechBrain",
    python_requires=">=3.10",
    packages=find_packages(include=["speechbrain_rsc", "speechbrain_rsc.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "rsc-synthetic=speechbrain_rsc.data.synthetic:main",
            "rsc-classify=speechbrain_rsc.inference:cli",
        ],
    },
)
