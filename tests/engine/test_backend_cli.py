"""The local backend and the CLI as users drive them: FIM in both orders, healing, stops, cancellation."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from engine import CompletionRequest, InstructRequest, load_local_backend
from engine.cache import KVCache
from engine.checkpoints import load_model
from engine.generate import generate
from engine.prompts import spm_prompt
from tests import forkserver


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_local_backend(tiny_model_dir, device="cpu", dtype="float32")


def test_completion_equals_the_models_own_greedy_choice(backend, tiny_model_dir):
    """Without healing, the text is the decode of what plain greedy generation picks after the prompt."""
    req = CompletionRequest(prefix="def add(a, b):\n    return ", suffix="\n", max_new_tokens=12,
                            token_healing=False)
    got = backend.complete(req)
    loaded = load_model(tiny_model_dir, dtype=torch.float32)
    prompt = spm_prompt(loaded.tokenizer, req.prefix, req.suffix)
    assert got.prompt_tokens == prompt
    ref = generate(loaded.model, KVCache(loaded.args, 8, "cpu", torch.float32), prompt, 12,
                   stop_ids=loaded.tokenizer.stop_ids())
    assert got.tokens == ref.tokens
    assert got.text == loaded.tokenizer.decode_infill(ref.tokens)


def test_token_healing_regenerates_the_held_back_token(backend):
    req = CompletionRequest(prefix="def add(a, b):\n    retu", suffix="\n", max_new_tokens=8)
    healed = backend.complete(req)
    plain_prompt, held = backend.build_prompt(req)
    assert held, "the prefix's last token should be held back"
    assert len(plain_prompt) == len(healed.prompt_tokens)
    # The generated tokens spell the held-back text first; the returned text starts after it.
    full = backend.tok.decode_infill(healed.tokens)
    assert full.startswith(held) and healed.text == full[len(held):]


@pytest.mark.parametrize("fim_format", ["spm", "psm"])
def test_a_cursor_at_a_line_start_is_not_healed(backend, fim_format):
    # Healing there would let the model re-decide the line break (a blank line before the suggestion).
    req = CompletionRequest(prefix="def add(a, b):\n", suffix="\n", max_new_tokens=4, fim_format=fim_format)
    prompt, held = backend.build_prompt(req)
    assert held == ""
    assert prompt == backend.build_prompt(CompletionRequest(prefix=req.prefix, suffix=req.suffix,
                                                            fim_format=fim_format, token_healing=False))[0]


def test_repeated_keystrokes_reuse_the_cache_and_match_cold(backend, tiny_model_dir):
    base = "import os\n\n\ndef walk(root):\n    for name in os.listdir(root):\n        "
    first = backend.complete(CompletionRequest(prefix=base, suffix="\n", max_new_tokens=6))
    second = backend.complete(CompletionRequest(prefix=base + "pa", suffix="\n", max_new_tokens=6))
    assert second.timings.cached_tokens > 0.8 * first.timings.prompt_tokens
    cold = load_local_backend(tiny_model_dir, device="cpu", dtype="float32")
    again = cold.complete(CompletionRequest(prefix=base + "pa", suffix="\n", max_new_tokens=6))
    assert again.timings.cached_tokens == 0 and again.tokens == second.tokens


def test_stop_strings_cancellation_and_streaming(backend):
    seen: list[str] = []
    req = CompletionRequest(prefix="x = ", suffix="", max_new_tokens=20, token_healing=False)
    full = backend.complete(req, on_text=seen.append)
    if full.tokens:
        assert seen and seen[-1] == full.text
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))  # streamed text only grows

    cut = backend.complete(req, should_stop=lambda: True)
    assert cut.stop_reason == "cancelled" and cut.tokens == []

    if len(full.text) >= 2:
        stop = full.text[1]
        stopped = backend.complete(CompletionRequest(**{**req.__dict__, "stop": [stop]}))
        assert stopped.stop_reason == "stop_string" and stop not in stopped.text


def test_psm_and_spm_both_complete(backend):
    for fmt in ("psm", "spm"):
        out = backend.complete(CompletionRequest(prefix="def f():\n    ", suffix="\n", fim_format=fmt,
                                                 max_new_tokens=4))
        assert out.stop_reason in ("eot", "eos", "max_tokens")
        assert out.prompt_tokens[:2] == [backend.tok.bos_id, backend.tok.prefix_id]


def test_sampling_is_reproducible_with_a_seed(backend):
    req = CompletionRequest(prefix="class ", suffix="", max_new_tokens=10, temperature=0.9, top_p=0.9, seed=7)
    assert backend.complete(req).tokens == backend.complete(req).tokens


def test_instruct_query(backend):
    out = backend.instruct(InstructRequest(user="Explain this code.", max_new_tokens=5))
    assert out.prompt_tokens[0] == backend.tok.bos_id and len(out.tokens) <= 5


@pytest.mark.slow
def test_cli_complete_json_and_info(tiny_model_dir, tmp_path):
    (tmp_path / "pre.py").write_text("def square(x):\n    return ")
    (tmp_path / "suf.py").write_text("\n")
    proc = subprocess.run(
        forkserver.command("engine", "complete", "--model", str(tiny_model_dir), "--prefix-file",
                           str(tmp_path / "pre.py"), "--suffix-file", str(tmp_path / "suf.py"), "--format", "psm",
                           "--max-new-tokens", "5", "--dtype", "float32", "--json"),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"text", "prompt_tokens", "tokens", "stop_reason", "timings"} <= out.keys()
    assert len(out["tokens"]) <= 5 and out["timings"]["prompt_tokens"] == len(out["prompt_tokens"])

    info = subprocess.run(forkserver.command("engine", "info", "--model", str(tiny_model_dir)),
                          capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    cfg = json.loads(info.stdout)
    assert cfg["layout"] == "hf" and cfg["can_infill"] is True and cfg["n_kv_heads"] == 2
    assert cfg["rope_theta"] == 1e6


def test_int8_kv_cache_backend_and_cli_flag(tiny_model_dir, capsys):
    """`--kv-cache-dtype int8`: the backend's caches store int8 (about half of bf16's bytes) and a
    completion over a long prompt still follows the float cache's greedy choice at the start."""
    from engine.__main__ import main

    prefix = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(40)) + "def g(y):\n    return "
    req = CompletionRequest(prefix=prefix, suffix="\n", max_new_tokens=8, token_healing=False)
    exact = load_local_backend(tiny_model_dir, device="cpu", dtype="float32").complete(req)
    int8 = load_local_backend(tiny_model_dir, device="cpu", dtype="float32", kv_cache_dtype="int8")
    got = int8.complete(req)
    assert int8.kv_dtype == torch.int8 and "int8 KV cache" in int8.description
    (cache,) = int8.pool.caches
    a = int8.loaded.args  # per position: K and V of every layer and head, int8 values + a float32 scale
    assert cache.k[0].dtype == torch.int8 and cache.nbytes() == cache.capacity * a.n_layers * 2 * a.n_kv_heads * (
        a.head_dim + 4)
    assert got.tokens[:4] == exact.tokens[:4]

    assert main(["complete", "--model", str(tiny_model_dir), "--prefix", prefix, "--suffix", "\n",
                 "--max-new-tokens", "8", "--no-token-healing", "--dtype", "float32",
                 "--kv-cache-dtype", "int8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "int8 KV cache" in out["model"] and out["tokens"] == got.tokens
