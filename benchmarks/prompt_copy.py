"""Copying from the prompt and the workspace (engine/prompt_copy.py, the setting copyFromPrompt), off
and on, in one run on the same cursors.

The cursors are the adaptation benchmark's held-out ones (benchmarks/adaptation.py: 400 a package, at
line starts, after `.`/`(`/`=`/`,`, inside a name, before a name from a sibling module), completed
through the server's own prompt path (lsp_server/adapt/evaluate.py) by the embedded default model,
each cursor both ways in turn (which way goes first alternates, so load that drifts hits both alike).
Printed per package: exact match of the first line, edit similarity, latency p50 / p90 of the whole
request (prompt built, completion, post-processing) and the ratio on / off.

    .venv/bin/python benchmarks/prompt_copy.py [--packages flask,toolz] [--cases 400]

--monorepo-mb N puts N MB of other Python (the installed torch package's sources) in the workspace
ahead of the package, as in a monorepo: more than the copy's workspace budget (2 M tokens), so the
engine must choose which files to copy from (those nearest the cursor's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from crossfile import workspace  # noqa: E402

from engine.backends.local import load_local_backend  # noqa: E402  (crossfile put the repository on the path)
from engine.evaluate.crossfile_cases import ALL_PACKAGES  # noqa: E402
from engine.evaluate.infill import edit_similarity  # noqa: E402
from engine.train.sources import collect_repo  # noqa: E402
from lsp_server.adapt.data import split_workspace  # noqa: E402
from lsp_server.adapt.evaluate import line_cases, suggestion_for, workspace_modules  # noqa: E402
from lsp_server.context.budget import TokenCounter  # noqa: E402
from lsp_server.context.gather import Gatherer  # noqa: E402
from lsp_server.context.prompt import in_memory_index  # noqa: E402
from lsp_server.settings import Settings  # noqa: E402


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def other_code(megabytes: float) -> dict[str, str]:
    """About `megabytes` of Python that is not the package's: torch's sources, under `aaa/`."""
    texts: dict[str, str] = {}
    size = 0
    root = Path(torch.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if size >= megabytes * 1e6:
            break
        text = path.read_text(errors="replace")
        texts[f"aaa/torch/{path.relative_to(root)}"] = text
        size += len(text)
    return texts


def run_package(backend, root: Path, cases_wanted: int, other: dict[str, str]) -> dict[bool, dict[str, list[float]]]:
    files = collect_repo(root)
    texts = {f.path: f.text for f in files}
    # The adaptation's split and cursors (seed 0), so the figures line up with its "before" column.
    cases = line_cases(split_workspace(files, 0.2, 0).heldout, cases_wanted, 0, workspace_modules(list(texts)))
    index, count = in_memory_index({**other, **texts}), TokenCounter(backend.count_tokens)
    gatherer = Gatherer()
    out: dict[bool, dict[str, list[float]]] = {on: {"exact": [], "similarity": [], "ms": []} for on in (False, True)}
    for i, case in enumerate(cases):
        for on in ((False, True) if i % 2 else (True, False)):
            started = time.perf_counter()
            line = suggestion_for(backend, case, index, gatherer, count, Settings(copy_from_prompt=on),
                                  version=2 * i + on).split("\n", 1)[0].rstrip()
            out[on]["ms"].append(1000 * (time.perf_counter() - started))
            out[on]["exact"].append(float(line == case.target.rstrip()))
            out[on]["similarity"].append(edit_similarity(line, case.target.rstrip()))
    return out


def row(name: str, results: dict[bool, dict[str, list[float]]]) -> str:
    off, on = results[False], results[True]

    def pct(values: list[float]) -> str:
        return f"{100 * sum(values) / len(values):.1f}"

    return (f"| {name} | {len(on['exact'])} | {pct(off['exact'])} | {pct(on['exact'])} "
            f"| {100 * (sum(on['exact']) - sum(off['exact'])) / len(on['exact']):+.1f} "
            f"| {pct(off['similarity'])} | {pct(on['similarity'])} "
            f"| {statistics.median(off['ms']):.0f} / {p90(off['ms']):.0f} | {statistics.median(on['ms']):.0f} / "
            f"{p90(on['ms']):.0f} | {p90(on['ms']) / p90(off['ms']):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", default=",".join(p.name for p in ALL_PACKAGES),
                        help="comma-separated, of: " + ", ".join(p.name for p in ALL_PACKAGES) + " (default: all)")
    parser.add_argument("--cases", type=int, default=400, help="held-out cursors a package (default 400)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--monorepo-mb", type=float, default=0.0,
                        help="megabytes of other Python in the workspace before the package (default 0)")
    args = parser.parse_args()
    other = other_code(args.monorepo_mb) if args.monorepo_mb else {}

    torch.set_num_threads(args.threads)
    backend = load_local_backend(device="cpu")
    wanted = args.packages.split(",")
    print("| package | cases | exact off | exact on | gain (points) | edit sim. off | on | ms p50 / p90 off "
          "| on | p90 on / off |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    every: dict[bool, dict[str, list[float]]] = {on: {"exact": [], "similarity": [], "ms": []} for on in (False, True)}
    for pkg in (p for p in ALL_PACKAGES if p.name in wanted):
        results = run_package(backend, workspace(pkg), args.cases, other)
        for on in (False, True):
            for key, values in results[on].items():
                every[on][key] += values
        print(row(f"{pkg.name} {pkg.version}", results), flush=True)
    if every[True]["exact"]:
        print(row("**all**", every))
    backend.close()


if __name__ == "__main__":
    main()
