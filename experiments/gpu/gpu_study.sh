#!/usr/bin/env bash
# GPU version of the main study: GRPO vs LENS on the testbed, 3 seeds, twice the steps of the CPU study.
# Results (JSON, Markdown, PNG) go to $OUT (default: results/carry/main_gpu). Usage, from the repository
# root, on a GPU machine with torch and transformers: bash experiments/gpu/gpu_study.sh
# (missing pure-Python packages as wheels in .whl/)
set -euo pipefail
OUT=${OUT:-results/carry/main_gpu}
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"
python3 -m lensrl.cli study main --seeds 0,1,2 --runs-dir /tmp/study_main_gpu --results-dir "$OUT" \
  run.steps=80 run.eval_every=20 run.progress=false ${EXTRA:-} 2>&1 | tee "$OUT/log.txt"
tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -r "$OUT/runs"  # the per-run JSON, as one file
