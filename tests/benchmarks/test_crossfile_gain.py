"""benchmarks/crossfile.py's paired gain: what repository context adds, case by case, with an interval
that says whether the gain is more than the draw of cases."""

from __future__ import annotations

import pytest

from tests.benchmarks.scripts import load_benchmark


@pytest.fixture()
def crossfile(monkeypatch: pytest.MonkeyPatch):
    return load_benchmark("crossfile", monkeypatch)  # it imports lsp_session


def outcomes(crossfile, results: list[tuple[bool, bool]]):
    """Two outcomes per case, (right with context, right without)."""
    out = []
    for line, (with_ctx, without) in enumerate(results):
        for context, right in ((True, with_ctx), (False, without)):
            out.append(crossfile.Outcome("pkg", context, "import", "pkg/a.py", line, "x", "x", right, right,
                                         1.0, 1.0, 10, context))
    return out


def test_the_gain_is_per_case_with_an_interval_that_excludes_zero_only_when_context_wins(crossfile):
    clear_win = outcomes(crossfile, [(True, False)] * 20 + [(False, False)] * 80)
    gain, lo, hi, fixed, broke = crossfile.paired_gain(clear_win, "exact")
    assert gain == pytest.approx(20.0) and (fixed, broke) == (20, 0)
    assert 10 < lo < 20 < hi < 30

    a_wash = outcomes(crossfile, [(True, False)] * 5 + [(False, True)] * 5 + [(True, True)] * 90)
    gain, lo, hi, fixed, broke = crossfile.paired_gain(a_wash, "exact")
    assert gain == 0.0 and (fixed, broke) == (5, 5) and lo < 0 < hi


def test_a_case_run_only_one_way_does_not_count(crossfile):
    rows = outcomes(crossfile, [(True, False)] * 3)
    rows.append(crossfile.Outcome("pkg", True, "import", "pkg/b.py", 0, "x", "x", True, True, 1.0, 1.0, 10, True))
    gain, _, _, fixed, broke = crossfile.paired_gain(rows, "identifier")
    assert gain == pytest.approx(100.0) and (fixed, broke) == (3, 0)
