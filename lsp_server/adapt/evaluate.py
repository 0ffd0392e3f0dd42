"""Before/after numbers for an adaptation, measured on files the run held out (never trained on).

Single-line completions go through the server's own path: the context builder at the server's budget
over the whole workspace (the held-out file is the open buffer), the engine's FIM request with the
settings the server uses, and the server's post-processing. The cursor sits where users ask: at a
line's start after its indentation, after `.`, `(`, `=` or `,`, inside an identifier, and before a
name imported from another file of the workspace ("cross"). The target is the rest of the line.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.backends.base import Backend, CompletionRequest
from engine.evaluate.infill import edit_similarity
from engine.train.sources import SourceFile
from lsp_server.completion import cursor_info, name_guidance, workspace_files
from lsp_server.context.budget import TokenCounter
from lsp_server.context.gather import Gatherer, Request
from lsp_server.context.prompt import build_prompt, in_memory_index
from lsp_server.documents import Document
from lsp_server.postprocess import postprocess
from lsp_server.settings import Settings

from .examples import cross_file_cursors, pick_cursor, sibling_names

EVAL_KINDS = ("line", "punct", "ident", "cross")
MAX_TARGET_CHARS = 160

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LineCase:
    path: str
    text: str  # the file with the rest of the cursor's line removed
    offset: int  # the cursor, a code-point offset into text
    target: str  # what the user would have typed: the rest of the line
    kind: str


def workspace_modules(paths: Sequence[str]) -> set[str]:
    """Top-level module and package names of a workspace (imports of these refer to its own files)."""
    return {p.split("/")[0].removesuffix(".py") for p in paths}


def line_cases(files: Sequence[SourceFile], n: int, seed: int, modules: set[str]) -> list[LineCase]:
    """About `n` cases, a quarter of each kind of cursor where the files have them, spread over the
    files (seeded)."""
    rng = random.Random(seed)
    files = [f for f in files if f.path.endswith(".py")]
    cases: list[LineCase] = []
    seen: set[tuple[str, int]] = set()
    for k, kind in enumerate(EVAL_KINDS):
        quota = (n - len(cases)) // (len(EVAL_KINDS) - k)  # kinds that fall short leave room to the next
        made = 0
        for attempt in range(quota * 10):
            if made >= quota or not files:
                break
            f = files[attempt % len(files)]
            cross = cross_file_cursors(f.text, *sibling_names(f.text, modules)) if kind == "cross" else []
            t = pick_cursor(f.text, kind, cross, rng)
            if t is None or (f.path, t.offset) in seen:
                continue
            target = f.text[t.offset : t.end]
            if not target.strip() or "\n" in target or len(target) > MAX_TARGET_CHARS:
                continue
            seen.add((f.path, t.offset))
            cases.append(LineCase(f.path, f.text[: t.offset] + f.text[t.end :], t.offset, target, kind))
            made += 1
    return cases


def suggestion_for(backend: Backend, case: LineCase, index, gatherer: Gatherer, count: TokenCounter,
             settings: Settings, version: int) -> str:
    """The suggestion the server would show for this cursor (first request on the document)."""
    req = Request(case.path, case.text, "python", case.offset, version)
    built = build_prompt(req, index, gatherer, budget=settings.prompt_budget(backend), count=count,
                         repository_context=settings.repository_context)
    request = CompletionRequest(prefix=built.prefix, suffix=built.suffix, fim_format=settings.fim_format,
                                max_new_tokens=settings.max_new_tokens, temperature=0.0, stop=["\n"],
                                speculative=settings.speculative_decoding, prompt_copy=settings.copy_from_prompt,
                                workspace=workspace_files(req, index, settings),
                                **name_guidance(gatherer, req, index, settings))
    completion = backend.complete(request)
    doc = Document(f"file:///{case.path}", case.text)
    cur = cursor_info(doc, case.offset, case.text.count("\n", 0, case.offset), "never")
    return postprocess(completion.text, cur, truncated=completion.stop_reason == "max_tokens").text


def score_cases(backend: Backend, cases: Sequence[LineCase], workspace: Mapping[str, str],
                settings: Settings | None = None, progress: Progress | None = None) -> dict:
    """Exact match and edit similarity of the first suggested line against each target, in percent,
    overall and per kind; `results` keeps every case's suggestion (for paired comparisons)."""
    settings = settings or Settings()
    index = in_memory_index(dict(workspace))
    gatherer = Gatherer()
    count = TokenCounter(backend.count_tokens)
    results = []
    for i, case in enumerate(cases, 1):
        suggestion = suggestion_for(backend, case, index, gatherer, count, settings, version=i)
        line = suggestion.split("\n", 1)[0].rstrip()
        results.append({"path": case.path, "kind": case.kind, "target": case.target, "suggestion": line,
                        "exact": line == case.target.rstrip(), "similarity": edit_similarity(line, case.target.rstrip())})
        if progress:
            progress(i, len(cases))
    return {**summarise(results), "results": results}


PERPLEXITY_LENGTHS = (256, 1024, 4096)


def heldout_perplexity(backend, files: Sequence[SourceFile], windows: int = 6) -> dict[str, float]:
    """Perplexity of the held-out files joined in path-headed order (as training lays a repository
    out), by context length, over the same scored tokens at every length (engine.evaluate.perplexity);
    lengths the files are too short for are left out."""
    import torch

    from engine.evaluate.perplexity import documents, evaluate

    tokens = len(documents(backend.tok, files, concat=True)[0])
    lengths = [n for n in PERPLEXITY_LENGTHS if n < tokens]
    if not lengths:
        return {}
    with torch.inference_mode():
        result = evaluate(backend.model, backend.tok, files, lengths, windows=windows, concat=True,
                          device=backend.device, dtype=backend.dtype)
    # String keys, as JSON stores them: a result read back from before.json looks like a fresh one.
    return {str(length): round(v["ppl"], 3) for length, v in result["by_length"].items()}


def summarise(results: Sequence[dict]) -> dict:
    def pct(rows: Sequence[dict], key: str) -> float:
        return round(100 * sum(float(r[key]) for r in rows) / len(rows), 2) if rows else 0.0

    by_kind = {}
    for kind in EVAL_KINDS:
        rows = [r for r in results if r["kind"] == kind]
        by_kind[kind] = {"cases": len(rows), "exact_match": pct(rows, "exact")}
    return {"cases": len(results), "exact_match": pct(results, "exact"),
            "edit_similarity": pct(results, "similarity"), "by_kind": by_kind}
