"""Install speechbrain-rsc: ``pip install -e ".[dev]"``."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="speechbrain-rsc",
    version="0.1.0",
    description=(
        "Respiratory sound classification on ICBHI 2017 with SpeechBrain: "
        "teacher ensembles distilled into one student with soft labels."
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["speechbrain_rsc", "speechbrain_rsc.*"]),
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "torchvision==0.26.0",
        "speechbrain>=1.1,<1.2",
        "hyperpyyaml>=1.2",
        "transformers>=5.17",
        "timm>=1.0.29",
        "pandas>=2.0",
        "soundfile>=0.12",
        "safetensors>=0.4",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "ruff>=0.6",
            "yamllint>=1.35",
            "codespell>=2.3",
        ],
        "laion": ["laion-clap>=1.1.6"],
    },
    entry_points={
        "console_scripts": [
            "rsc-synthetic=speechbrain_rsc.data.synthetic:main",
            "rsc-classify=speechbrain_rsc.inference:main",
        ],
    },
)
