"""benchmarks/gpu_bench.py in --smoke mode (tiny model on CPU), so the GPU script is known to run.

It checks the static decode step against the eager forward and transformers against our model on the
same weights, and writes the markdown table a GPU session would commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_benchmark

pytest.importorskip("transformers", reason="the benchmark compares against transformers")



@pytest.mark.parametrize("kv_cache", ["auto", "int8"])
def test_gpu_bench_smoke_writes_the_table(kv_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("gpu_bench", monkeypatch)
    out = tmp_path / "gpu.md"
    text = bench.main(["--smoke", "--out", str(out), "--kv-cache-dtype", kv_cache])
    assert out.read_text() == text
    for row in (
        "| prefill 70 tokens |",  # three chunks of 32: the masked chunked-prefill path too
        "| decode tok/s @ 70 ctx, eager |",
        "| decode tok/s @ 70 ctx, int8 weights |",
        "| decode tok/s @ 70 ctx, int4 weights, group 32 |",
        "| static decode step @ 70 ctx vs eager |",
        "| keystroke @ 60 ctx (+4 tokens), warm |",
        "| transformers decode tok/s @ 24 ctx |",
        "| KV cache @ 70 ctx |",
    ):
        assert row in text, f"missing row {row!r} in:\n{text}"
    assert ("torch.int8 KV cache" in text) == (kv_cache == "int8")
