#!/usr/bin/env bash
# The zoo-bench suite on one CUDA GPU, in under 8 minutes: writes benchmarks/suite_cuda.json and .md
# (extra options name their own files, e.g. --rounds 9: suite_cuda_rounds-9.*; zoo.bench.suite_stem).
#
#   bash benchmarks/gpu.sh            # from anywhere; extra arguments go to zoo-bench (e.g. --rounds 9)
#
# Installs nothing beyond `pip install -e .[bench]` (transformers, x-transformers; litgpt is used only if
# importable, see zoo/bench/peers.py). Sections run in the order gpt (training, Lightning overhead,
# GPT-2-124M bf16 compiled MFU), attention, image, roofline (GPT-2-124M decoding against the measured memory
# bandwidth, fp32 and bf16, transformers' static cache + compile beside; int8/int4 are CPU kernels and are
# reported as absent; benchmarks/decode_roofline.md is the CPU run), decode (last: it compiles four decode
# loops); the files are rewritten after each section, so a run stopped by the time limit still leaves every
# finished one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 ZOO_PLAIN_PROGRESS=1
start=$(date +%s)
if ! pip install -q -e ".[bench]"; then
  echo "gpu.sh: pip install -e .[bench] failed (offline?); going on with what is installed" >&2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device visible to torch')"
left=$(( 460 - ($(date +%s) - start) ))  # 8 minutes minus a margin, minus the install
timeout --signal=INT --kill-after=15 "$left" \
  python -m zoo.bench --device cuda --only gpt,attention,image,roofline,decode --out benchmarks "$@" \
  || echo "gpu.sh: zoo-bench stopped (exit $?); benchmarks/suite_cuda*.* hold the sections that finished" >&2
echo "gpu.sh: $(( $(date +%s) - start )) s in all"
