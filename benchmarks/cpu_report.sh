#!/usr/bin/env bash
# The CPU report of benchmarks/README.md: the published architecture (the contract's
# deterministic weights) at 480x854 on real DAVIS frames, eager baseline vs ONNX Runtime
# fp32 and INT8, one object, 30 frames. Usage: benchmarks/cpu_report.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/bench-cpu}
data=${STMAE_SHARED_DIR:-../shared}/data/DAVIS2016
mkdir -p "$out"
python - "$out/published_rule_weights.pth" <<'PY'
import sys
from stmae import STMAE, save_checkpoint
from stmae.reference_weights import reference_weights_for
model = STMAE()
model.load_state_dict(reference_weights_for(model))
save_checkpoint(sys.argv[1], model)
PY
ckpt="$out/published_rule_weights.pth"
verify=(--verify-frames "$data/JPEGImages/480p/tennis" --verify-masks "$data/Annotations/480p/tennis" --work-size 240)
stmae-export "$ckpt" --out "$out/export_fp32" --precision fp32 --overwrite "${verify[@]}"
# INT8 for the CPU (--target cpu, the default: ONNX Runtime's QDQ quantizer, a Q/DQ pair per
# reader and Q/DQ on Conv outputs, so the CPU provider fuses every convolution into
# QLinearConv): with every flag at its default (synthetic calibration and gate clips at the
# processing size), calibrated on DAVIS frames, and with the key encoder kept float32; and
# for TensorRT (--target tensorrt: ModelOpt's layout, DQ on Conv inputs only: no CPU speed-up).
stmae-export "$ckpt" --out "$out/export_int8_default" --precision int8 --overwrite
stmae-export "$ckpt" --out "$out/export_int8_ort" --precision int8 --target cpu \
  --overwrite --calibration "$data/JPEGImages/480p/boat" "${verify[@]}"
stmae-export "$ckpt" --out "$out/export_int8_ort_keyfp32" --precision int8 --target cpu \
  --key-fp32 all --overwrite --calibration "$data/JPEGImages/480p/boat" "${verify[@]}"
stmae-export "$ckpt" --out "$out/export_int8_modelopt" --precision int8 --target tensorrt --overwrite \
  --calibration "$data/JPEGImages/480p/boat" "${verify[@]}"
stmae-bench --checkpoint "$ckpt" --input "$data/JPEGImages/480p/bear" \
  --mask "$data/Annotations/480p/bear/00000.png" --frames 30 --sizes 480 \
  --run "onnxruntime:$out/export_fp32" --run "onnxruntime:$out/export_int8_default" \
  --run "onnxruntime:$out/export_int8_ort" \
  --run "onnxruntime:$out/export_int8_ort_keyfp32" --run "onnxruntime:$out/export_int8_modelopt" \
  --out "$out/report"
# Each CPU optimization before and after (session options, int8 fusion, readout, label map,
# decode/write overlap).
python benchmarks/cpu_steps.py --export-dir "$out/export_fp32" --int8-dir "$out/export_int8_ort" \
  --frames "$data/JPEGImages/240p/bear" --mask "$data/Annotations/240p/bear/00000.png" \
  --session-frames "$data/JPEGImages/480p/bear" --session-mask "$data/Annotations/480p/bear/00000.png" \
  --out "$out/steps.md"
