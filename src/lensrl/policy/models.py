"""Loading a policy and its tokenizer through the Hugging Face Auto classes.

Any `AutoModelForCausalLM` loads by hub id or local folder; a GGUF file (`model.gguf_file`) is
de-quantised into an ordinary model so it trains and saves like any other. Optional: LoRA adapters
through `peft`, gradient checkpointing, and mixed-precision autocast (bfloat16 on CUDA by default).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import ModelConfig
from lensrl.policy.distributed import is_sharded
from lensrl.testbed import base_policy_path, testbed_name

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_model_path(name_or_path: str) -> str:
    """ "testbed" / "testbed:NAME" is a built-in base policy, "pkg:NAME" an installed package's folder, else a hub
    id or folder."""
    testbed = testbed_name(name_or_path)
    if testbed is not None:
        return str(base_policy_path(testbed))
    if name_or_path.startswith("pkg:"):
        spec = importlib.util.find_spec(name_or_path[4:])
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{name_or_path!r}: no installed package named {name_or_path[4:]!r}")
        return spec.submodule_search_locations[0]
    return name_or_path


@contextlib.contextmanager
def _loading(what: str, name_or_path: str) -> Iterator[None]:
    """Turn the hub's OSError for a folder that is not there (or an id it cannot reach) into one line."""
    try:
        yield
    except OSError as e:
        local = Path(name_or_path).expanduser()
        if local.is_absolute() or name_or_path.startswith(".") or local.exists():
            reason = "no such folder" if not local.exists() else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        else:
            reason = f"not a local folder, and the Hugging Face hub could not provide it ({str(e).splitlines()[0]})"
        raise ValueError(f"cannot load the {what} from {name_or_path!r}: {reason}") from e


def load_tokenizer(name_or_path: str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding (prompts are left-padded for batched sampling) and a pad token."""
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with _loading("tokenizer", name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {name_or_path!r} has no EOS token; responses could never end")
    if tokenizer.pad_token_id is None:
        warnings.warn(f"tokenizer of {name_or_path!r} has no pad token; using its EOS token for padding", stacklevel=2)
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _from_gguf(path: str, gguf_file: str, dtype: torch.dtype, **kwargs) -> PreTrainedModel:
    """De-quantise a GGUF checkpoint into a plain model (one that `save_pretrained` accepts)."""
    loaded = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=dtype, **kwargs)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=dtype, **kwargs)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model


def _add_lora(model: PreTrainedModel, config: ModelConfig) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def load_policy(config: ModelConfig, path: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (on its device, in its dtype, with LoRA adapters if configured) and tokenizer.

    `path` is a checkpoint folder that replaces `config.name_or_path`: a full model, or a LoRA
    adapter folder (`adapter_config.json`), which is loaded on top of the configured base model, with
    the tokenizer saved beside it, else the base model's.
    Without `path`, `config.adapter` (a saved adapter to train further) is loaded the same way.
    """
    dtype = _DTYPES[config.dtype]
    if path is None and config.adapter is not None:
        if not (Path(resolve_model_path(config.adapter)) / "adapter_config.json").exists():
            raise FileNotFoundError(
                f"model.adapter={config.adapter!r} is not a LoRA adapter folder (no adapter_config.json)"
            )
        path = config.adapter
    path = resolve_model_path(str(path)) if path is not None else None
    kwargs = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
    adapter = path is not None and (Path(path) / "adapter_config.json").exists()
    if path is not None and not adapter:
        tokenizer = load_tokenizer(str(path))
        with _loading("model", str(path)):
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    else:
        name = resolve_model_path(config.name_or_path)
        if adapter and (Path(path) / "tokenizer_config.json").exists():  # saved with its tokenizer
            tokenizer = load_tokenizer(str(path))
        else:  # the base model's (an adapter saved alone: adapter_config.json and its weights)
            tokenizer = load_tokenizer(name, config.gguf_file)
        with _loading("model", name):
            if config.gguf_file:
                model = _from_gguf(name, config.gguf_file, dtype, **kwargs)
            else:
                model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    elif config.lora.r > 0:
        model = _add_lora(model, config)
    model.to(resolve_device(config.device))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def autocast_dtype(config: ModelConfig, device: torch.device) -> torch.dtype | None:
    """The autocast precision of forward passes ("auto": bfloat16 on CUDA, off elsewhere), None when off."""
    mode = config.autocast
    if mode == "auto":
        mode = "bfloat16" if device.type == "cuda" else "off"
    return None if mode == "off" else _DTYPES[mode]


def autocast(config: ModelConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for forward passes (`autocast_dtype`)."""
    dtype = autocast_dtype(config, device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def frozen_weights_cast(model: torch.nn.Module, config: ModelConfig) -> Iterator[None]:
    """Inside the block, frozen linear layers hold their weights in the autocast dtype.

    Autocast caches its casts only for weights that require gradients, so the frozen base weights
    under LoRA are cast again in every forward pass: in decoding, at every token (on SmolLM2-135M
    with bfloat16 autocast on 2 CPU cores, about a quarter of a decode step). Here each is cast once
    for the block, to the values autocast casts it to, so every result is the same to the bit
    (tests/unit/test_models.py). Only `nn.Linear` weights and biases that do not require gradients
    and differ from the autocast dtype are swapped (an embedding tied to the output layer keeps its
    own); the originals are back after the block. Nothing happens without autocast, and on a
    sharded (FSDP) model.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(config, device)
    swapped = []
    if dtype is not None and not is_sharded(model):
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                for name, p in module.named_parameters(recurse=False):
                    if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                        swapped.append((module, name, p))
    copies: dict[int, torch.nn.Parameter] = {}  # one copy of a tensor that several layers share
    try:
        for module, name, p in swapped:
            if id(p) not in copies:
                copies[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            module._parameters[name] = copies[id(p)]
        yield
    finally:
        for module, name, p in swapped:
            module._parameters[name] = p


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (no dropout) inside the block, in its former mode after it.

    Sampling, behaviour log-probs and reference log-probs are the policy itself, not a noisy draw of
    it: with dropout on, pi_old (and LENS's pibar) would differ from the policy that sampled.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def reference_policy(policy: PreTrainedModel, ref_model: PreTrainedModel | None) -> Iterator[PreTrainedModel]:
    """The KL reference in eval mode: a separate frozen copy, or for LoRA the policy with its adapter off."""
    if ref_model is not None:
        with eval_mode(ref_model):
            yield ref_model
    else:
        with policy.disable_adapter(), eval_mode(policy):
            yield policy


def unwrapped(model: PreTrainedModel) -> PreTrainedModel:
    """A PEFT model's base model (which holds the generation config and the forward signature), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_lora(model: PreTrainedModel) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
