"""Fused q/k/v and gate/up projections for CPU decode steps (engine/fused.py): the same bits as the
separate projections, no weight held twice, and everything that reads or writes the separate
projections' weights (saving, adapters, moves) still works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.cache import KVCache
from engine.checkpoints import load_model, save_hf_checkpoint
from engine.fused import FusedProjections
from engine.generate import generate
from engine.quant import QuantizedLinear, spec_for_mode

MODES = ["none", "int8", "int4"]


def projections(widths: list[int], mode: str, seed: int = 0) -> list[nn.Module]:
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(w, 96, generator=gen) * 0.1 for w in widths]
    spec = spec_for_mode(mode)
    if spec is None:
        layers = [nn.Linear(96, w, bias=False) for w in widths]
        for layer, w in zip(layers, weights, strict=True):
            layer.weight.data = w.bfloat16()
        return layers
    return [QuantizedLinear.from_weight(w, spec) for w in weights]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("widths", [[128, 64, 64], [96, 96], [72, 200]])  # int4: 72 and 200 pad to 128 and 256
def test_fused_outputs_are_the_separate_outputs_bit_for_bit(mode: str, widths: list[int]) -> None:
    parts = projections(widths, mode)
    x = torch.randn(1, 1, 96, generator=torch.Generator().manual_seed(1)).bfloat16()
    with torch.inference_mode():
        want = [p(x) for p in parts]
        fused = FusedProjections(parts, torch.bfloat16)
        assert fused.applies(x, parts)
        got = fused(x)
        again = [p(x) for p in parts]  # the projections now read their rows of the stacked weight
    for g, w, a in zip(got, want, again, strict=True):
        assert torch.equal(g, w) and torch.equal(a, w)


@pytest.mark.parametrize("mode", MODES)
def test_fused_path_stands_aside_when_it_would_compute_something_else(mode: str) -> None:
    parts = projections([64, 64], mode)
    x = torch.randn(1, 1, 96).bfloat16()
    fused = FusedProjections(parts, torch.bfloat16)
    with torch.inference_mode():
        assert fused.applies(x, parts)
        assert not fused.applies(torch.randn(1, 3, 96).bfloat16(), parts)  # several rows
        assert not fused.applies(x.float(), parts)
        assert not fused.applies(x, [parts[1], parts[0]])  # a projection replaced
    assert not fused.applies(x, parts)  # gradients on
    if isinstance(parts[0], QuantizedLinear):
        parts[0].lora = (torch.zeros(2, 96), torch.zeros(64, 2), 1.0)
        with torch.inference_mode():
            assert not fused.applies(x, parts)


@pytest.mark.parametrize("mode", MODES)
def test_a_loaded_model_decodes_the_same_tokens_fused_and_holds_each_weight_once(tiny_model_dir: Path,
                                                                                  mode: str) -> None:
    loaded = load_model(tiny_model_dir, dtype=torch.bfloat16, quantization=spec_for_mode(mode))
    model = loaded.model
    assert all(layer.attention.fused_qkv is not None and layer.feed_forward.fused_gate_up is not None
               for layer in model.layers)
    prompt = [1, 5, 9, 2, 7, 3, 11, 4, 6, 8]

    def complete() -> list[int]:
        cache = KVCache(loaded.args, 64, "cpu", torch.bfloat16)
        return generate(model, cache, prompt, 24, stop_ids=set()).tokens

    fused = complete()
    for layer in model.layers:  # unfused: the projections one by one, as before fusing existed
        layer.attention.fused_qkv = layer.feed_forward.fused_gate_up = None
    assert complete() == fused
    model.fuse_projections()
    attn = model.layers[0].attention
    assert len({_storage(p) for p in (attn.wq, attn.wk, attn.wv)}) == 1, "q, k and v rows of one stacked weight"
    assert complete() == fused


def _storage(layer: nn.Module) -> int:
    if isinstance(layer, QuantizedLinear):
        return (layer._cpu.packed if layer._cpu is not None else layer.qweight).untyped_storage().data_ptr()
    return layer.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("mode", MODES)
def test_a_fused_model_saves_and_reloads_to_the_same_tokens(tiny_model_dir: Path, tmp_path: Path, mode: str) -> None:
    loaded = load_model(tiny_model_dir, dtype=torch.bfloat16, quantization=spec_for_mode(mode))
    prompt = [1, 5, 9, 2, 7]
    cache = KVCache(loaded.args, 64, "cpu", torch.bfloat16)
    before = generate(loaded.model, cache, prompt, 12, stop_ids=set()).tokens
    spec = loaded.quantization
    save_hf_checkpoint(loaded.model, tiny_model_dir / "tokenizer.model", tmp_path / "saved",
                       config_extra={"quantization": spec.to_config()} if spec else None)
    again = load_model(tmp_path / "saved", dtype=torch.bfloat16)
    cache = KVCache(again.args, 64, "cpu", torch.bfloat16)
    assert generate(again.model, cache, prompt, 12, stop_ids=set()).tokens == before
