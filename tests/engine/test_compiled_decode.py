"""The compiled CPU decode step (engine/compiled_decode.py) on the real default model: the same logits as
the eager step bit for bit (so the same greedy tokens), the local backend answering with the eager step
while the compile runs and with the compiled one after, eager decoding for good when compiling fails, and
the steps the compiled one leaves to the eager step. One compile for the module (Dynamo keeps it, so a
second CompiledStep of the same model shape builds in a fraction of a second)."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from engine import default_model_dir
from engine.backends.base import CompletionRequest
from engine.backends.local import LocalBackend, load_local_backend
from engine.cache import KVCache
from engine.checkpoints import LoadedModel, load_model
from engine.compiled_decode import CompiledStep, CompileError, ServedCompile, compile_unavailable_reason
from engine.generate import decode_step, generate, prefill
from lsp_server.settings import Settings, parse_settings

CPU = torch.device("cpu")
BF16 = torch.bfloat16
SOURCE = (default_model_dir().parents[1] / "engine" / "generate.py").read_text(encoding="utf-8")
SUFFIX = "\n\n\ndef main():\n    pass\n"


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(default_model_dir(), dtype=BF16)


@pytest.fixture(scope="module")
def gate() -> threading.Event:
    """Holds the module's compile until a test opens it."""
    return threading.Event()


@pytest.fixture(scope="module")
def backend(loaded: LoadedModel, gate: threading.Event) -> LocalBackend:
    """The served path, with its compile held at the gate (the first test sees it still compiling)."""

    def held_build(step: CompiledStep) -> None:
        assert gate.wait(timeout=600), "the test never opened the gate"
        step.build()

    b = LocalBackend(loaded, CPU, BF16)
    b.compiled = ServedCompile(loaded.model, CPU, BF16, "auto", build=held_build)
    return b


@pytest.fixture(scope="module")
def compiled(backend: LocalBackend, gate: threading.Event) -> CompiledStep:
    gate.set()
    assert backend.compiled.wait(timeout=900) and backend.compiled.reason is None, backend.compiled.reason
    return backend.compiled.compiled


def request(prefix: str) -> CompletionRequest:
    return CompletionRequest(prefix=prefix, suffix=SUFFIX, max_new_tokens=24, stop=[])


def test_the_backend_answers_with_the_eager_step_while_compiling_then_the_same_with_the_compiled_one(
        backend: LocalBackend, gate: threading.Event):
    # The first test of the module: nothing has opened the gate, the compile is waiting in its thread.
    assert backend.compiled.state == "compiling" and backend.placement.decode_step == "compiling"
    prefix = SOURCE[:1500]
    while_compiling = backend.complete(request(prefix))
    assert while_compiling.tokens and backend.compiled.steps == 0
    gate.set()
    assert backend.compiled.wait(timeout=900) and backend.compiled.state == "compiled", backend.compiled.reason
    assert backend.placement.decode_step == "compiled"
    backend.pool.clear()  # the same prompt from scratch: prefill, then decode steps
    after = backend.complete(request(prefix))
    assert backend.compiled.steps > 0
    assert after.tokens == while_compiling.tokens and after.text == while_compiling.text


def test_compiled_logits_are_the_eager_logits_bit_for_bit(loaded: LoadedModel, compiled: CompiledStep):
    tokens = loaded.tokenizer.encode(SOURCE)
    for length in (2, 63, 64, 65, 300, 777):  # odd and even lengths: Inductor's vector loops have tails
        eager = KVCache(loaded.args, length + 8, "cpu", BF16)
        ours = KVCache(loaded.args, length + 8, "cpu", BF16)
        prefill(loaded.model, eager, tokens[:length])
        prefill(loaded.model, ours, tokens[:length])
        for token in tokens[length : length + 5]:
            assert compiled.applies(ours)
            with torch.compiler.set_stance("fail_on_recompile"):  # one compile serves every length
                logits = compiled(ours, token)
            assert torch.equal(logits, decode_step(loaded.model, eager, token)), length
        for layer in range(loaded.args.n_layers):  # the keys and values it wrote, too
            assert torch.equal(ours.k[layer][:, :, : ours.length], eager.k[layer][:, :, : eager.length])
            assert torch.equal(ours.v[layer][:, :, : ours.length], eager.v[layer][:, :, : eager.length])


def test_greedy_completions_are_identical(loaded: LoadedModel, compiled: CompiledStep):
    tokens = loaded.tokenizer.encode(SOURCE)
    for cut in range(64, 1100, 130):  # 8 prompts, as benchmarks/decode_levers.py counts them
        results = []
        for step in (None, compiled):
            cache = KVCache(loaded.args, cut + 24, "cpu", BF16)
            results.append(generate(loaded.model, cache, tokens[:cut], 24, stop_ids=set(), step=step).tokens)
        assert results[0] == results[1], cut


def test_steps_it_was_not_built_for_are_left_to_the_eager_step(loaded: LoadedModel, compiled: CompiledStep):
    def filled(length: int, capacity: int = 256, dtype: torch.dtype = BF16) -> KVCache:
        cache = KVCache(loaded.args, capacity, "cpu", dtype)
        prefill(loaded.model, cache, list(range(5, 5 + length)))
        return cache

    assert compiled.applies(filled(2))
    assert not compiled.applies(filled(1))  # position 1: would specialise the compile
    assert not compiled.applies(filled(8, dtype=torch.float32))  # another KV dtype: another compile
    full = filled(256)
    assert not compiled.applies(full)  # no room: the eager step grows the cache
    full.truncate(255)
    assert not compiled.applies(full)  # the last position would recompile
    full.truncate(254)
    assert compiled.applies(full)
    with torch.compiler.set_stance("fail_on_recompile"):
        assert torch.equal(compiled(full, 9), decode_step(loaded.model, filled(254), 9))
    with torch.inference_mode():  # inference tensors: Dynamo would recompile for them
        inference_cache = KVCache(loaded.args, 256, "cpu", BF16)
    prefill(loaded.model, inference_cache, [5, 6, 7])
    assert not compiled.applies(inference_cache)
    cache = filled(8)
    fused = loaded.model.layers[0].attention.fused_qkv
    loaded.model.layers[0].attention.fused_qkv = None  # the projections as the compile saw them no longer
    try:
        assert not compiled.applies(cache)
    finally:
        loaded.model.layers[0].attention.fused_qkv = fused
    assert compiled.applies(cache)
    eager = filled(8)
    assert torch.equal(compiled(cache, 9), decode_step(loaded.model, eager, 9))


def test_a_step_that_would_recompile_runs_eagerly_instead(loaded: LoadedModel, compiled: CompiledStep,
                                                          caplog: pytest.LogCaptureFixture):
    served = ServedCompile(loaded.model, CPU, BF16, "auto")  # Dynamo has this compile: ready at once
    assert served.wait(timeout=600) and served.state == "compiled", served.reason
    served.compiled.applies = lambda cache: True  # type: ignore[method-assign]  # let an uncovered step through
    cache = KVCache(loaded.args, 256, "cpu", BF16)
    prefill(loaded.model, cache, list(range(5, 260)))  # the cache's last position: the compile assumed not
    with caplog.at_level(logging.WARNING, logger="engine.compiled_decode"):
        assert served.step(cache, 9) is None  # refused, not compiled in the request: the caller runs eagerly
    assert served.state == "eager" and "another compile" in (served.reason or "")
    assert any("decoding eagerly" in r.getMessage() for r in caplog.records)
    assert cache.length == 255  # nothing ran


def test_a_failed_compile_leaves_the_backend_decoding_eagerly_with_a_warning(
        loaded: LoadedModel, caplog: pytest.LogCaptureFixture):
    def no_compiler(step: CompiledStep) -> None:
        raise CompileError("InvalidCxxCompiler: No working C++ compiler found")

    b = LocalBackend(loaded, CPU, BF16)
    with caplog.at_level(logging.WARNING, logger="engine.compiled_decode"):
        b.compiled = ServedCompile(loaded.model, CPU, BF16, "auto", build=no_compiler)
        assert b.compiled.wait(timeout=60)
    assert b.compiled.state == "eager" and "C++ compiler" in (b.compiled.reason or "")
    assert any("decoding eagerly" in r.getMessage() for r in caplog.records)
    eager = LocalBackend(loaded, CPU, BF16)
    prefix = SOURCE[:900]
    assert b.complete(request(prefix)).tokens == eager.complete(request(prefix)).tokens
    assert b.compiled.steps == 0 and b.placement.decode_step == "eager"


def test_where_the_step_is_not_compiled_and_why():
    assert compile_unavailable_reason(CPU, BF16, "auto", adapter=False) is None
    assert compile_unavailable_reason(CPU, torch.float32, "auto", adapter=False) is None
    assert "compileDecode" in (compile_unavailable_reason(CPU, BF16, "off", adapter=False) or "")
    assert "native" in (compile_unavailable_reason(CPU, BF16, "auto", adapter=False, native=True) or "")
    assert "CUDA" in (compile_unavailable_reason(torch.device("cuda"), BF16, "auto", adapter=False) or "")
    assert "int8" in (compile_unavailable_reason(CPU, torch.int8, "auto", adapter=False) or "")
    assert "adapter" in (compile_unavailable_reason(CPU, BF16, "auto", adapter=True) or "")


def test_the_setting_is_off_by_default_reloads_the_model_and_reaches_the_backend():
    assert Settings().compile_decode == "off"
    settings, problems = parse_settings({"compileDecode": "auto"})
    assert settings.compile_decode == "auto" and problems == []
    assert settings.engine_key() != Settings().engine_key()  # a change reloads the model
    bad, problems = parse_settings({"compileDecode": "always"})
    assert bad.compile_decode == "off" and len(problems) == 1 and "codellama.compileDecode" in problems[0]
    off = load_local_backend(device="cpu", compile_decode="off")
    assert off.compiled.state == "eager" and "compileDecode" in (off.compiled.reason or "")
    off.close()
