"""The training loops: RL (`trainer`), the supervised warm-start (`sft`) and the GRPO-vs-LENS gradient diagnostic."""
