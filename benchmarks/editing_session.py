"""An editing session's latencies: keystrokes, jumps within a file, switches between open files and returns
to the previous spot, through the real language server over stdio on a real repository.

The workspace is a copy of an installed package (default: pygls, as benchmarks/soak.py uses). Three of its
larger files are open. Each round, in the current file:
  keystroke  - a character typed where one is typing (3, then more after each move)
  jump       - the first character typed on a new line in another function of the same file
  return     - back to the spot typed at before the jump: the first character typed there
  switch     - to the next open file, at the spot last typed at there: the first character
  accept     - Tab on the one-line suggestion shown after the keystrokes (after --accept-pause-ms of
               reading it): the editor inserts it and asks at the end of it (accept-then-next)
Every event is one didChange and one automatic inline-completion request, answered before the next;
before a move (jump, return, switch) the user pauses (--pause-ms, reading or clicking a tab), which is
when the server warms the other documents' prompts (lsp_server/completion.py, IDLE_WARM_S). A
typed character is never one the suggestion shown at that spot starts with, so no answer comes from the
suggestion cache: every request runs the engine. Each configuration (all features, then each feature off)
runs the same seeded session on a fresh server, for each prompt budget, in one run; the table gives p50 and
p95 per kind of event and each p50 over the keystroke p50.

    .venv/bin/python benchmarks/editing_session.py                      # 2K and 8K budgets, 6 rounds
    .venv/bin/python benchmarks/editing_session.py --budgets 8192 --rounds 10 --variants all no-speculative
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsp_session import Editor, percentile, start_server, stop_server, wait_ready
from soak import copy_package

FILES = ("lsp/_base_client.py", "protocol/json_rpc.py", "capabilities.py")
KINDS = ("keystroke", "jump", "return", "switch", "accept")
LETTERS = "qwertyuiopasdfghjklzxcvbnm"
# KV cache room: enough for one sequence at the budget, not two (the "one-sequence" variant).
BYTES_PER_POSITION = 8 * 2 * 320 * 2  # default model: layers x (K, V) x dim x bfloat16


def variants(budget: int) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Name -> (settings, server environment): everything on, then each feature off."""
    one_sequence_mb = max(16, (budget + 512) * BYTES_PER_POSITION * 3 // 2 // 2**20)
    return {
        "all": ({}, {}),
        "no-warming": ({}, {"CODELLAMA_IDLE_WARM_S": "0"}),
        "one-sequence": ({"kvCacheMb": one_sequence_mb}, {}),
        "no-speculative": ({"speculativeDecoding": False}, {}),
        "no-prefetch": ({"prefetchAfterAccept": False}, {}),
        # Twice the bytes a position (half the positions in the pool's budget); decode steps read it
        # without converting it to float32 (kvCacheDtype "auto" picks it for quantized small models).
        "float32-kv": ({"kvCacheDtype": "float32"}, {}),
        # Decode steps in PyTorch (engine/cpu_step.py, with speculation) instead of the native step.
        "eager-step": ({}, {"CODELLAMA_NATIVE_DECODE": "0"}),
    }


@dataclass
class Spot:
    editor: Editor
    lines: list[str]
    line: int
    column: int
    shown: str = ""  # the suggestion last shown here


class Session:
    def __init__(self, workspace: Path, editors: dict[str, Editor], rng: random.Random, trace: bool = False) -> None:
        self.rng = rng
        self.texts = {name: (workspace / name).read_text(encoding="utf-8").split("\n") for name in editors}
        self.editors = editors
        self.latencies: dict[str, list[float]] = {k: [] for k in KINDS}
        self.last_spot: dict[str, Spot] = {}
        self.trace = trace  # print each event (--trace)

    def function_lines(self, name: str) -> list[int]:
        """The first line of each function's body (after its signature, which may span lines)."""
        lines, starts = self.texts[name], []
        for i, line in enumerate(lines):
            if re.match(r"\s*(async\s+)?def ", line):
                end = next((j for j in range(i, min(i + 30, len(lines) - 1)) if lines[j].rstrip().endswith(":")), None)
                if end is not None:
                    starts.append(end + 1)
        return sorted(set(starts))

    def new_spot(self, name: str, away_from: Spot | None) -> Spot:
        """A new empty line at the top of a function body at least 40 lines from `away_from`."""
        candidates = [i for i in self.function_lines(name)
                      if away_from is None or away_from.lines is not self.texts[name] or abs(i - away_from.line) > 40]
        line = self.rng.choice(candidates)
        body = self.texts[name][line]
        indent = body[: len(body) - len(body.lstrip())] or "    "
        editor = self.editors[name]
        editor.edit((line, 0), (line, 0), indent + "\n")
        self._shift(name, line)
        self.texts[name].insert(line, indent)
        return Spot(editor, self.texts[name], line, len(indent))

    def _shift(self, name: str, inserted: int) -> None:
        for spot in self.last_spot.values():
            if spot.lines is self.texts[name] and spot.line >= inserted:
                spot.line += 1

    async def type_at(self, spot: Spot, kind: str | None) -> None:
        """One character no shown suggestion starts with, then a request; its latency counted as `kind`."""
        ch = next(c for c in LETTERS[self.rng.randrange(len(LETTERS)):] + LETTERS if not spot.shown.startswith(c))
        spot.editor.edit((spot.line, spot.column), (spot.line, spot.column), ch)
        text = spot.lines[spot.line]
        spot.lines[spot.line] = text[: spot.column] + ch + text[spot.column :]
        spot.column += 1
        elapsed, spot.shown = await spot.editor.inline(spot.line, spot.column)
        if kind is not None:
            self.latencies[kind].append(elapsed)
        if self.trace:
            await self.print_trace(spot.editor, kind or "warm-up", elapsed)

    async def print_trace(self, editor: Editor, kind: str, elapsed: float) -> None:
        """One line per event: its latency, how much of its prompt the engine found cached, and what the
        prompt held (characters of suffix and prefix, the snippets' first lines)."""
        request = editor.client.protocol.send_request_async
        status = await request("codellama/getStatus", {})
        prompt = await request("codellama/lastPrompt", {"uri": editor.uri}) or {}
        snippets = ",".join(f"{Path(s['path']).name}:{s['startLine']}" for s in prompt.get("snippets", []))
        print(f"  {kind:9} {elapsed:7.0f} ms  prompt {status.get('lastPromptTokens')}  "
              f"cached {status.get('lastCachedTokens')}  server {prompt.get('latencyMs')} engine {prompt.get('engineMs')} "
              f"prefill {prompt.get('prefillMs')}  suffix {len(prompt.get('suffix') or '')} "
              f"prefix {len(prompt.get('prefix') or '')}  [{snippets}]", file=sys.stderr, flush=True)


    async def accept(self, spot: Spot) -> None:
        """Tab: the one-line suggestion shown at `spot` is inserted, and the editor asks at its end."""
        text = spot.shown
        spot.editor.edit((spot.line, spot.column), (spot.line, spot.column), text)
        line = spot.lines[spot.line]
        spot.lines[spot.line] = line[: spot.column] + text + line[spot.column :]
        spot.column += len(text)
        elapsed, spot.shown = await spot.editor.inline(spot.line, spot.column)
        self.latencies["accept"].append(elapsed)


async def run_session(workspace: Path, settings: dict[str, Any], env: dict[str, str], args: argparse.Namespace
                      ) -> dict[str, list[float]]:
    saved = dict(os.environ)
    os.environ.update(env)  # the server inherits it
    try:
        client = await start_server(workspace, settings, name="editing-session", threads=args.threads or None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    pause = args.pause_ms / 1000
    try:
        await wait_ready(client)
        names = [str(Path("pygls") / f) for f in FILES]
        editors = {}
        for name in names:
            editors[name] = Editor(client, (workspace / name).as_uri())
            editors[name].open((workspace / name).read_text(encoding="utf-8"))
        session = Session(workspace, editors, random.Random(args.seed), trace=args.trace)
        for name in names:  # warm-up: each file has been typed in once
            spot = session.new_spot(name, None)
            await session.type_at(spot, None)
            session.last_spot[name] = spot
        current = names[0]
        for _ in range(args.rounds):
            here = session.last_spot[current]
            for _ in range(3):
                await session.type_at(here, "keystroke")
            if here.shown.strip() and "\n" not in here.shown:
                await asyncio.sleep(args.accept_pause_ms / 1000)  # reading it
                await session.accept(here)
            await asyncio.sleep(pause)
            there = session.new_spot(current, here)
            await session.type_at(there, "jump")
            for _ in range(2):
                await session.type_at(there, "keystroke")
            await asyncio.sleep(pause)
            await session.type_at(here, "return")
            await session.type_at(here, "keystroke")
            current = names[(names.index(current) + 1) % len(names)]
            await asyncio.sleep(pause)
            await session.type_at(session.last_spot[current], "switch")
            await session.type_at(session.last_spot[current], "keystroke")
        return session.latencies
    finally:
        await stop_server(client)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="editing-session-") as tmp:
        results: list[tuple[int, str, dict[str, list[float]]]] = []
        for budget in args.budgets:
            for name, (extra, env) in variants(budget).items():
                if args.variants and name not in args.variants:
                    continue
                workspace, label = copy_package(args.package, Path(tmp) / f"{budget}-{name}")
                settings = {"maxContextTokens": budget, "maxNewTokens": args.max_new_tokens, **extra}
                latencies = await run_session(workspace, settings, env, args)
                results.append((budget, name, latencies))
                print(f"done: budget {budget}, {name} ({label})", file=sys.stderr, flush=True)
        print(f"{label}, default model, CPU, {args.threads or 'all'} thread(s), {args.rounds} rounds, "
              f"{args.pause_ms} ms pause before each move, seed {args.seed}")
        print("| budget | variant | " + " | ".join(f"{k} p50 / p95 ms" for k in KINDS) + " | "
              + " | ".join(f"{k} / keystroke" for k in KINDS[1:]) + " |")
        print("|---|---|" + "---:|" * (2 * len(KINDS) - 1))
        for budget, name, lat in results:
            p50 = {k: percentile(lat[k], 0.5) for k in KINDS}
            cells = [f"{p50[k]:.0f} / {percentile(lat[k], 0.95):.0f}" for k in KINDS]
            ratios = [f"{p50[k] / p50['keystroke']:.1f}x" for k in KINDS[1:]]
            cells[-1] += f" ({len(lat['accept'])})"  # accepts happen only where a one-line suggestion showed
            print(f"| {budget} | {name} | " + " | ".join(cells + ratios) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the server (0: its own choice)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--pause-ms", type=int, default=1500, help="idle time before each move")
    parser.add_argument("--accept-pause-ms", type=int, default=400, help="reading a suggestion before Tab")
    parser.add_argument("--package", default="pygls")
    parser.add_argument("--trace", action="store_true", help="print each event's latency and cached tokens")
    parser.add_argument("--variants", nargs="*", help="run only these (default: all of them)")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
