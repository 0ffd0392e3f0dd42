"""Soak: the language server's memory over a long random editing session on a real repository.

Copies a real Python package (default: the installed `pygls`) into a temporary workspace, starts
`python -m lsp_server` on stdio against it and drives a seeded random session like a user's editor:
several files open, typing (one incremental didChange per keystroke, an inline-completion request at
each, some of them cancelled with `$/cancelRequest`, most superseded by the next keystroke), cursor
jumps, switches between open files, files closed and reopened, new files written to and deleted from
the workspace on disk, a `workspace/didChangeConfiguration` now and then and `codellama/getStatus`.

Every few seconds it reads the server's resident memory (VmRSS in /proc/PID/status) and prints, per
minute, the RSS and what the status reports, then whether every request was answered and whether the
server printed a traceback. The growth after warm-up is the last minute's RSS over the warm-up
minute's.

    python benchmarks/soak.py                     # 30 minutes, 4K-token budget, default model, CPU
    python benchmarks/soak.py --minutes 120       # the 2-hour run
    python benchmarks/soak.py --minutes 3 --seed 2 --budget 2048

CODELLAMA_TRACEMALLOC=FILE (see lsp_server/memory.py) makes the server write tracemalloc's top
allocation growth to FILE every minute. No thresholds: this script reports, it does not judge.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsp_session import Editor, collect_stderr, server_pid, start_server, stop_server, wait_ready
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient

from lsp_server.memory import resident_bytes

REQUEST_CANCELLED = -32800
PAUSE_AFTER = set(" .(,:=[{")
SCRATCH_FILES = 12  # names of files the session writes on disk (rewritten and deleted in turn)


def copy_package(name: str, dest: Path) -> tuple[Path, str]:
    """Copy an installed package's sources into `dest`; returns the workspace and "name version"."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is no installed package")
    source = Path(next(iter(spec.submodule_search_locations)))
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = f"stdlib of Python {sys.version.split()[0]}"
    workspace = dest / name
    shutil.copytree(source, workspace / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return workspace, f"{name} {version}"


@dataclass
class Counts:
    sent: int = 0
    answered: int = 0
    cancelled: int = 0  # answered with RequestCancelled
    errors: int = 0  # answered with any other error
    slowest_s: float = 0.0  # the longest wait for an answer since the last row
    pending: set[asyncio.Future[Any]] = field(default_factory=set)


@dataclass
class OpenFile:
    editor: Editor
    lines: list[str]
    line: int = 0
    column: int = 0


class Session:
    """The random editor: its open files, what it sent and what came back."""

    def __init__(self, client: LanguageClient, workspace: Path, rng: random.Random, budget: int) -> None:
        self.client, self.workspace, self.rng, self.budget = client, workspace, rng, budget
        self.files = sorted(p for p in workspace.rglob("*.py") if p.stat().st_size > 200)
        self.corpus = [line for p in self.files for line in p.read_text(encoding="utf-8").split("\n")
                       if 8 <= len(line.strip()) <= 80]
        self.open: dict[str, OpenFile] = {}
        self.current: OpenFile | None = None
        self.counts = Counts()
        self.next_id = 0
        self.settings_flip = False

    # ---- requests ---------------------------------------------------------------------------

    def request(self, method: str, params: Any) -> tuple[str, asyncio.Future[Any]]:
        self.next_id += 1
        msg_id = f"soak-{self.next_id}"
        fut = asyncio.wrap_future(self.client.protocol.send_request(method, params, msg_id=msg_id))
        self.counts.sent += 1
        self.counts.pending.add(fut)
        sent = time.monotonic()
        fut.add_done_callback(lambda f: self._answered(f, time.monotonic() - sent))
        return msg_id, fut

    def _answered(self, fut: asyncio.Future[Any], waited_s: float) -> None:
        self.counts.pending.discard(fut)
        if fut.cancelled():
            return  # never: the client does not cancel its futures, it asks the server
        self.counts.answered += 1
        self.counts.slowest_s = max(self.counts.slowest_s, waited_s)
        exc = fut.exception()
        if isinstance(exc, JsonRpcException) and getattr(exc, "code", None) == REQUEST_CANCELLED:
            self.counts.cancelled += 1
        elif exc is not None:
            self.counts.errors += 1

    async def complete(self, cancel: bool, wait: bool) -> None:
        f = self.current
        assert f is not None
        msg_id, fut = self.request(T.TEXT_DOCUMENT_INLINE_COMPLETION, T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
            text_document=T.TextDocumentIdentifier(f.editor.uri), position=T.Position(f.line, f.column)))
        if cancel:
            await asyncio.sleep(self.rng.uniform(0, 0.05))
            self.client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id=msg_id))
        if wait:
            await asyncio.wait([fut], timeout=120)

    # ---- what the user does -------------------------------------------------------------------

    def open_file(self, path: Path) -> OpenFile:
        uri = path.as_uri()
        if uri in self.open:
            return self.open[uri]
        text = path.read_text(encoding="utf-8")
        f = OpenFile(Editor(self.client, uri), text.split("\n"))
        f.editor.open(text)
        self.open[uri] = f
        self.jump(f)
        return f

    def close_file(self, f: OpenFile) -> None:
        f.editor.close()
        del self.open[f.editor.uri]
        if self.current is f:
            self.current = next(iter(self.open.values()), None)

    def jump(self, f: OpenFile) -> None:
        f.line = self.rng.randrange(len(f.lines))
        f.column = len(f.lines[f.line])

    async def type_line(self) -> None:
        """Start a new line below the cursor and type a line of the repository's code into it,
        with a typo fixed now and then."""
        f = self.current
        assert f is not None
        indent = f.lines[f.line][: len(f.lines[f.line]) - len(f.lines[f.line].lstrip())]
        f.editor.edit((f.line, f.column), (f.line, f.column), "\n" + indent)
        f.lines[f.line : f.line + 1] = [f.lines[f.line][: f.column], indent + f.lines[f.line][f.column :]]
        f.line, f.column = f.line + 1, len(indent)
        target = self.rng.choice(self.corpus).strip()
        for i, ch in enumerate(target):
            if self.rng.random() < 0.03:  # a typo, then backspace
                f.editor.type_char(f.line, f.column, "x")
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
                f.editor.edit((f.line, f.column), (f.line, f.column + 1), "")
            f.editor.type_char(f.line, f.column, ch)
            row = f.lines[f.line]
            f.lines[f.line] = row[: f.column] + ch + row[f.column :]
            f.column += 1
            pause = ch in PAUSE_AFTER or i == len(target) - 1
            # Each keystroke asks; most are superseded by the next one, some the editor cancels; at a
            # pause the user waits for the suggestion.
            await self.complete(cancel=not pause and self.rng.random() < 0.3, wait=pause)
            await asyncio.sleep(self.rng.uniform(0.03, 0.2))

    def write_scratch_file(self) -> None:
        """A file appears on disk (or is rewritten, or deleted) in the workspace."""
        path = self.workspace / f"scratch_{self.rng.randrange(SCRATCH_FILES)}.py"
        if path.exists() and self.rng.random() < 0.3:
            if path.as_uri() not in self.open:
                path.unlink()
            return
        lines = [self.rng.choice(self.corpus) for _ in range(self.rng.randint(20, 200))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def change_settings(self) -> None:
        self.settings_flip = not self.settings_flip
        config = dict(self.client.config)  # type: ignore[attr-defined]
        config.update(maxNewTokens=32 if self.settings_flip else 16,
                      multiline="never" if self.settings_flip else "auto")
        self.client.config = config  # type: ignore[attr-defined]
        self.client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"codellama": config}))

    async def step(self) -> None:
        """One random action, weighted like a session of mostly typing."""
        r = self.rng.random()
        if self.current is None or r < 0.04:
            candidates = self.files + sorted(self.workspace.glob("scratch_*.py"))
            self.current = self.open_file(self.rng.choice(candidates))
            if len(self.open) > 6:
                self.close_file(next(f for f in self.open.values() if f is not self.current))
        elif r < 0.06 and len(self.open) > 1:
            self.close_file(self.current)
        elif r < 0.16:
            self.current = self.rng.choice(list(self.open.values()))  # switch
        elif r < 0.26:
            self.jump(self.current)
            await self.complete(cancel=False, wait=True)
        elif r < 0.30:
            self.write_scratch_file()
        elif r < 0.31:
            self.change_settings()
        elif r < 0.34:
            _, fut = self.request("codellama/getStatus", {})
            await asyncio.wait([fut], timeout=60)
        else:
            await self.type_line()


async def sample_memory(pid: int, samples: list[tuple[float, int]], every: float, t0: float) -> None:
    while True:
        rss = resident_bytes(pid)
        if rss is None:
            return
        samples.append((time.monotonic() - t0, rss))
        await asyncio.sleep(every)


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    workspace, package = copy_package(args.package, tmp)
    init: dict[str, Any] = {"maxContextTokens": args.budget, "maxNewTokens": 16, "device": args.device,
                            "dtype": args.dtype}
    if args.model:
        init["model"] = args.model
    client = await start_server(workspace, init, "lsp-soak")
    stderr = collect_stderr(client)
    pid = server_pid(client)
    ready = await wait_ready(client)
    rng = random.Random(args.seed)
    session = Session(client, workspace, rng, args.budget)
    print(f"# Soak: {args.minutes} min, {package} ({len(session.files)} files, {ready['indexedFiles']} indexed), "
          f"budget {args.budget} tokens, {ready['description']}, seed {args.seed}; RSS when ready "
          f"{mb(resident_bytes(pid))} MB\n", flush=True)
    print("| minute | RSS MB | status: resident MB | KV cache MB | index files | index MB | requests sent "
          "| answered | cancelled | errors | slowest answer s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)

    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    sampler = asyncio.create_task(sample_memory(pid, samples, args.sample_seconds, t0))
    per_minute: list[int] = []
    kv_per_minute: list[int] = []  # the KV pool's bytes: it fills up to kvCacheMb by design
    minute = 0
    while minute < args.minutes:
        await session.step()
        if time.monotonic() - t0 >= 60 * (minute + 1):
            minute += 1
            _, fut = session.request("codellama/getStatus", {})
            await asyncio.wait([fut], timeout=60)
            status = fut.result() if fut.done() and fut.exception() is None else {}
            memory = status.get("memory") or {}
            rss = samples[-1][1] if samples else 0
            per_minute.append(rss)
            kv_per_minute.append(int(memory.get("kvCacheBytes") or 0))
            c = session.counts
            print(f"| {minute} | {mb(rss)} | {mb(memory.get('residentBytes'))} | {mb(memory.get('kvCacheBytes'))} "
                  f"| {memory.get('indexFiles', '-')} | {mb(memory.get('indexBytes'))} | {c.sent} | {c.answered} "
                  f"| {c.cancelled} | {c.errors} | {c.slowest_s:.1f} |", flush=True)
            c.slowest_s = 0.0
    sampler.cancel()
    if session.counts.pending:
        await asyncio.wait(list(session.counts.pending), timeout=120)
    c = session.counts
    unanswered = c.sent - c.answered
    await stop_server(client)
    await asyncio.sleep(0.2)
    err_text = b"".join(stderr).decode("utf-8", "replace")
    warm_index = min(args.warmup, len(per_minute)) - 1
    print()
    if per_minute and warm_index >= 0:
        warm, last = per_minute[warm_index], per_minute[-1]
        after = per_minute[warm_index:]
        slope = statistics.linear_regression(range(len(after)), after).slope if len(after) > 1 else 0.0
        print(f"RSS after warm-up (minute {warm_index + 1}): {mb(warm)} MB; at the end: {mb(last)} MB; growth "
              f"{100 * (last - warm) / warm:+.1f} % ({slope / 2**20:+.1f} MB/min); peak sample "
              f"{mb(max(s for _, s in samples))} MB")
        rest_warm, rest_last = warm - kv_per_minute[warm_index], last - kv_per_minute[-1]
        print(f"RSS less the KV caches (which fill up to kvCacheMb as spots and files accumulate): "
              f"{mb(rest_warm)} -> {mb(rest_last)} MB, growth {100 * (rest_last - rest_warm) / max(rest_warm, 1):+.1f} %")
    print(f"requests: {c.sent} sent, {c.answered} answered ({c.cancelled} cancelled, {c.errors} errors), "
          f"{unanswered} unanswered")
    print(f"server stderr: {'TRACEBACK' if 'Traceback' in err_text else 'no traceback'} "
          f"({len(err_text)} characters)")
    if "Traceback" in err_text:
        print(err_text[-4000:])
    if args.server_log:
        Path(args.server_log).write_text(err_text, encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if unanswered == 0 and "Traceback" not in err_text else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30, help="length of the session (120 for the 2-hour run)")
    parser.add_argument("--budget", type=int, default=4096, help="codellama.maxContextTokens")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--package", default="pygls", help="installed package copied as the repository")
    parser.add_argument("--warmup", type=int, default=3, help="minutes of warm-up before growth is measured")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--server-log", help="write the server's stderr (its warnings) to this file")
    parser.add_argument("--model", help="model directory (default: the embedded default model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
