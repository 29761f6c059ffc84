#!/usr/bin/env bash
# Every GPU figure of the README in one run on a lent GPU (under the
# device's 10 minutes a command), each step under its own time limit so
# that one slow step still leaves the others' tables: the smoke epochs
# (gpu_smoke.sh installs the carried wheels first), then Brain vs plain
# loop, distillation vs hard epoch, and inference.
# .gpu/wheels is ignored by git: prepare it as gpu_smoke.sh says and send
# it along with the tree to the GPU machine.
# Usage: bash benchmarks/gpu_benchmarks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
step() {
    local limit="$1"
    shift
    echo "## $*"
    timeout "$limit" "$@" || echo "(step ended with status $?)"
}
step 240 bash benchmarks/gpu_smoke.sh
step 120 python3 benchmarks/bench_train_throughput.py --device cuda \
    --recordings 300 --batch_size 64 --num_workers 8
step 90 python3 benchmarks/bench_distill_epoch.py --device cuda \
    --recordings 120 --batch_size 64 --num_workers 4
step 120 python3 benchmarks/bench_inference.py --device cuda
