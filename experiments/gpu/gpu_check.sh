#!/usr/bin/env bash
# GPU check of the foundation: the test suite on a CUDA device, then the default LENS run and the same
# run under GRPO (same seed) on the testbed. Results (JSON) go to $OUT (default: results/carry/gpu_check).
# Usage, from the repository root, on a GPU machine that has torch and transformers:
#   bash experiments/gpu/gpu_check.sh
# Missing pure-Python packages may be supplied as wheels in .whl/ (installed into /tmp/site).
set -euo pipefail
OUT=${OUT:-results/carry/gpu_check}
source "$(dirname "$0")/gpu_env.sh"
python3 - <<'PY' | tee "$OUT/device.txt"
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -n 5 | tee "$OUT/pytest.txt"
for algo in lens grpo; do
  start=$(date +%s)
  python3 -m lensrl.cli train --output-dir "/tmp/gpu_check_$algo" algo.advantage=$algo run.progress=false ${EXTRA:-} \
    | tee "$OUT/train_$algo.txt"
  echo "wall_seconds $(( $(date +%s) - start ))" | tee -a "$OUT/train_$algo.txt"
  cp "/tmp/gpu_check_$algo/summary.json" "$OUT/summary_$algo.json"
  cp "/tmp/gpu_check_$algo/metrics.jsonl" "$OUT/metrics_$algo.jsonl"
done
