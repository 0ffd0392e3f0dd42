"""benchmarks/served_bench.py in --smoke mode (tiny model on CPU), so the GPU session's served-path
benchmark (`benchmarks/gpu_check.sh served`) is known to run: it decodes through LocalBackend.complete
with cudaGraphs on and off and through the raw loop, times warm keystrokes, and writes the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_benchmark


def test_served_bench_smoke_writes_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("served_bench", monkeypatch)  # it imports gpu_bench's helpers
    out = tmp_path / "served.md"
    text = bench.main(["--smoke", "--out", str(out)])
    assert out.read_text() == text
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in text.splitlines() if line.startswith("| ")}
    ctx = next(name for name in rows if name.startswith("raw decode tok/s @ ")).split("@ ")[1].removesuffix(", eager")
    assert int(ctx.split()[0]) >= 300  # the prompt is as long as asked for
    for row in (f"raw decode tok/s @ {ctx}, eager", f"served decode tok/s @ {ctx}, cudaGraphs on",
                f"served decode tok/s @ {ctx}, cudaGraphs off", f"warm keystroke @ {ctx}, to the first token (wall)",
                f"warm keystroke @ {ctx}, engine first_token_ms", f"building the prompt @ {ctx}"):
        assert row in rows, f"missing row {row!r} in:\n{text}"
    # On the CPU both served rows decode eagerly, each saying why; the keystroke reused the cache.
    assert "the model runs on the CPU" in rows[f"served decode tok/s @ {ctx}, cudaGraphs on"]
    assert "turned off" in rows[f"served decode tok/s @ {ctx}, cudaGraphs off"]
    assert rows[f"warm keystroke @ {ctx}, to the first token (wall)"].endswith("tokens recomputed: 1 |")
