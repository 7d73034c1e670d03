"""Loading paths (hub-format folders, LoRA adapters), prompt formatting and response log-probs on tiny real models."""

import pytest
import torch

from lensrl.config import ModelConfig, PromptConfig
from lensrl.core.logprobs import selective_logprobs
from lensrl.data.prompts import format_prompt
from lensrl.data.sources import Problem
from lensrl.policy.forward import behaviour_logprobs, by_length, response_logprobs, trimmed_logprobs
from lensrl.policy.models import (
    autocast,
    frozen_weights_cast,
    is_lora,
    load_policy,
    reference_policy,
    resolve_model_path,
)
from lensrl.records import Rollout
from lensrl.rollout.compact import decode_compact


def _batch(tokenizer, texts, response_len):
    """Left-padded prompts followed by `response_len` fixed response tokens."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    response = torch.randint(4, len(tokenizer) - 1, (len(texts), response_len), generator=g)
    return torch.cat([enc["input_ids"], response], dim=1), enc["attention_mask"]


def _reference_logprobs(model, input_ids, prompt_mask, r, temperature):
    """Plain full-logits computation: the whole forward pass, then log-softmax of every response position."""
    attention_mask = torch.cat([prompt_mask, torch.ones(len(input_ids), r, dtype=prompt_mask.dtype)], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logp = torch.log_softmax(logits[:, -r - 1 : -1].float() / temperature, dim=-1)
    return logp.gather(-1, input_ids[:, -r:, None]).squeeze(-1)


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_chat_model_dir"])
def test_chunked_head_logprobs_match_full_logits_with_gradients(fixture, request):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(request.getfixturevalue(fixture))))
    input_ids, prompt_mask = _batch(tokenizer, ["1+2", "what is 12-7 then"], response_len=5)
    lp, ent = response_logprobs(model, input_ids, prompt_mask, 5, temperature=0.7, with_entropy=True)
    (grad_chunked,) = torch.autograd.grad(lp.sum(), model.get_input_embeddings().weight)
    ref = _reference_logprobs(model, input_ids, prompt_mask, 5, 0.7)
    (grad_ref,) = torch.autograd.grad(ref.sum(), model.get_input_embeddings().weight)
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_chunked, grad_ref, atol=1e-5, rtol=1e-4)
    assert ent.shape == lp.shape and (ent > 0).all()


def _ragged_rollout(tokenizer):
    """4 rows: prompts of different lengths (left padding), responses of 2, 7, 4 and 7 tokens then padding."""
    input_ids, prompt_mask = _batch(tokenizer, ["1+2", "what is 12-7 then", "3*3", "what is 12-7 then"], 7)
    lengths = torch.tensor([2, 7, 4, 7])
    response_mask = (torch.arange(7)[None] < lengths[:, None]).float()
    input_ids[:, -7:] = input_ids[:, -7:].masked_fill(response_mask == 0, tokenizer.pad_token_id)
    return Rollout(
        problems=[Problem("q", "1")] * 2,
        group_size=2,
        input_ids=input_ids,
        prompt_mask=prompt_mask,
        response_mask=response_mask,
        completions=[""] * 4,
        truncated=torch.zeros(4, dtype=torch.bool),
    )


def test_trimmed_logprobs_equal_the_full_width_ones_with_gradients(tiny_model_dir):
    # rows 0 and 2 have short prompts and short responses: trimming drops 2+ prompt and 3 response columns
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    rollout = _ragged_rollout(tokenizer)
    rows = torch.tensor([2, 0])
    lp, ent = trimmed_logprobs(model, rollout, rows, 0.7, with_entropy=True)
    (grad,) = torch.autograd.grad((lp * rollout.response_mask[rows]).sum(), model.get_input_embeddings().weight)
    full, full_ent = response_logprobs(model, rollout.input_ids[rows], rollout.prompt_mask[rows], 7, 0.7, True)
    mask = rollout.response_mask[rows]
    (grad_full,) = torch.autograd.grad((full * mask).sum(), model.get_input_embeddings().weight)
    torch.testing.assert_close(lp * mask, full * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent * mask, full_ent * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, grad_full, atol=1e-5, rtol=1e-4)
    assert lp.shape == (2, 7) and (lp[:, 4:] == 0).all()  # padded back past the longest response (4)


def test_behaviour_logprobs_by_length_equal_one_full_batch(tiny_model_dir):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    rollout = _ragged_rollout(tokenizer)
    assert [b.tolist() for b in by_length(torch.arange(4), rollout.lengths, 3)] == [[1, 3, 2], [0]]
    lp, ent = behaviour_logprobs(model, rollout, 1.0, micro_batch_size=2)  # [1, 3] then [2, 0]
    with torch.no_grad():
        full, full_ent = response_logprobs(model, rollout.input_ids, rollout.prompt_mask, 7, 1.0, True)
    mask = rollout.response_mask
    torch.testing.assert_close(lp * mask, full * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent * mask, full_ent * mask, atol=1e-5, rtol=1e-5)


def test_selective_logprobs_chunks_agree_with_one_chunk():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, 11, generator=g, requires_grad=True)
    tokens = torch.randint(0, 11, (3, 7), generator=g)
    a, _ = selective_logprobs(logits, tokens, 1.3, chunk_tokens=4)  # 21 positions in chunks of 4
    b, _ = selective_logprobs(logits, tokens, 1.3, chunk_tokens=1000)
    torch.testing.assert_close(a, b)
    (ga,) = torch.autograd.grad(a.sum(), logits)
    (gb,) = torch.autograd.grad(b.sum(), logits)
    torch.testing.assert_close(ga, gb)


def test_lora_trains_only_adapters_and_reference_is_the_adapter_switched_off(tiny_chat_model_dir):
    base, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_chat_model_dir)))
    policy, _ = load_policy(ModelConfig(name_or_path=str(tiny_chat_model_dir), lora={"r": 4, "alpha": 8}))
    assert is_lora(policy) and not is_lora(base)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # LoRA's B starts at zero; make the adapter do something
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    input_ids, prompt_mask = _batch(tokenizer, ["What is 2+3?"], response_len=4)
    with torch.no_grad():
        lp_base, _ = response_logprobs(base, input_ids, prompt_mask, 4, 1.0)
        lp_policy, _ = response_logprobs(policy, input_ids, prompt_mask, 4, 1.0)
        with reference_policy(policy, None) as ref:
            lp_ref, _ = response_logprobs(ref, input_ids, prompt_mask, 4, 1.0)
        lp_after, _ = response_logprobs(policy, input_ids, prompt_mask, 4, 1.0)
    torch.testing.assert_close(lp_ref, lp_base)
    assert not torch.allclose(lp_policy, lp_base)
    torch.testing.assert_close(lp_after, lp_policy)  # the adapter is back on after the reference pass


def test_lora_adapter_checkpoint_reloads_on_its_base(tiny_chat_model_dir, tmp_path):
    config = ModelConfig(name_or_path=str(tiny_chat_model_dir), lora={"r": 2})
    policy, tokenizer = load_policy(config)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    policy.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = load_policy(config, tmp_path)
    alone = tmp_path / "adapter_alone"  # the adapter without its tokenizer: the base model's is used
    alone.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (alone / name).write_bytes((tmp_path / name).read_bytes())
    reloaded_alone, tokenizer_alone = load_policy(config, alone)
    assert tokenizer_alone.get_vocab() == tokenizer.get_vocab() and tokenizer_alone.padding_side == "left"
    input_ids, prompt_mask = _batch(tokenizer, ["12-7"], response_len=3)
    with torch.no_grad():
        a, _ = response_logprobs(policy, input_ids, prompt_mask, 3, 1.0)
        b, _ = response_logprobs(reloaded, input_ids, prompt_mask, 3, 1.0)
        c, _ = response_logprobs(reloaded_alone, input_ids, prompt_mask, 3, 1.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_chat_model_dir):
    grads = []
    for ckpt in (False, True):
        model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_chat_model_dir), gradient_checkpointing=ckpt))
        model.train()
        input_ids, prompt_mask = _batch(tokenizer, ["What is 2+3?", "12-7"], response_len=4)
        lp, _ = response_logprobs(model, input_ids, prompt_mask, 4, 1.0)
        lp.sum().backward()
        grads.append(model.get_input_embeddings().weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_chat_and_plain_prompt_formats(tiny_chat_model_dir):
    _, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_chat_model_dir)))
    auto = format_prompt(tokenizer, "What is 2+3?", PromptConfig(template="{prompt} Use \\boxed{}."))
    assert auto == "<|im_start|>user\nWhat is 2+3? Use \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    system = format_prompt(tokenizer, "Q", PromptConfig(system="Be brief."))
    assert system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ<|im_end|>")
    plain = format_prompt(
        tokenizer, "What is 2+3?", PromptConfig(style="plain", template="Question: {prompt}\nAnswer:")
    )
    assert plain == "Question: What is 2+3?\nAnswer:"  # this tokenizer adds no BOS, so none is prepended


def test_chat_style_without_a_template_is_an_error(tiny_model_dir):
    _, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert format_prompt(tokenizer, "Q: 1+2\nA:", PromptConfig()) == "Q: 1+2\nA:"  # auto -> plain
    with pytest.raises(ValueError, match="no chat template"):
        format_prompt(tokenizer, "x", PromptConfig(style="chat"))


def test_package_paths_and_autocast_choice():
    assert resolve_model_path("pkg:lensrl").endswith("lensrl")
    with pytest.raises(ValueError, match="no installed package"):
        resolve_model_path("pkg:no_such_package_xyz")
    assert autocast(ModelConfig(), torch.device("cpu"))().__class__.__name__ == "nullcontext"
    ctx = autocast(ModelConfig(autocast="bfloat16"), torch.device("cpu"))()
    with ctx:
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_frozen_weights_cast_changes_no_number_under_autocast(tiny_chat_model_dir):
    """Casting a LoRA base's frozen weights once gives what autocast's cast at every call gives, to the bit:
    response log-probs, their gradients on the adapter, and sampled tokens with their log-probs. The tiny
    Qwen2 has biases on q/k/v and an output layer tied to the embedding, the two awkward cases."""
    config = ModelConfig(name_or_path=str(tiny_chat_model_dir), lora={"r": 4, "alpha": 8}, autocast="bfloat16")
    policy, tokenizer = load_policy(config)
    with torch.no_grad():  # LoRA's B starts at zero; make the adapter do something
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    input_ids, prompt_mask = _batch(tokenizer, ["What is 2+3?", "Hi", "Add 7 and 5."], response_len=5)
    prompts = input_ids[:, : prompt_mask.shape[1]]
    before = dict(policy.named_parameters())

    def passes():
        policy.zero_grad()
        with autocast(config, policy.device)():
            lp, _ = response_logprobs(policy, input_ids, prompt_mask, 5, 0.7)
            torch.manual_seed(0)
            tokens, lp_drawn, _ = decode_compact(
                policy, prompts, prompt_mask, 1.0, 1.0, 8, [tokenizer.eos_token_id], 0, with_logprobs=True
            )
        lp.sum().backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
        return lp.detach(), tokens, lp_drawn, grads

    plain = passes()
    base = policy.get_base_model()
    with frozen_weights_cast(policy, config):
        assert base.lm_head.weight.dtype == torch.bfloat16  # untied from the embedding inside the block
        assert base.model.embed_tokens.weight.dtype == torch.float32
        attention = base.model.layers[0].self_attn
        assert attention.q_proj.base_layer.bias.dtype == torch.bfloat16
        assert attention.q_proj.lora_A.default.weight.dtype == torch.float32  # trainable: autocast caches these
        cast = passes()
    for a, b in zip(plain[:3], cast[:3]):
        assert torch.equal(a, b)
    assert plain[3].keys() == cast[3].keys() and all(torch.equal(plain[3][n], cast[3][n]) for n in plain[3])
    after = dict(policy.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert base.lm_head.weight is base.model.embed_tokens.weight  # tied again
    with frozen_weights_cast(policy, ModelConfig()):  # no autocast on a CPU: nothing to cast
        assert base.lm_head.weight.dtype == torch.float32
