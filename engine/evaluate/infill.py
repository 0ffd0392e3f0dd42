"""Single-line infilling exact match on held-out files (the LCC-style metric of the paper, on the
user's own code): a line of a file is masked, the model sees the code before and after it (trimmed
to a token budget at line boundaries) and completes it; the first generated line must equal the
original (trailing whitespace ignored).

Lines are drawn at random (seeded) among the files' lines with at least `min_chars` non-blank
characters, so one-character lines (`)`, `}`) do not inflate the score.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.evaluate.humaneval import Completer, first_line
from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile


@dataclass(frozen=True)
class LineCase:
    path: str
    line_number: int  # 1-based
    prefix: str
    middle: str  # the masked line (without indentation when the cursor is after it), no newline
    suffix: str


def _take_lines(lines: list[str], budget: int, tok: Tokenizer, from_end: bool) -> str:
    """As many whole lines as fit in `budget` tokens, nearest the masked line first."""
    taken: list[str] = []
    used = 0
    for line in reversed(lines) if from_end else lines:
        n = len(tok.encode_infill(line))
        if used + n > budget:
            break
        taken.append(line)
        used += n
    return "".join(reversed(taken) if from_end else taken)


def build_cases(
    tok: Tokenizer,
    files: Sequence[SourceFile],
    samples: int,
    context_tokens: int = 1024,
    suffix_share: float = 0.25,
    cursor: str = "line",
    min_chars: int = 4,
    seed: int = 0,
) -> list[LineCase]:
    """`samples` masked lines drawn uniformly (seeded) from all eligible lines of all files."""
    candidates = []
    for fi, f in enumerate(files):
        for li, line in enumerate(f.text.splitlines(keepends=True)):
            if len(line.strip()) >= min_chars:
                candidates.append((fi, li))
    if not candidates:
        raise ValueError("no lines to mask in the given files")
    rng = random.Random(seed)
    picked = sorted(rng.sample(candidates, min(samples, len(candidates))))
    suffix_budget = int(context_tokens * suffix_share)
    cases = []
    for fi, li in picked:
        f = files[fi]
        lines = f.text.splitlines(keepends=True)
        body = lines[li].rstrip("\r\n")
        indent = body[: len(body) - len(body.lstrip())] if cursor == "indent" else ""
        prefix = _take_lines(lines[:li], context_tokens - suffix_budget, tok, from_end=True) + indent
        suffix = lines[li][len(body) :] + _take_lines(lines[li + 1 :], suffix_budget, tok, from_end=False)
        cases.append(LineCase(f.path, li + 1, prefix, body[len(indent) :], suffix))
    return cases


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    """1 - normalised Levenshtein distance (CrossCodeEval's "ES"): 1.0 for equal strings."""
    if not a and not b:
        return 1.0
    return 1 - levenshtein(a, b) / max(len(a), len(b))


def evaluate(cases: Sequence[LineCase], complete: Completer, fim_format: str, progress=None) -> dict:
    results = []
    for n, case in enumerate(cases, 1):
        completion = first_line(complete(case.prefix, case.suffix, fim_format))
        exact = completion.rstrip() == case.middle.rstrip()
        results.append({"path": case.path, "line": case.line_number, "expected": case.middle,
                         "completion": completion, "exact": exact})
        if progress:
            progress(n, len(cases))
    n = len(results)
    return {"cases": n, "exact_match": sum(bool(r["exact"]) for r in results) / n if n else 0.0, "results": results}
