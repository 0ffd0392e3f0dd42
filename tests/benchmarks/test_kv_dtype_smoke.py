"""benchmarks/kv_dtype.py runs (two keystrokes): the table that chose kvCacheDtype "auto" stays reproducible,
with speculation on for unquantized weights and off for int8 ones."""

from __future__ import annotations

import pytest

from tests.benchmarks.scripts import load_benchmark

pytestmark = pytest.mark.slow


def test_kv_dtype_benchmark_prints_a_row_per_weight_format(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("kv_dtype", monkeypatch)
    text = bench.main(["--quant", "none", "int8", "--threads", "1", "--keystrokes", "2"])
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["none", "on"], ["int8", "off"]]
    assert all(row.endswith("x |") for row in rows)
