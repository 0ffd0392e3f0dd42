"""benchmarks/served_bench.py in --smoke mode (tiny model on CPU), so the GPU session's served-path
benchmark (`benchmarks/gpu_check.sh served`) is known to run: it decodes through LocalBackend.complete
with cudaGraphs on and off and through the raw loop, times warm keystrokes, and writes the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_served_bench_smoke_writes_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports gpu_bench's helpers, as when run as a script
    spec = importlib.util.spec_from_file_location("served_bench", BENCHMARKS / "served_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "served_bench", bench)
    spec.loader.exec_module(bench)
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
