"""Prompt-lookup speculative decoding: decode speed with and without it, in one run, on the default model.

Two sets of completions through the local backend's served path (`LocalBackend.complete`):
  copy       - real code (the installed pygls package): the cursor at the start of a line whose text also
               occurs elsewhere in the file (a repeated call, a similar branch); 48 tokens, multi-line
  humaneval  - HumanEval single-line infilling (the problem and the solution's other lines around the
               gap), stopping at the end of the line as the server asks for single-line suggestions
Each case runs without and with speculation, alternating which goes first. The table gives decode tokens
per second (tokens after the first over the time after the first), the ratio, and how many completions
came out identical (all of them, or speculation is wrong).

    .venv/bin/python benchmarks/speculative.py                       # bfloat16 and float32, 1 thread
    .venv/bin/python benchmarks/speculative.py --dtypes bfloat16 --cases 40
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.backends.base import CompletionRequest  # noqa: E402
from engine.backends.local import LocalBackend, load_local_backend  # noqa: E402
from engine.evaluate.humaneval import load_problems, select, single_line_cases  # noqa: E402
from engine.lookup import Speculation  # noqa: E402

PREFIX_CHARS = 6000  # about 1.5K tokens of the file before the cursor
SUFFIX_CHARS = 2000


def copy_requests(limit: int) -> list[CompletionRequest]:
    """Cursors at the start of lines whose text (16+ characters) occurs elsewhere in the same file."""
    spec = importlib.util.find_spec("pygls")
    assert spec is not None and spec.submodule_search_locations, "pygls is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    requests = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        counts: dict[str, int] = {}
        for line in lines:
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
        offset = 0
        for line in lines:
            body = line.strip()
            if len(body) >= 16 and counts[body] > 1:
                cursor = offset + len(line) - len(line.lstrip())
                requests.append(CompletionRequest(prefix=text[max(0, cursor - PREFIX_CHARS) : cursor],
                                                  suffix=text[cursor : cursor + SUFFIX_CHARS], max_new_tokens=48))
            offset += len(line) + 1
    return select(requests, limit=limit)


def humaneval_requests(limit: int) -> list[CompletionRequest]:
    return [CompletionRequest(prefix=c.prefix, suffix=c.suffix, max_new_tokens=48, stop=["\n"])
            for c in select(single_line_cases(load_problems()), limit=limit)]


@dataclass
class Tally:
    tokens: int = 0
    steps: int = 0  # generated tokens after the first
    decode_ms: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return 1000 * self.steps / self.decode_ms if self.decode_ms else float("nan")


def run(backend: LocalBackend, request: CompletionRequest, speculative: bool, tally: Tally):
    backend.pool.clear()  # the same (cold) prefill for both; only decoding differs
    completion = backend.complete(replace(request, speculative=speculative))
    t = completion.timings
    tally.tokens += t.generated_tokens
    tally.steps += max(t.generated_tokens - 1, 0)
    tally.decode_ms += t.decode_ms
    return completion.tokens


def measure(backend: LocalBackend, requests: list[CompletionRequest]) -> tuple[Tally, Tally, int]:
    plain, fast, identical = Tally(), Tally(), 0
    for i, request in enumerate(requests):
        order = (False, True) if i % 2 == 0 else (True, False)
        outputs = {s: run(backend, request, s, fast if s else plain) for s in order}
        identical += outputs[False] == outputs[True]
    return plain, fast, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--cases", type=int, default=60, help="completions per set")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = {"copy": copy_requests(args.cases), "humaneval": humaneval_requests(args.cases)}
    print(f"default model, CPU, {args.threads} thread(s), {Speculation()}")
    print("| dtype | set | cases | tokens | plain tok/s | speculative tok/s | ratio | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dtype in args.dtypes:
        backend = load_local_backend(device="cpu", dtype=dtype)
        backend.speculation = Speculation()
        run(backend, sets["humaneval"][0], False, Tally())  # warm-up: first-call allocations
        for name, requests in sets.items():
            plain, fast, identical = measure(backend, requests)
            print(f"| {dtype} | {name} | {len(requests)} | {plain.tokens} | "
                  f"{plain.tokens_per_s:.1f} | {fast.tokens_per_s:.1f} | "
                  f"{fast.tokens_per_s / plain.tokens_per_s:.2f}x | {identical}/{len(requests)} |", flush=True)


if __name__ == "__main__":
    main()
