"""The training loops: RL (`trainer`, its `update` and rollout `metrics`), the supervised warm-start (`sft`),
the testbed's base-policy warm-start (`warmstart`) and the GRPO-vs-LENS gradient diagnostic."""
