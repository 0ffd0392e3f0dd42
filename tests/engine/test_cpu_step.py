"""The CPU decode step (engine/cpu_step.py) computes what the model's forward pass computes, bit for bit,
for every weight format and float KV cache, and stands aside where it would not; a float32 KV cache
holds a bfloat16 model's exact values, so "auto" picks it for small models on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import cpu_step, kernels, native_step
from engine.backends.base import BackendError, CompletionRequest
from engine.backends.local import AUTO_FLOAT32_KV_BYTES, load_local_backend, resolve_kv_dtype
from engine.cache import KVCache
from engine.checkpoints import load_model
from engine.config import ModelArgs
from engine.generate import forward_step, prefill
from engine.quant import spec_for_mode

PROMPT = [1, 5, 9, 200, 17, 42, 301, 7, 88, 150, 11, 3]


def run(step, model, kv_dtype: torch.dtype, steps: int = 12) -> tuple[list[torch.Tensor], KVCache]:
    cache = KVCache(model.args, 16, "cpu", kv_dtype)  # small: the steps grow it past its first capacity
    logits = [prefill(model, cache, PROMPT)]
    for _ in range(steps):
        logits.append(step(model, cache, int(logits[-1].argmax())))
    return logits, cache


@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cpu_step_gives_the_forward_pass_logits_and_cache(tiny_model_dir: Path, mode: str, dtype: torch.dtype) -> None:
    model = load_model(tiny_model_dir, device="cpu", dtype=dtype, quantization=spec_for_mode(mode)).model
    assert model.args.n_kv_heads < model.args.n_heads  # grouped-query attention is covered
    kv_dtypes = [dtype, torch.float32] if dtype == torch.bfloat16 else [dtype]
    for kv_dtype in kv_dtypes:
        want, want_cache = run(forward_step, model, kv_dtype)
        got, got_cache = run(cpu_step.step, model, kv_dtype)
        assert want_cache.tokens == got_cache.tokens
        for w, g in zip(want, got, strict=True):
            assert torch.equal(w, g)
        n = want_cache.length
        for layer in range(model.args.n_layers):
            assert torch.equal(want_cache.k[layer][:, :, :n], got_cache.k[layer][:, :, :n])
            assert torch.equal(want_cache.v[layer][:, :, :n], got_cache.v[layer][:, :, :n])


def test_a_float32_cache_gives_a_bfloat16_model_the_bfloat16_cache_logits(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16).model
    bf16, _ = run(forward_step, model, torch.bfloat16)
    fp32, _ = run(cpu_step.step, model, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(bf16, fp32, strict=True))


def test_cpu_step_follows_a_runtime_adapter(tiny_model_dir: Path) -> None:
    """A LoRA update on quantized projections (the fused form then stands aside) changes the step's
    logits as it changes the forward pass's."""
    model = load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16, quantization=spec_for_mode("int8")).model
    plain, _ = run(cpu_step.step, model, torch.bfloat16, steps=3)
    gen = torch.Generator().manual_seed(0)
    for layer in model.layers:
        for proj in (layer.attention.wq, layer.attention.wv, layer.feed_forward.w2):
            a = torch.randn(4, proj.in_features, generator=gen)
            b = torch.randn(proj.out_features, 4, generator=gen)
            proj.lora = (a, b, 0.5)
    want, _ = run(forward_step, model, torch.bfloat16, steps=3)
    got, _ = run(cpu_step.step, model, torch.bfloat16, steps=3)
    assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))
    assert not torch.equal(plain[1], got[1])


def test_cpu_step_stands_aside_where_it_would_compute_something_else(tiny_model_dir: Path) -> None:
    args = load_model(tiny_model_dir, device="cpu", dtype=torch.float32).args
    with torch.inference_mode():
        assert cpu_step.applies(KVCache(args, 16, "cpu", torch.bfloat16))
        assert cpu_step.applies(KVCache(args, 16, "cpu", torch.float32))
        assert not cpu_step.applies(KVCache(args, 16, "cpu", torch.int8))  # int8 attention reads scales
        assert not cpu_step.applies(KVCache(args, 16, "cpu", torch.float32, batch=2))
        kernels.use_backend("reference")
        try:
            assert not cpu_step.applies(KVCache(args, 16, "cpu", torch.float32))  # a test forced a backend
        finally:
            kernels.use_backend("auto")
    assert not cpu_step.applies(KVCache(args, 16, "cpu", torch.float32))  # gradients on: training


def args_of(n_layers: int, dim: int, n_heads: int, n_kv_heads: int) -> ModelArgs:
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab_size=32016)


def test_auto_kv_dtype_is_float32_for_small_quantized_bfloat16_models_on_cpu_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default = args_of(8, 320, 5, 5)  # the default model: 20 KiB a token in float32
    seven_b = args_of(32, 4096, 32, 32)  # Code Llama 7B: 1 MiB a token in float32
    assert 2 * default.n_layers * default.kv_dim * 4 <= AUTO_FLOAT32_KV_BYTES < 2 * seven_b.n_layers * seven_b.kv_dim * 4
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu, default, quantized=True) == torch.float32
    assert resolve_kv_dtype(None, torch.bfloat16, cpu, default, quantized=True) == torch.float32
    # Unquantized weights speculate, and their keystrokes measured the same with either cache.
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu, default) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu, seven_b, quantized=True) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.bfloat16, cuda, default, quantized=True) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.float16, cuda, default, quantized=True) == torch.float16
    assert resolve_kv_dtype("bfloat16", torch.bfloat16, cpu, default) == torch.bfloat16
    assert resolve_kv_dtype("float32", torch.bfloat16, cpu, seven_b) == torch.float32
    assert resolve_kv_dtype("int8", torch.bfloat16, cpu, default) == torch.int8
    with pytest.raises(BackendError, match="float32"):  # the message lists what is accepted
        resolve_kv_dtype("float8", torch.bfloat16, cpu, default)


def test_backend_with_a_float32_cache_keeps_speculation_and_the_bfloat16_suggestion(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native_step.DISABLE_ENV, "0")  # the eager step speculates (engine/native_step.py's own tests)
    prefix = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(6)) + "def g(y):\n    return "
    req = CompletionRequest(prefix=prefix, suffix="\n", max_new_tokens=12, token_healing=False)
    fp32 = load_local_backend(tiny_model_dir, device="cpu", dtype="bfloat16", kv_cache_dtype="float32")
    bf16 = load_local_backend(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert fp32.kv_dtype == torch.float32 and "float32 KV cache" in fp32.description
    assert bf16.kv_dtype == torch.bfloat16  # auto: unquantized weights keep the model's dtype
    assert fp32.speculation is not None and bf16.speculation is not None  # verification stays exact
    assert fp32.complete(req).tokens == bf16.complete(req).tokens
    (cache,) = fp32.pool.caches
    assert cache.k[0].dtype == torch.float32
    int8 = load_local_backend(tiny_model_dir, device="cpu", dtype="bfloat16", quantization="int8")
    assert int8.kv_dtype == torch.float32 and int8.speculation is None
