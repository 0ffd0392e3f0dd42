"""End-to-end completion latency through the language server, measured like an editor feels it.

Starts `python -m lsp_server` on stdio, opens a real repository, deletes one line of a real file
and types it back character by character, asking for an inline completion at each pause (after
each word). Client-side wall time from request to answer is what the user waits for.

For each context budget (default 1K, 8K, 32K, 100K tokens) and with repository context on and off:
the first request (cold: nothing of this prompt in the engine's KV cache) and the rest (warm), p50 and
p95, the prompt size in tokens, how much of it the engine reused from its cache, and how many answers
came from the server's suggestion cache (typing through a suggestion, no model call).

    python benchmarks/lsp_latency.py                          # embedded default model, this repository
    python benchmarks/lsp_latency.py --model ~/models/CodeLlama-7b-hf --device cuda --budgets 1024,16384
    python benchmarks/lsp_latency.py --model /tmp/tiny --budgets 1024,8192 --line-count 1

Prints a markdown table. No thresholds: this script reports, it does not judge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from lsp_session import REPO, Editor, configure, percentile, start_server, stop_server, wait_ready
from pygls.lsp.client import LanguageClient

PAUSE_AFTER = set(" .(,:=[{")


def pick_lines(text: str, count: int) -> list[int]:
    """Lines worth typing: real code of medium length, spread through the file."""
    lines = text.split("\n")
    good = [i for i, line in enumerate(lines) if 30 <= len(line.strip()) <= 90 and not line.strip().startswith("#")]
    if not good:
        raise SystemExit("no suitable line to type in that file")
    step = max(len(good) // (count + 1), 1)
    return [good[min(len(good) - 1, step * (k + 1))] for k in range(count)]


async def run_config(client: LanguageClient, editor: Editor, text: str, lines: list[int], budget: int,
                     repo_context: bool, max_new: int) -> dict[str, Any]:
    configure(client, {"maxContextTokens": budget, "repositoryContext": repo_context, "maxNewTokens": max_new})
    cold: list[float] = []
    warm: list[float] = []
    prompt_tokens: list[int] = []
    cached: list[float] = []
    cache_hits = 0
    for line_no in lines:
        original = text.split("\n")
        target = original[line_no]
        indent = len(target) - len(target.lstrip())
        original[line_no] = target[:indent]
        editor.open("\n".join(original))
        column = indent
        first = True
        for i, ch in enumerate(target[indent:] + "\0"):
            at_pause = first or ch == "\0" or target[indent + i - 1] in PAUSE_AFTER
            if at_pause:
                elapsed, info = await editor.complete(line_no, column)
                status, prompt = info["status"], info["prompt"]
                (cold if first else warm).append(elapsed)
                if prompt.get("fromCache"):
                    cache_hits += 1
                elif status.get("lastPromptTokens"):
                    prompt_tokens.append(status["lastPromptTokens"])
                    cached.append(status["lastCachedTokens"] / max(status["lastPromptTokens"], 1))
                first = False
            if ch != "\0":
                editor.type_char(line_no, column, ch)
                column += 1
        editor.close()
    return {
        "budget": budget, "repo": repo_context, "cold": statistics.median(cold) if cold else float("nan"),
        "p50": percentile(warm, 0.5), "p95": percentile(warm, 0.95), "n": len(warm),
        "prompt": int(statistics.median(prompt_tokens)) if prompt_tokens else 0,
        "reuse": statistics.median(cached) if cached else 0.0, "cache_hits": cache_hits,
    }


async def main_async(args: argparse.Namespace) -> None:
    repo = Path(args.repo).resolve()
    file = repo / args.file
    text = file.read_text(encoding="utf-8")
    lines = pick_lines(text, args.line_count)
    init: dict[str, Any] = {"maxNewTokens": args.max_new_tokens, "device": args.device, "dtype": args.dtype}
    if args.model:
        init["model"] = args.model
    t0 = time.perf_counter()
    client = await start_server(repo, init, "lsp-latency-bench")
    status = await wait_ready(client)
    print(f"# LSP latency: {status['description']}, repository {repo.name} ({status['indexedFiles']} files "
          f"indexed), file {args.file}, {len(lines)} line(s) typed, maxNewTokens {args.max_new_tokens}; "
          f"server ready after {time.perf_counter() - t0:.1f} s\n")
    print("| budget | repo context | prompt tokens (p50) | cold ms | warm p50 ms | warm p95 ms | warm requests "
          "| KV reused (p50) | cache answers |")
    print("|---|---|---|---|---|---|---|---|---|")
    editor = Editor(client, file.as_uri())
    for budget in args.budgets:
        for repo_context in (True, False):
            r = await run_config(client, editor, text, lines, budget, repo_context, args.max_new_tokens)
            print(f"| {budget} | {'on' if repo_context else 'off'} | {r['prompt']} | {r['cold']:.0f} | {r['p50']:.0f} "
                  f"| {r['p95']:.0f} | {r['n']} | {100 * r['reuse']:.0f} % | {r['cache_hits']} |", flush=True)
    await stop_server(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the embedded default model)")
    parser.add_argument("--repo", default=str(REPO), help="repository to open (default: this one)")
    parser.add_argument("--file", default="lsp_server/completion.py", help="file to type in, relative to --repo")
    parser.add_argument("--budgets", default="1024,8192,32768,100000",
                        type=lambda s: [int(x) for x in s.split(",")], help="context budgets in tokens")
    parser.add_argument("--line-count", type=int, default=2, help="how many lines to retype per configuration")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
