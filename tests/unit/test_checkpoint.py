"""Checkpoints: Hugging Face folders written through a temporary folder, newest N kept, checked by a manifest."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lensrl.policy.models import load_tokenizer
from lensrl.runs.checkpoint import is_complete, latest_checkpoint, save_checkpoint


def _parts(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, load_tokenizer(str(model_dir)), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def test_keeps_newest_and_reloads(tiny_model_dir, tmp_path):
    model, tokenizer, optimizer, scheduler = _parts(tiny_model_dir)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tokenizer, optimizer, scheduler, {"data_position": step * 4}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000002", "step_000003"]  # no temporary folder left, oldest removed
    state = torch.load(tmp_path / "checkpoints" / "step_000003" / "trainer_state.pt")
    assert state["step"] == 3 and state["data_position"] == 12
    AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step_000003")


def test_latest_checkpoint_skips_incomplete_ones(tiny_model_dir, tmp_path):
    model, tokenizer, optimizer, scheduler = _parts(tiny_model_dir)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tokenizer, optimizer, scheduler, {}, keep=3)
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path) == root / "step_000003"
    weights = root / "step_000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by a full disk
    (root / "step_000002" / "manifest.json").unlink()  # never finished
    (root / ".tmp_step_000004").mkdir()  # killed while saving: ignored
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        assert latest_checkpoint(tmp_path) == root / "step_000001"
    assert is_complete(root / "step_000001") and not is_complete(root / "step_000003")
