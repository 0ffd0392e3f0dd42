"""The completion service: from a cursor to a post-processed suggestion.

Runs the engine on one worker thread so the event loop never blocks and the engine never runs two
requests at once. A newer request for a document supersedes the older one (which stops within one
decode step, or never starts); `$/cancelRequest` does the same. Recent suggestions are cached, and
typing the characters a suggestion predicted returns the rest of it without calling the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from engine.backends.base import Backend, BackendError, CompletionRequest, OutOfMemory, WorkspaceFiles
from engine.sourcefiles import is_secret_path

from .context.budget import TokenCounter
from .context.builder import SpotLayouts, line_of, query_words
from .context.gather import Gatherer, OpenDoc, Request
from .context.index import WorkspaceIndex
from .context.languages import language_of
from .context.privacy import may_share, redact_secrets
from .context.prompt import build_prompt, similar_limit
from .context.snippets import Snippet
from .documents import Document, DocumentStore, PositionError
from .engine_manager import EngineManager
from .lru import LRU
from .memory import HeapTrimmer
from .postprocess import Cursor, Suggestion, is_finished, pointless, postprocess, wants_multiline
from .settings import Settings

log = logging.getLogger(__name__)
MAX_DOCUMENT_STATES = 64  # documents whose layout and last prompt are kept
LAST_PROMPT_CHARS = 4_000_000
_WORD_TAIL = re.compile(r"[A-Za-z0-9_$]+$")
# Idle this long after a completion, the engine prefills the prompts at the spot the user left in the
# current document and at the last spots of the other documents used most recently, so returning to
# one finds its KV cache ready (<= 0: never; the environment variable is for
# benchmarks/editing_session.py's comparison).
IDLE_WARM_S = float(os.environ.get("CODELLAMA_IDLE_WARM_S", "0.3"))
WARM_SPOTS = 3
SAME_SPOT_LINES = 3  # a request this close to the last one is still typing at the same spot


@dataclass(frozen=True)
class Spot:
    """Where a completion was asked: the position and the text of its line then, to find the line
    again after lines were added or removed above it."""

    line: int
    character: int
    text: str


def find_spot(lines: list[str], spot: Spot, reach: int = 200) -> int | None:
    """The line nearest `spot.line` whose text is still `spot.text`, or None."""
    for distance in range(reach + 1):
        for i in (spot.line - distance, spot.line + distance):
            if 0 <= i < len(lines) and lines[i] == spot.text:
                return i
    return None


class Worker:
    """One daemon thread running submitted calls in order (a daemon, so a hung model call can
    never keep the process alive after the client has gone)."""

    def __init__(self, name: str = "engine") -> None:
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any] | None, Callable[[], Any]]] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fut, fn))
        return fut

    def stop(self) -> None:
        self._queue.put((None, lambda: None))

    def _run(self) -> None:
        while True:
            fut, fn = self._queue.get()
            if fut is None:
                return
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued: never reaches the engine
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the awaiting request
                fut.set_exception(exc)


@dataclass
class Job:
    uri: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # post-processing will cut the output here anyway: stop decoding

    def should_stop(self) -> bool:
        return self.finished or self.cancelled.is_set()


@dataclass
class Prefetch:
    """An accept-then-next run: the suggestion for (uri, text, cursor) as they will be after an accept."""

    job: Job
    future: concurrent.futures.Future[Any]
    key: tuple[str, str, int]


@dataclass
class CacheEntry:
    prefix_tail: str
    suffix_head: str
    suggestion: Suggestion
    when: float
    context_version: int  # the workspace index's generation when the prompt was built


class SuggestionCache:
    """Recent suggestions per document. A lookup hits when the text after the cursor is unchanged
    and the text before it is the cached prefix followed by the start of the suggestion (the user
    typed through it): the rest of the suggestion is the answer. A file changed in the workspace
    (a new index generation) makes the older entries miss: their prompts missed that change."""

    TAIL = 256

    def __init__(self, max_entries: int = 100, ttl_s: float = 300.0) -> None:
        self._entries: OrderedDict[tuple[str, str, str], tuple[str, CacheEntry]] = OrderedDict()
        self._max, self._ttl = max_entries, ttl_s
        self._lock = threading.Lock()

    def put(self, uri: str, text: str, cursor: int, suggestion: Suggestion, context_version: int = 0) -> None:
        if not suggestion:
            return
        entry = CacheEntry(text[max(0, cursor - self.TAIL) : cursor], text[cursor : cursor + self.TAIL],
                           suggestion, time.monotonic(), context_version)
        key = (uri, entry.prefix_tail, entry.suffix_head)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (uri, entry)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def get(self, uri: str, text: str, cursor: int, context_version: int = 0) -> Suggestion | None:
        now = time.monotonic()
        suffix_head = text[cursor : cursor + self.TAIL]
        with self._lock:
            for key in reversed(list(self._entries)):
                owner, entry = self._entries[key]
                if owner != uri or entry.suffix_head != suffix_head or now - entry.when > self._ttl \
                        or entry.context_version != context_version:
                    continue
                full = entry.suggestion.text
                for k in range(len(full), -1, -1):
                    typed = entry.prefix_tail + full[:k]
                    start = cursor - len(typed)
                    if start >= 0 and text.startswith(typed, start) and full[k:].strip():
                        self._entries.move_to_end(key)
                        return Suggestion(full[k:], entry.suggestion.replaces_line_suffix)
        return None

    def forget(self, uri: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == uri]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class CompletionResult:
    """A suggestion and where it goes, in LSP positions of the document."""

    text: str
    start: tuple[int, int]  # the cursor
    end: tuple[int, int]  # end of the replaced range (== start for a pure insertion)
    word_start: tuple[int, int]  # start of the identifier before the cursor (completion fallback)
    word: str
    from_cache: bool


def engine_failure(exc: Exception) -> str:
    """What to tell the user when the engine raised during a completion."""
    if isinstance(exc, OutOfMemory):
        return f"{exc}. Lower codellama.maxContextTokens (or codellama.kvCacheMb)."
    if isinstance(exc, BackendError):
        return str(exc)  # written for the user already
    return (f"the model failed during a completion ({type(exc).__name__}: {str(exc)[:200]}); "
            "the next request tries again. Details are in the server log.")


class NameGuidance(TypedDict):
    name_choices: tuple[str, ...] | None
    favored_names: tuple[str, ...] | None


def name_guidance(gatherer: Gatherer, req: Request, index: WorkspaceIndex | None,
                  settings: Settings) -> NameGuidance:
    """CompletionRequest's `name_choices` (the names the suggestion's first identifier must be one
    of at the cursor; the workspace is read only with repository context on) and `favored_names`
    (where no such rule applies, the names it leans toward, relative to the cursor), both by the setting
    `knownNames`."""
    if not settings.known_names:
        return {"name_choices": None, "favored_names": None}
    known = gatherer.known_names(req, index if settings.repository_context else None)
    choices = known.choices() if known is not None else None
    return {"name_choices": choices, "favored_names": None if choices else gatherer.favored_names(req)}


def workspace_files(snap: Request, index: WorkspaceIndex | None, settings: Settings) -> WorkspaceFiles | None:
    """CompletionRequest's `workspace`: the indexed files, which the local engine copies from beside
    the prompt (engine/prompt_copy.py). Repository context like the snippets: only with
    `repositoryContext` and `copyFromPrompt` on, never for a document outside the workspace, and
    with secrets redacted."""
    if index is None or snap.isolated or not (settings.repository_context and settings.copy_from_prompt):
        return None
    return WorkspaceFiles(index.snapshot, (index.serial, index.generation), snap.path, redact_secrets)


def cursor_info(doc: Document, cursor: int, line: int, multiline_mode: str) -> Cursor:
    text = doc.text
    line_start = doc.line_starts[line]
    line_end = doc.line_starts[line + 1] if line + 1 < doc.line_count else len(text)
    line_prefix = text[line_start:cursor]
    line_suffix = text[cursor:line_end].rstrip("\r\n")
    next_lines = text[line_end : line_end + 2000]
    prev_line = ""
    for i in range(line - 1, max(line - 50, -1), -1):
        candidate = doc.line_text(i)
        if candidate.strip():
            prev_line = candidate
            break
    return Cursor(line_prefix, line_suffix, next_lines, prev_line,
                  wants_multiline(line_prefix, line_suffix, multiline_mode))


def accepted_snapshot(snap: Request, suggestion: Suggestion, line_suffix: str) -> Request:
    """The request as it will be once `suggestion` is accepted: its text inserted at the cursor (over
    the rest of the line where it replaces it), the cursor after it."""
    end = snap.cursor + (len(line_suffix.rstrip()) if suggestion.replaces_line_suffix else 0)
    text = snap.text[: snap.cursor] + suggestion.text + snap.text[end:]
    return replace(snap, text=text, cursor=snap.cursor + len(suggestion.text), version=snap.version + 1)


def _prompt_chars(uri: str, record: dict[str, Any]) -> int:
    return len(record.get("prefix") or "") + len(record.get("suffix") or "")


class CompletionService:
    def __init__(self, docs: DocumentStore, engine: EngineManager, get_settings: Callable[[], Settings],
                 get_index: Callable[[], WorkspaceIndex | None], path_of: Callable[[str], str],
                 on_done: Callable[[dict[str, Any]], None], on_problem: Callable[[str], None],
                 outside_workspace: Callable[[str], bool] = lambda uri: False) -> None:
        self.docs = docs
        self.outside_workspace = outside_workspace  # by URI: a file opened from elsewhere on disk
        self._shareable: dict[str, tuple[tuple[int, int], bool]] = {}  # uri -> ((version, index), may share)
        self.engine = engine
        self.get_settings = get_settings
        self.get_index = get_index
        self.path_of = path_of
        self.on_done = on_done
        self.on_problem = on_problem
        self.worker = Worker()
        self.cache = SuggestionCache()
        self.jobs: dict[str, Job] = {}
        # The last prompt of the documents used most recently (codellama/lastPrompt), bounded by count
        # and by the characters of their prefixes and suffixes (a 100K-token prompt is ~400 KB).
        self.last_prompt: LRU[str, dict[str, Any]] = LRU(MAX_DOCUMENT_STATES, LAST_PROMPT_CHARS, _prompt_chars)
        self.last_uri: str | None = None
        # Worker-thread state: per-document layouts, gathered windows, token counts per backend.
        self._layouts: LRU[str, SpotLayouts] = LRU(MAX_DOCUMENT_STATES)
        self._gatherer = Gatherer()
        self._counter: tuple[Backend, TokenCounter] | None = None
        self._trim_heap = HeapTrimmer()
        self._prefetch: Prefetch | None = None  # the accept-then-next run queued or running, if any
        self._warm_timer: asyncio.TimerHandle | None = None
        # Per document, its last two spots; the document asked about most recently last.
        self._spots: OrderedDict[str, list[Spot]] = OrderedDict()
        self._warm_stop = threading.Event()  # set: the warming running now stops within a chunk

    # ---- event-loop side ----------------------------------------------------------------------

    async def complete(self, uri: str, line: int, character: int, invoked: bool) -> CompletionResult | None:
        started = time.perf_counter()
        settings = self.get_settings()
        doc = self.docs.get(uri)
        if not settings.enable or doc is None:
            return None
        try:
            cursor = doc.offset_at(line, character)
        except PositionError:
            return None
        if is_secret_path(self.path_of(uri)):
            return None  # a .env, a key, a credentials file: its content never goes into a prompt
        cur = cursor_info(doc, cursor, line, settings.multiline)
        if not invoked and pointless(cur.line_suffix):
            return None
        self._supersede(uri)
        self._stop_warming()
        self._note_spot(uri, Spot(line, character, cur.line_prefix + cur.line_suffix))
        pending = self._prefetch
        if pending is not None and pending.key == (uri, doc.text, cursor):
            # The user accepted before the prefetch was done: it is computing this very answer.
            await asyncio.wrap_future(pending.future)
            self._prefetch = None
        else:
            self.cancel_prefetch()  # a request the user waits for goes first

        hit = self.cache.get(uri, doc.text, cursor, self._context_version())
        if hit is not None:
            self._record_cache_hit(uri, doc, cursor, hit, started)
            return self._result(doc, cursor, cur, hit, from_cache=True)

        backend = self.engine.backend
        if backend is None and invoked and self.engine.loading:
            # Asked for explicitly (Alt+\): the editor will not ask again at this position, so the
            # answer waits for the model (the request stays cancellable meanwhile).
            while self.engine.loading and self.engine.backend is None:
                await asyncio.sleep(0.1)
            return await self.complete(uri, line, character, invoked)
        if backend is None:
            log.info("no model loaded yet: a suggestion at %s:%d:%d is answered with nothing", self.path_of(uri),
                     line + 1, character + 1)
            return None
        job = Job(uri)
        self.jobs[uri] = job
        snapshot = self.snapshot(doc, cursor)
        position = doc.position_at(cursor)
        future = self.worker.submit(lambda: self._run_then_trim(job, backend, settings, snapshot, cur, started,
                                                                position))
        try:
            suggestion = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            job.cancelled.set()  # $/cancelRequest: free the engine within a decode step
            raise
        finally:
            if self.jobs.get(uri) is job:
                del self.jobs[uri]
            self._schedule_warming()
        if suggestion is None or job.cancelled.is_set():
            return None
        if settings.prefetch_after_accept and suggestion:
            self._prefetch_after_accept(uri, backend, settings, snapshot, cur, suggestion)
        return self._result(doc, cursor, cur, suggestion, from_cache=False, text=snapshot.text)

    def _prefetch_after_accept(self, uri: str, backend: Backend, settings: Settings, snap: Request, cur: Cursor,
                               suggestion: Suggestion) -> None:
        """Queue the suggestion for the cursor after `suggestion` is accepted (llama.vim's speculative
        FIM): the editor asks for it right after an accept, and finds it in the cache. It runs only
        while nothing else waits (any request cancels it within a decode step), records no status."""
        accepted = accepted_snapshot(snap, suggestion, cur.line_suffix)
        doc = Document("", accepted.text)
        line = doc.position_at(accepted.cursor)[0]
        next_cur = cursor_info(doc, accepted.cursor, line, settings.multiline)
        if pointless(next_cur.line_suffix):
            return  # the editor would not ask there
        job = Job(uri)
        future = self.worker.submit(lambda: self._run_then_trim(job, backend, settings, accepted, next_cur,
                                                                time.perf_counter(), (line, 0), False))
        self._prefetch = Prefetch(job, future, (uri, accepted.text, accepted.cursor))

    def cancel_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.job.cancelled.set()
            self._prefetch = None

    def cancel_all(self) -> None:
        self.cancel_prefetch()
        self._stop_warming()
        for job in list(self.jobs.values()):
            job.cancelled.set()

    # ---- idle-time warming ----------------------------------------------------------------------

    def _stop_warming(self) -> None:
        if self._warm_timer is not None:
            self._warm_timer.cancel()
            self._warm_timer = None
        self._warm_stop.set()

    def _schedule_warming(self) -> None:
        if IDLE_WARM_S > 0 and not self.jobs:
            self._stop_warming()
            self._warm_timer = asyncio.get_running_loop().call_later(IDLE_WARM_S, self._warm_recent_documents)

    def _note_spot(self, uri: str, spot: Spot) -> None:
        spots = self._spots.pop(uri, [])
        if spots and abs(spots[-1].line - spot.line) <= SAME_SPOT_LINES:
            spots = spots[:-1]  # still typing there
        self._spots[uri] = [*spots, spot][-2:]
        while len(self._spots) > MAX_DOCUMENT_STATES:
            self._spots.popitem(last=False)

    def _warm_targets(self) -> list[tuple[str, Spot]]:
        """The spot left in the current document, then the last spots of the other documents used
        most recently before it."""
        recent = list(reversed(self._spots.items()))  # the current document first
        targets = [(uri, spots[-2]) for uri, spots in recent[:1] if len(spots) == 2]
        targets += [(uri, spots[-1]) for uri, spots in recent[1:]]
        return targets[:WARM_SPOTS]

    def _warm_recent_documents(self) -> None:
        """Snapshot the documents at the spots the user is likeliest to come back to, and have the
        worker prefill their prompts until a request comes."""
        self._warm_timer = None
        backend, settings = self.engine.backend, self.get_settings()
        if self.jobs or backend is None or not settings.enable:
            return
        snapshots = []
        for uri, spot in self._warm_targets():
            doc = self.docs.get(uri)
            line = find_spot(doc.text.split("\n"), spot) if doc is not None else None
            if doc is None or line is None:
                continue
            try:
                cursor = doc.offset_at(line, spot.character)
            except PositionError:
                continue
            snapshots.append((uri, self.snapshot(doc, cursor)))
        if snapshots:
            stop = self._warm_stop = threading.Event()
            self.worker.submit(lambda: self._warm(backend, settings, snapshots, stop))

    def _warm(self, backend: Backend, settings: Settings, snapshots: list[tuple[str, Request]],
              stop: threading.Event) -> None:
        """Worker thread: the prompts a request at each snapshot's cursor would send, prefilled."""
        for uri, snap in snapshots:
            if stop.is_set():
                return
            try:
                backend.warm(self._request(backend, settings, uri, snap, multiline=False)[0], should_stop=stop.is_set)
            except Exception:  # warming is opportunistic: a failure here must never reach a request
                log.exception("warming %s failed", uri)
                return

    def forget(self, uri: str) -> None:
        """A document was closed: drop everything kept for it."""
        self._supersede(uri)
        self.cancel_prefetch()
        self.last_prompt.pop(uri, None)
        self._shareable.pop(uri, None)
        self._layouts.pop(uri, None)
        self._spots.pop(uri, None)
        self.cache.forget(uri)
        self._gatherer.forget(self.path_of(uri))

    def _supersede(self, uri: str) -> None:
        old = self.jobs.pop(uri, None)
        if old is not None:
            old.cancelled.set()

    def _context_version(self) -> int:
        index = self.get_index()
        return index.generation if index is not None else 0

    def snapshot(self, doc: Document, cursor: int) -> Request:
        """Everything the worker needs, as immutable strings taken now (the document keeps
        changing on the event loop while the worker runs)."""
        path = self.path_of(doc.uri)
        if self.outside_workspace(doc.uri):  # only its own text: nothing from its directory, or ours
            return Request(path, doc.text, language_of(path, doc.language_id), cursor, doc.version, isolated=True)
        shared = [d for d in list(self.docs.docs.values()) if d.uri != doc.uri and self._may_share(d)]
        others = [OpenDoc(self.path_of(d.uri), d.text, language_of(self.path_of(d.uri), d.language_id), d.version)
                  for d in shared]
        shared_uris = {d.uri for d in shared}
        edits = [(self.path_of(e.uri), e.line) for e in self.docs.recent_edits(exclude_uri=doc.uri)
                 if e.uri in shared_uris]
        return Request(path, doc.text, language_of(path, doc.language_id), cursor, doc.version, others, edits)

    def _may_share(self, doc: Document) -> bool:
        """Whether another open document may serve as context (privacy.may_share), per version."""
        index = self.get_index()
        key = (doc.version, id(index))  # a new index comes with new exclude patterns
        known = self._shareable.get(doc.uri)
        if known is not None and known[0] == key:
            return known[1]
        indexable = index.filter.accepts if index is not None else None
        allowed = not self.outside_workspace(doc.uri) and may_share(self.path_of(doc.uri), doc.text, indexable)
        self._shareable[doc.uri] = (key, allowed)
        return allowed

    def _result(self, doc: Document, cursor: int, cur: Cursor, sugg: Suggestion, from_cache: bool,
                text: str | None = None) -> CompletionResult:
        text = doc.text if text is None else text
        if text is not doc.text:
            # The document changed while the model ran; positions refer to the version asked about.
            doc = Document(doc.uri, text, doc.version, doc.language_id, doc.encoding)
        start = doc.position_at(cursor)
        end = doc.position_at(cursor + len(cur.line_suffix.rstrip())) if sugg.replaces_line_suffix else start
        word = _WORD_TAIL.search(cur.line_prefix)
        word_text = word.group(0) if word else ""
        return CompletionResult(sugg.text, start, end, doc.position_at(cursor - len(word_text)), word_text,
                                from_cache)

    def _record_cache_hit(self, uri: str, doc: Document, cursor: int, sugg: Suggestion, started: float) -> None:
        latency = 1000 * (time.perf_counter() - started)
        record = dict(self.last_prompt.get(uri) or {"uri": uri, "prefix": None, "suffix": None, "snippets": []})
        line, character = doc.position_at(cursor)
        record.update(version=doc.version, position={"line": line, "character": character},
                      completion=sugg.text, fromCache=True, latencyMs=round(latency, 2))
        self.last_prompt[uri] = record
        self.last_uri = uri
        self.on_done({"lastLatencyMs": round(latency, 2), "lastFromCache": True,
                      "lastPromptTokens": None, "lastCachedTokens": None})

    # ---- worker side --------------------------------------------------------------------------

    def counter(self, backend: Backend) -> TokenCounter:
        if self._counter is None or self._counter[0] is not backend:
            self._counter = (backend, TokenCounter(backend.count_tokens))
        return self._counter[1]

    def gather_candidates(self, snap: Request, budget: int) -> list[Snippet]:
        """Snippets from open documents, recent edits, imports and the index (worker thread)."""
        query = query_words(snap.text, snap.cursor)
        return self._gatherer.gather(snap, self.get_index(), query, similar_limit=similar_limit(budget))

    def _request(self, backend: Backend, settings: Settings, uri: str, snap: Request,
                 multiline: bool) -> tuple[CompletionRequest, Any]:
        """The engine request for a completion at the snapshot's cursor, and the built context (worker)."""
        spots = self._layouts.get(uri) or SpotLayouts()
        index = self.get_index()  # one index for the whole request, though a reindex may replace it meanwhile
        built = build_prompt(snap, index, self._gatherer, budget=settings.prompt_budget(backend),
                             count=self.counter(backend),
                             repository_context=settings.repository_context, previous=spots.nearest(line_of(snap.text, snap.cursor)))
        spots.remember(built.layout)
        self._layouts[uri] = spots
        # A key typed or pasted into the document stays out of the prompt (and out of lastPrompt).
        request = CompletionRequest(
            prefix=redact_secrets(built.prefix), suffix=redact_secrets(built.suffix),
            fim_format=settings.fim_format, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
            stop=[] if multiline else ["\n"], speculative=settings.speculative_decoding,
            prompt_copy=settings.copy_from_prompt, workspace=workspace_files(snap, index, settings),
            **name_guidance(self._gatherer, snap, index, settings))
        return request, built

    def _run_then_trim(self, *args: Any) -> Suggestion | None:
        try:
            return self._run(*args)
        finally:
            self._trim_heap()  # give the engine's freed buffers back to the system now and then

    def _run(self, job: Job, backend: Backend, settings: Settings, snap: Request, cur: Cursor,
             started: float, position: tuple[int, int], shown: bool = True) -> Suggestion | None:
        """The suggestion for one cursor, cached; `shown` (a request the user waits for, not a
        prefetch) also records the prompt, the status and any failure."""
        if job.cancelled.is_set():
            return None  # superseded while queued
        context_version = self._context_version()
        request, built = self._request(backend, settings, job.uri, snap, cur.multiline)
        if job.cancelled.is_set():
            return None

        def on_text(partial: str) -> None:
            if is_finished(partial, cur):
                job.finished = True

        try:
            completion = backend.complete(request, should_stop=job.should_stop, on_text=on_text)
        except Exception as exc:
            self._failed(exc, shown)
            return None
        if job.cancelled.is_set():
            return None
        # Stopped by the token limit, or early (is_finished: post-processing will cut the output), the
        # output's last line is unfinished: post-processing trims it.
        truncated = completion.stop_reason == "max_tokens" or job.finished
        suggestion = postprocess(completion.text, cur, truncated=truncated)
        self.cache.put(job.uri, snap.text, snap.cursor, suggestion, context_version)
        if not shown:
            return suggestion
        latency = round(1000 * (time.perf_counter() - started), 2)
        timings = completion.timings
        self.last_prompt[job.uri] = {
            "uri": job.uri, "version": snap.version,
            "position": {"line": position[0], "character": position[1]},
            "fimFormat": settings.fim_format, "prefix": request.prefix, "suffix": request.suffix,
            "nameChoices": request.name_choices, "favoredNames": request.favored_names,
            "snippets": [{"path": s.path, "source": s.source, "startLine": s.start_line,
                          "endLine": s.end_line, "score": round(s.score, 4)} for s in built.snippets],
            "budgetTokens": built.budget, "promptTokens": timings.prompt_tokens or built.tokens,
            "completion": suggestion.text, "rawCompletion": completion.text,
            "stopReason": completion.stop_reason, "fromCache": False, "latencyMs": latency,
            "generatedTokens": timings.generated_tokens, "decodePasses": timings.decode_passes,
            "cachedTokens": timings.cached_tokens, "prefillMs": round(timings.prefill_ms, 2),
            "engineMs": round(timings.total_ms, 2),
        }
        self.last_uri = job.uri
        self.on_done({"lastLatencyMs": latency, "lastFromCache": False, "lastError": None,
                      "lastPromptTokens": timings.prompt_tokens, "lastCachedTokens": timings.cached_tokens})
        return suggestion

    def _failed(self, exc: Exception, shown: bool) -> None:
        """The engine raised. No error answer: the editor asks on every keystroke and would show one
        each time. The request gets no suggestion; the user sees why once (a message, the status), and
        the next request runs the engine again (its KV cache only ever holds finished steps)."""
        if not shown:
            log.info("accept-then-next prefetch failed: %s", exc)
            return
        problem = engine_failure(exc)
        log.error("completion failed: %s", problem, exc_info=not isinstance(exc, BackendError))
        self.on_problem(problem)
        self.on_done({"lastError": problem})
