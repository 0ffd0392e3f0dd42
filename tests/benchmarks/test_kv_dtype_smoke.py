"""benchmarks/kv_dtype.py runs (two keystrokes): the table that chose kvCacheDtype "auto" stays reproducible,
with the backend's decode step and speculation for each weight format."""

from __future__ import annotations

import pytest

from engine import native_step
from tests.benchmarks.scripts import load_benchmark

pytestmark = pytest.mark.slow


def test_kv_dtype_benchmark_prints_a_row_per_weight_format(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("kv_dtype", monkeypatch)
    text = bench.main(["--quant", "none", "int8", "--threads", "1", "--keystrokes", "2"])
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    if native_step.library() is not None:  # both decode natively (engine/native_step.py): neither speculates
        assert [row.split(" | ")[1:3] for row in rows] == [["none", "off (native step)"], ["int8", "off (native step)"]]
    else:
        assert [row.split(" | ")[1:3] for row in rows] == [["none", "on (eager step)"], ["int8", "off (eager step)"]]
    assert all(row.endswith("x |") for row in rows)
