"""The native CPU decode step (engine/native_step.py) gives the eager step's logits to bfloat16 precision,
for int8, int4 and bfloat16 weights, the shipped model and odd shapes, with either float KV cache, as
caches grow and alternate; the local backend decodes with it (the eager step's suggestions, without
speculation); and where it cannot serve (no compiler, float32 weights, an adapter, an int8 cache)
everything stays eager."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from engine import cpu_step, native_step
from engine.backends.base import CompletionRequest
from engine.backends.local import load_local_backend, resolve_kv_dtype
from engine.cache import KVCache
from engine.checkpoints import load_model
from engine.generate import prefill
from engine.model import Transformer
from engine.paths import default_model_dir
from engine.quant import spec_for_mode

pytestmark = pytest.mark.skipif(native_step.library() is None,
                                reason=f"the native step cannot be built here: {native_step._failure}")


def int8_model(model_dir: Path, mode: str = "int8") -> Transformer:
    return load_model(model_dir, device="cpu", dtype=torch.bfloat16, quantization=spec_for_mode(mode)).model


def teacher_forced(model: Transformer, step, prompt: list[int], tokens: list[int], kv_dtype: torch.dtype,
                   capacity: int) -> list[torch.Tensor]:
    """Logits after the prompt and after each of `tokens`, fed whatever the step predicts."""
    cache = KVCache(model.args, capacity, "cpu", kv_dtype)
    logits = [prefill(model, cache, prompt)]
    for t in tokens:
        logits.append(step(cache, t))
    assert cache.tokens == prompt + tokens
    return logits


def assert_close(eager: list[torch.Tensor], native: list[torch.Tensor], tolerance: float) -> None:
    """Each step's logits within `tolerance`, and the same greedy token wherever eager's top two are
    further apart than the logits can differ."""
    for want, got in zip(eager, native, strict=True):
        assert (want - got).abs().max() <= tolerance
        top2 = want.topk(2).values
        if top2[0] - top2[1] > 2 * tolerance:
            assert got.argmax() == want.argmax()


@pytest.mark.parametrize("mode", ["int8", "int4", "none"])
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float32])
def test_the_shipped_model_decodes_natively_to_bfloat16_precision(mode: str, kv_dtype: torch.dtype) -> None:
    model = int8_model(default_model_dir(), mode)
    assert native_step.serves(model, torch.device("cpu"))
    native = native_step.NativeStep(model)
    text = (Path(__file__).parents[2] / "engine" / "generate.py").read_text()
    lm_tok = load_model(default_model_dir(), device="cpu").tokenizer
    prompt = lm_tok.encode(text, bos=True)[:600]  # keys in three of the step's 256-key work items
    tokens = lm_tok.encode(text[4000:4200])[:24]
    eager = teacher_forced(model, lambda c, t: cpu_step.step(model, c, t), prompt, tokens, kv_dtype, 640)
    got = teacher_forced(model, native.step, prompt, tokens, kv_dtype, 640)
    assert torch.equal(eager[0], got[0])  # the prompt's logits come from the forward pass either way
    # Measured: at most 0.16 over these 24 steps (a bfloat16 logit near 10 is spaced 0.06 apart).
    assert_close(eager, got, tolerance=0.5)


@pytest.mark.parametrize("mode", ["int8", "int4", "none"])
@pytest.mark.parametrize("shape", [dict(), dict(dim=96, n_heads=4, n_kv_heads=2), dict(dim=96, n_heads=3, n_kv_heads=1)],
                         ids=["tiny", "head_dim-24", "one-kv-head"])
def test_odd_shapes_and_a_growing_cache(tmp_path: Path, shape: dict, mode: str) -> None:
    """Head sizes the vector code does not take (24), grouped and multi-query attention, widths that are
    not a multiple of the vector length, output widths that are not a multiple of int4's 64-row blocks;
    the cache grows (and moves) under the step twice."""
    from tests.tiny_models import build_tiny_model

    model = int8_model(build_tiny_model(tmp_path / "m", **shape), mode)
    assert native_step.serves(model, torch.device("cpu"))
    native = native_step.NativeStep(model)
    prompt, tokens = list(range(3, 40)), [(7 * i) % 200 + 3 for i in range(300)]  # past one 256-key item
    for kv_dtype in (torch.bfloat16, torch.float32):
        eager = teacher_forced(model, lambda c, t: cpu_step.step(model, c, t), prompt, tokens, kv_dtype, 48)
        got = teacher_forced(model, native.step, prompt, tokens, kv_dtype, 48)
        assert_close(eager, got, tolerance=0.1 * float(eager[0].abs().max()))


def test_one_native_step_serves_the_caches_of_a_pool_in_turn(tiny_model_dir: Path) -> None:
    model = int8_model(tiny_model_dir)
    native = native_step.NativeStep(model)
    a, b = (KVCache(model.args, 64, "cpu", torch.bfloat16) for _ in range(2))
    ref_a, ref_b = (KVCache(model.args, 64, "cpu", torch.bfloat16) for _ in range(2))
    for cache in (a, ref_a):
        prefill(model, cache, [5, 6, 7, 8])
    for cache in (b, ref_b):
        prefill(model, cache, [9, 10, 11])
    for t in (20, 21, 22):
        for cache, ref in ((a, ref_a), (b, ref_b)):  # alternating: the pointers follow the cache
            got, want = native.step(cache, t), cpu_step.step(model, ref, t)
            assert (got - want).abs().max() <= 0.1 * float(want.abs().max())
    assert a.tokens == [5, 6, 7, 8, 20, 21, 22] and b.tokens == [9, 10, 11, 20, 21, 22]


def test_a_token_outside_the_vocabulary_is_refused_and_the_cache_left_as_it_was(tiny_model_dir: Path) -> None:
    model = int8_model(tiny_model_dir)
    cache = KVCache(model.args, 16, "cpu", torch.bfloat16)
    prefill(model, cache, [5, 6, 7])
    with pytest.raises(ValueError, match="refused token"):
        native_step.NativeStep(model).step(cache, model.args.vocab_size)
    assert cache.tokens == [5, 6, 7]


def test_it_stands_aside_for_float32_weights_adapters_and_other_caches(tiny_model_dir: Path) -> None:
    cpu = torch.device("cpu")
    assert not native_step.serves(load_model(tiny_model_dir, device="cpu", dtype=torch.float32).model, cpu)
    assert native_step.serves(load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16).model, cpu)
    model = int8_model(tiny_model_dir)
    assert native_step.serves(model, cpu)
    layer = model.layers[0].attention.wq
    layer.lora = (torch.zeros(4, layer.in_features), torch.zeros(layer.out_features, 4), 1.0)
    assert not native_step.serves(model, cpu)  # a run-time adapter: the eager step applies it
    args = model.args
    assert native_step.NativeStep.applies(KVCache(args, 16, "cpu", torch.bfloat16))
    assert not native_step.NativeStep.applies(KVCache(args, 16, "cpu", torch.int8))
    assert not native_step.NativeStep.applies(KVCache(args, 16, "cpu", torch.bfloat16, batch=2))


@pytest.mark.parametrize("mode", ["int8", "none"])
def test_the_backend_decodes_natively_with_the_eager_suggestion(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return "
    req = CompletionRequest(prefix=prefix, suffix="\n", max_new_tokens=24)
    native = load_local_backend(None, device="cpu", dtype="bfloat16", quantization=mode)
    assert native.decode_step_kind == "native"
    assert native.speculation is None  # its verification passes would have to match native steps bit for bit
    assert native.kv_dtype == torch.bfloat16  # auto: the native step reads half the bytes from bfloat16
    monkeypatch.setenv(native_step.DISABLE_ENV, "0")
    eager = load_local_backend(None, device="cpu", dtype="bfloat16", quantization=mode)
    assert eager.decode_step_kind == "eager"
    assert eager.kv_dtype == (torch.float32 if mode == "int8" else torch.bfloat16)
    assert (eager.speculation is not None) == (mode == "none")
    assert native.complete(req).text == eager.complete(req).text


def test_without_a_compiler_it_warns_once_and_decodes_eagerly(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(native_step, "_library", None)
    monkeypatch.setattr(native_step, "_failure", None)
    monkeypatch.setattr(native_step, "_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger="engine.native_step"):
        backend = load_local_backend(tiny_model_dir, device="cpu", dtype="bfloat16", quantization="int8")
        assert not native_step.serves(backend.model, torch.device("cpu"))
    assert backend.decode_step_kind == "eager"
    assert backend.complete(CompletionRequest(prefix="def f(x):\n    return ", suffix="\n", max_new_tokens=4))
    warnings = [r for r in caplog.records if "native decode step unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no C compiler" in warnings[0].getMessage()


def test_auto_kv_dtype_is_bfloat16_where_the_native_step_decodes() -> None:
    from tests.engine.test_cpu_step import args_of

    default = args_of(8, 320, 5, 5)
    cpu = torch.device("cpu")
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu, default, quantized=True, native=True) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu, default, quantized=True) == torch.float32


def test_wide_models_keep_pytorch_kernels_where_those_are_as_fast() -> None:
    """int8 at any width; int4 up to 2,048 and bfloat16 up to 1,024 wide (native_step.MAX_DIM)."""
    from engine.config import ModelArgs
    from engine.quant import quantize_model
    from tests.tiny_models import random_model

    cpu = torch.device("cpu")
    for dim, heads, want in ((1024, 8, {"none": True, "int8": True, "int4": True}),
                             (2304, 18, {"none": False, "int8": True, "int4": False})):
        args = ModelArgs(dim=dim, n_layers=1, n_heads=heads, vocab_size=256, multiple_of=256)
        for mode, served in want.items():
            model = random_model(args).to(torch.bfloat16)
            if mode != "none":
                model = quantize_model(model, spec_for_mode(mode))
            assert native_step.serves(model, cpu) == served, (dim, mode)


def test_the_library_builds_from_source_into_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native_step, "_library", None)
    monkeypatch.setattr(native_step, "_failure", None)
    assert native_step.library() is not None
    (built,) = (tmp_path / "codellama-lsp" / "native").glob("decode_step-*.so")
    assert built.stat().st_size > 0
    assert native_step.library() is native_step._library  # built once


def test_a_build_without_avx512_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Its plain C loops are slower than PyTorch's kernels: a CPU without AVX-512 decodes with PyTorch."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native_step, "_library", None)
    monkeypatch.setattr(native_step, "_failure", None)
    monkeypatch.setattr(native_step, "CFLAGS", [*native_step.CFLAGS, "-mno-avx512f"])
    with caplog.at_level(logging.WARNING, logger="engine.native_step"):
        assert native_step.library() is None
    assert any("no AVX-512" in r.getMessage() for r in caplog.records)


def test_a_cache_it_decoded_into_is_freed_when_its_owner_drops_it(tiny_model_dir: Path) -> None:
    """The pool's memory budget counts on evicted caches being freed: the step keeps only pointers."""
    import gc
    import weakref

    model = int8_model(tiny_model_dir)
    native = native_step.NativeStep(model)
    cache = KVCache(model.args, 32, "cpu", torch.bfloat16)
    prefill(model, cache, [5, 6, 7])
    native.step(cache, 8)
    keys = weakref.ref(cache.k[0])
    del cache
    gc.collect()
    assert keys() is None
