#!/usr/bin/env bash
# GPU benchmark (bench/bench.py --preset gpu-smollm2): lensrl GRPO and LENS against TRL's GRPOTrainer
# (defaults, and static cache without gradient checkpointing) on SmolLM2-135M-Instruct, bf16,
# 32 questions x 16 samples x 256 tokens, 4 updates per rollout. Results go to $OUT (default:
# results/smollm2/bench). Usage, from the repository root, on a GPU machine with torch, transformers,
# accelerate, peft and trl:
#   GGUF_DIR=folder/with/SmolLM2-135M-Instruct.Q4_1.gguf bash experiments/gpu/gpu_bench.sh
# Missing pure-Python packages may be supplied as wheels in .whl/, the GGUF file as `split -b 48M` parts.
set -euo pipefail
OUT=${OUT:-results/smollm2/bench}
GGUF_DIR=${GGUF_DIR:?set GGUF_DIR to the folder holding SmolLM2-135M-Instruct.Q4_1.gguf (or its parts)}
source "$(dirname "$0")/gpu_env.sh"
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF_DIR/$GGUF" ] && compgen -G "$GGUF_DIR/$GGUF.part-*" >/dev/null; then
  cat "$GGUF_DIR/$GGUF".part-* > "$GGUF_DIR/$GGUF"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"
python3 -m bench.bench --preset gpu-smollm2 --model "$GGUF_DIR" --out "$OUT/bench.json" 2>&1 | tee "$OUT/log.txt"
