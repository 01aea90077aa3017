#!/usr/bin/env bash
# The GPU check of issues 11 and 21: one script, under 8 minutes on one H100/H200 (16 cores)
# whose python3 has torch (CUDA) and torchvision but no onnxruntime, ModelOpt, TensorRT or
# pip. Runs from the repository with PYTHONPATH=.: the CUDA tests; the readout kernel
# (benchmarks/readout_kernel.py --quick); the engine's profile in steady state
# (benchmarks/gpu_profile.py: per-stage CUDA-event times of one captured step at 1 and 16
# streams, host time per frame by stage, the 30 costliest kernels; written to
# benchmarks/results/ and OUTDIR/profile); then stmae-bench --streams at 480x864 (synthetic
# 16:9 clips at 480p) with the published architecture (the contract's rule weights) and with
# the shipped small model: eager vs CUDA graphs, fp32/bf16, each engine configuration as a
# "network" row and "end to end" rows (serial and pipelined loops, CPU decoding) with the
# host overhead; then torch.compile + graphs for bf16. TF32 stays off (fp32 is IEEE fp32).
# Every step has a timeout (sum: 445 s, each with a 5 s kill grace: 480 s); each bench writes
# its JSON after every measured point, so a step cut short still leaves its rows. Prints
# one final table; everything goes into OUTDIR.
# Usage: benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
if [ $# -ne 1 ]; then
  echo "usage: benchmarks/gpu_check.sh OUTDIR" >&2
  exit 2
fi
out=$1
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=.
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: needs a CUDA GPU and $PY with torch built for CUDA; none found here" >&2
  exit 2
fi
mkdir -p "$out"
: > "$out/steps.jsonl"
start=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run with a timeout, log to OUTDIR/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout --kill-after=5 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local now=$(( $(date +%s) - start ))
  echo "   $name: exit $rc, ${now} s since start"
  printf '{"step": "%s", "exit": %d, "timeout_s": %d, "elapsed_s": %d}\n' "$name" "$rc" "$limit" "$now" >> "$out/steps.jsonl"
  tail -n 4 "$out/$name.log" | sed 's/^/   | /'
}

step environment 15 "$PY" -c "
import json, torch, torchvision
p = torch.cuda.get_device_properties(0)
print(json.dumps({'gpu': p.name, 'memory_gib': round(p.total_memory / 2**30, 1), 'torch': torch.__version__,
                  'cuda': torch.version.cuda, 'torchvision': torchvision.__version__}))"
if "$PY" -c "import pytest" 2>/dev/null; then
  step cuda_tests 75 "$PY" -m pytest -q -p no:cacheprovider tests/runtime/engine/test_engine.py \
    tests/runtime/engine/test_session.py tests/runtime/engine/test_decode.py tests/benchmarks/test_bench_streams.py \
    tests/runtime/test_torch_path_imports.py -k "cuda or torch_path"
else
  echo "== cuda_tests: pytest is not installed for $PY; the CUDA tests did not run" | tee "$out/cuda_tests.log"
  printf '{"step": "cuda_tests", "exit": null, "note": "pytest missing"}\n' >> "$out/steps.jsonl"
fi
step readout_kernel 45 "$PY" benchmarks/readout_kernel.py --quick --out "$out/readout_kernel.json"
step gpu_profile 90 "$PY" benchmarks/gpu_profile.py --streams 1 16 --results-dir "$out/profile"
cp "$out"/profile/gpu_profile_* benchmarks/results/ 2>/dev/null
# Timeouts from the first run (H200, 2026-11-27): environment 12 s, CUDA tests 68 s; the
# published bench did 5 (streams, objects) points with three precisions in 160 s, the small
# one 2 in 70 s, the compiled one 84 s. The engine rows are now three per configuration
# (network, serial and pipelined end to end), so the matrix is: published streams 1/4/16
# with 1 object in fp32 and bf16, small streams 1/4, compiled bf16 streams 1/16.
common=(--device cuda --sizes 480 --frames 14 --warmup 4 --run torch:fp32 --run torch:bf16 --cuda-graphs on
  --decoder cpu --pipeline both)
step bench_published 100 "$PY" -m runtime.bench.cli "${common[@]}" --streams 1 4 16 --objects 1 \
  --out "$out/published"
step bench_small 45 "$PY" -m runtime.bench.cli "${common[@]}" --streams 1 4 --objects 1 \
  --checkpoint weights/stmae_small_davis240_v3.pth --out "$out/small"
step bench_published_compiled 75 "$PY" -m runtime.bench.cli --device cuda --sizes 480 --frames 14 --warmup 4 \
  --streams 1 16 --run torch:bf16 --objects 1 --cuda-graphs on --compile on --sequential off \
  --decoder cpu --pipeline both --out "$out/published_compiled"
"$PY" benchmarks/gpu_table.py "$out"
