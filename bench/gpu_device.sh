#!/usr/bin/env bash
# The command the GPU proof ran on the lent device machine (no network there): install the project as README
# says, offline, from wheels carried in .whl/ (pycocotools and the nbdev 2 test stack, which that machine's image
# lacks; make them with `pip download --python-version 3.12 ...`, see bench/gpu_proof.py), then run the proof.
#   OUT=gpu_out bash bench/gpu_device.sh
set -o pipefail
OUT=${OUT:-gpu_proof_out}; mkdir -p "$OUT"
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.whl" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -V; } 2>&1 | tee "$OUT/machine.txt"
python3 -m pip install -q --no-build-isolation -e . 2>&1 | tail -3 || exit 3        # README: pip install -e .
python3 -m pip install -q --no-deps .whl/*.whl 2>&1 | tail -3 || exit 3            # the test tools of ".[dev]"
python3 -c "import annotated_detr, pycocotools, nbdev, torch, torchvision; print('annotated_detr', annotated_detr.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>&1 | tee -a "$OUT/machine.txt"
python3 bench/gpu_proof.py --out "$OUT" "$@" 2>&1 | tee "$OUT/proof.log"
rm -f "$OUT/make_data.log" "$OUT/proof.log"   # the device returns at most 8 files; these two are in summary.json and the output
