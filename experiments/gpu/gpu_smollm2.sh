#!/usr/bin/env bash
# GPU run of experiments/smollm2_gsm8k.py: SmolLM2-135M-Instruct warm-started on GSM8K train solutions,
# then GRPO and LENS from the same start, pass@k on held-out rows. Results go to $OUT (default:
# results/smollm2/gsm8k_gpu). Usage, from the repository root, on a GPU machine with torch, transformers,
# accelerate and peft:
#   GGUF_DIR=folder/with/SmolLM2-135M-Instruct.Q4_1.gguf DATA_DIR=folder/with/gsm8k_train.jsonl \
#     bash experiments/gpu/gpu_smollm2.sh
# gsm8k_train.jsonl is the train split of the Hugging Face dataset openai/gsm8k (subset main) as JSON Lines
# (experiments/smollm2_gsm8k.py says how to write it); without DATA_DIR the dataset is read from the hub.
# Missing pure-Python packages (pydantic, math-verify, gguf, ...) may be supplied as wheels in .whl/;
# a GGUF file split with `split -b 48M` may be supplied as the parts "$GGUF_DIR"/*.part-* (joined here).
set -euo pipefail
OUT=${OUT:-results/smollm2/gsm8k_gpu}
GGUF_DIR=${GGUF_DIR:-}
DATA_DIR=${DATA_DIR:-}
source "$(dirname "$0")/gpu_env.sh"
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -n "$GGUF_DIR" ] && [ ! -f "$GGUF_DIR/$GGUF" ] && compgen -G "$GGUF_DIR/$GGUF.part-*" >/dev/null; then
  cat "$GGUF_DIR/$GGUF".part-* > "$GGUF_DIR/$GGUF"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"
python3 -m experiments.smollm2_gsm8k --scale gpu --no-progress ${DATA_DIR:+--data-dir "$DATA_DIR"} --runs-dir /tmp/smollm2_runs \
  --results-dir "$OUT" ${GGUF_DIR:+--gguf-dir "$GGUF_DIR"} 2>&1 | tee "$OUT/log.txt"
