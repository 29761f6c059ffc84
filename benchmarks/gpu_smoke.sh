#!/usr/bin/env bash
# GPU smoke run on a lent machine (no registry there): install the wheels
# carried in .gpu/wheels (speechbrain, hyperpyyaml, ruamel.yaml, soundfile,
# cffi, pycparser; the machine's image has torch 2.11, transformers, timm),
# then one epoch of CNN6 and of BTS on a full-scale synthetic ICBHI set.
#
# Prepare here:  pip download --no-deps --only-binary=:all: \
#   --python-version 3.12 --platform manylinux2014_x86_64 -d .gpu/wheels \
#   speechbrain==1.1.2 hyperpyyaml ruamel.yaml ruamel.yaml.clib soundfile \
#   cffi pycparser
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps .gpu/wheels/*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 benchmarks/gpu_smoke.py "$@"
