#!/usr/bin/env bash
# The device command of bench/gpu.py alone (training step bf16 ours vs transformers at batch 8, detect at batch 1
# eager/compiled/transformers, peak memory, host-device syncs of our training step), within 8 minutes on an H100/H200.
# The device has no network: pycocotools (imported by the package, absent from that machine's image) comes from
# .whl/ (`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 pycocotools -d .whl/`).
#   OUT=gpu_out bash bench/gpu_fast_device.sh         # then append gpu_out/gpu.jsonl to bench/results/gpu.jsonl
set -o pipefail
OUT=${OUT:-gpu_fast_out}; mkdir -p "$OUT"
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 -V; } 2>&1 | tee "$OUT/machine.txt"
python3 -c "import pycocotools" 2>/dev/null || python3 -m pip install -q --no-deps .whl/pycocotools-*.whl 2>&1 | tail -2
timeout 470 python3 bench/gpu.py --with-hf --jsonl "$OUT/gpu.jsonl" "$@" 2>&1 | tee "$OUT/gpu.log"
