"""benchmarks/native_step.py runs (two cursors): the table behind the native step's speed claim stays
reproducible, and both backends answer the same requests."""

from __future__ import annotations

import pytest

from engine import native_step
from tests.benchmarks.scripts import load_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.skipif(native_step.library() is None,
                                                    reason="the native step cannot be built here")]


def test_native_step_benchmark_prints_a_row_per_weight_format(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("native_step", monkeypatch)
    text = bench.main(["--quant", "int8", "--threads", "1", "--requests", "2", "--max-new-tokens", "8"])
    (row,) = [line for line in text.splitlines() if line.startswith("| int8 |")]
    cells = row.strip("| ").split(" | ")
    assert cells[3].endswith("x") and cells[4].endswith("x")  # the two speedups
    assert cells[-1].endswith("/4")  # two cursors, each cold and as a keystroke
