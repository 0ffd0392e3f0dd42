"""Instruct code actions, the running side: which actions a range gets, and running one on the engine
(on the completion service's worker, so the engine never runs two requests at once) with the
repository context, cancellation and streamed progress, into an edit or an answer.

The editor sees plain LSP: `textDocument/codeAction` returns actions whose command is
`codellama.runAction`; running it returns an `ActionOutcome` and the server applies the edit with
`workspace/applyEdit` or shows the answer (server.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lsprotocol import types

from engine.backends.base import Backend, InstructRequest

from .. import capability as C
from ..completion import CompletionService
from ..context.builder import render_snippets, snippets_for_span
from ..context.languages import language_of
from ..context.privacy import holds_secret
from ..documents import Document, PositionError
from ..engine_manager import EngineManager
from ..settings import Settings
from . import prompts as A

RUN_ACTION = "codellama.runAction"
log = logging.getLogger(__name__)

PROMPT_OVERHEAD_TOKENS = 200  # system prompt, instruction and fences around the code


class ActionError(ValueError):
    """A user-facing reason an action cannot run (sent back as the command's error)."""


class Refused(ActionError):
    """The model serving actions does not follow instructions: the action is not run (the server
    shows the message and answers the command with stopReason "refused")."""


@dataclass
class ActionArgs:
    """The argument of `codellama.runAction`, as sent back by the client."""

    action: str
    uri: str
    start: tuple[int, int]
    end: tuple[int, int]
    question: str = ""
    diagnostics: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: Any) -> ActionArgs:
        if not isinstance(raw, dict):
            raise ActionError(f"{RUN_ACTION} takes one object argument {{action, uri, range}}")
        action, uri = raw.get("action"), raw.get("uri")
        rng: Any = raw.get("range")
        if action not in A.ACTIONS:
            raise ActionError(f"unknown action {action!r}; one of {', '.join(A.ACTIONS)}")
        if not isinstance(uri, str):
            raise ActionError("the argument needs the document's `uri`")
        try:
            start = (int(rng["start"]["line"]), int(rng["start"]["character"]))
            end = (int(rng["end"]["line"]), int(rng["end"]["character"]))
        except (TypeError, KeyError, ValueError):
            raise ActionError("the argument needs a `range` {start: {line, character}, end: {...}}") from None
        question = raw.get("question") or ""
        if action == "ask" and not (isinstance(question, str) and question.strip()):
            raise ActionError("Ask needs a question: pass it as the argument's `question`")
        diagnostics = [str(d) for d in raw.get("diagnostics") or [] if isinstance(d, str)]
        return cls(action, uri, start, end, str(question), diagnostics)


Range = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Proposal:
    """The edit an answer proposes; `edit` is None when it was rejected (`problem` says why, `preview`
    shows it instead)."""

    target_uri: str
    edit_range: Range
    new_text: str
    edit: types.WorkspaceEdit | None
    problem: str | None = None
    preview: str | None = None


@dataclass
class ActionOutcome:
    action: str
    answer: str  # the model's text, whole
    stop_reason: str
    generated_tokens: int
    edit: types.WorkspaceEdit | None = None
    edit_range: Range | None = None
    new_text: str | None = None
    target_uri: str | None = None  # where the edit goes (the document, or a test file)
    message: str | None = None  # why there is no edit, or why the answer stopped early (for the user)
    rejected: bool = False  # the edit was not made: it would have broken the code (message says how)
    preview: str | None = None  # markdown shown instead of the answer: a rejected edit and why

    def with_proposal(self, proposal: Proposal | str | None) -> ActionOutcome:
        """The outcome with the edit the answer proposes, or with why there is none (a message)."""
        if proposal is None:
            return self
        if isinstance(proposal, str):
            return replace(self, message=proposal)
        return replace(self, edit=proposal.edit, edit_range=proposal.edit_range, new_text=proposal.new_text,
                       target_uri=proposal.target_uri, rejected=proposal.problem is not None,
                       message=proposal.problem or self.message, preview=proposal.preview)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "answer": self.answer, "stopReason": self.stop_reason,
                               "generatedTokens": self.generated_tokens, "message": self.message}
        if self.edit_range is not None:
            (sl, sc), (el, ec) = self.edit_range
            out["edit"] = {"uri": self.target_uri, "newText": self.new_text,
                           "range": {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}}
        return out


def _diagnostic_text(d: types.Diagnostic) -> str:
    where = f"line {d.range.start.line + 1}"
    source = f"{d.source}: " if d.source else ""
    return f"{where}: {source}{d.message}"


class ActionService:
    def __init__(self, completion: CompletionService, instruct_engine: EngineManager,
                 get_settings: Callable[[], Settings], root: Callable[[], Path | None],
                 can_create_files: Callable[[], bool], disabled_support: Callable[[], bool] = lambda: False) -> None:
        self.completion = completion
        self.instruct_engine = instruct_engine  # loads `instructModel` (the completion model's is completion.engine)
        self.docs = completion.docs
        self.get_settings = get_settings
        self.root = root
        self.can_create_files = can_create_files
        self.disabled_support = disabled_support  # the client shows actions greyed out with a reason

    # ---- can the model follow instructions? ---------------------------------------------------

    def capability(self) -> C.Capability:
        """Of the model that would serve actions: `instructModel`, else the completion model serving."""
        return C.for_actions(self.get_settings(), self.completion.engine, self.instruct_engine)

    def check_capable(self, title: str) -> None:
        """Raises Refused when the model serving actions does not follow instructions."""
        found = self.capability()
        if not found.capable:
            raise Refused(f"{title} was not run: {C.refusal(found)}")

    # ---- offering -----------------------------------------------------------------------------

    def offered(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        doc = self.docs.get(params.text_document.uri)
        if doc is None or not self.get_settings().enable:
            return []
        try:
            start = doc.offset_at(params.range.start.line, params.range.start.character)
            end = doc.offset_at(params.range.end.line, params.range.end.character)
        except PositionError:
            return []
        span = A.target_span(doc.text, start, end)
        only = params.context.only or []
        found = self.capability()
        disabled = None
        if not found.capable:
            if not self.disabled_support():
                return []  # nothing this model can do; a client that can shows why (below)
            disabled = types.CodeActionDisabled(reason=C.disabled_reason(found))
        diagnostics = [_diagnostic_text(d) for d in params.context.diagnostics or []]
        rng = {"start": {"line": params.range.start.line, "character": params.range.start.character},
               "end": {"line": params.range.end.line, "character": params.range.end.character}}
        out = []
        for action in A.ACTIONS.values():
            if span is None and action.id != "ask":
                continue  # nothing to work on but a question
            if only and not any(action.kind == k or action.kind.startswith(f"{k}.") for k in only):
                continue
            arg: dict[str, Any] = {"action": action.id, "uri": doc.uri, "range": rng}
            if action.id == "fix" and diagnostics:
                arg["diagnostics"] = diagnostics
            title = action.title
            if action.id == "docstring" and A.doc_word(language_of(self.completion.path_of(doc.uri),
                                                                   doc.language_id)) != "docstring":
                title = "Code Llama: Add doc comment"
            out.append(types.CodeAction(
                title=title, kind=action.kind,
                diagnostics=list(params.context.diagnostics or []) if action.id == "fix" else None,
                disabled=disabled, command=types.Command(title=title, command=RUN_ACTION, arguments=[arg])))
        return out

    # ---- running ------------------------------------------------------------------------------

    async def run(self, args: ActionArgs, backend: Backend, cancelled: threading.Event,
                  on_text: Callable[[str], None] | None = None) -> ActionOutcome:
        doc = self.docs.get(args.uri)
        if doc is None:
            raise ActionError(f"{args.uri} is not open")
        try:
            start = doc.offset_at(*args.start)
            end = doc.offset_at(*args.end)
        except PositionError as exc:
            raise ActionError(f"the range is outside the document: {exc}") from None
        span = A.target_span(doc.text, start, end)
        if span is None and args.action != "ask":
            raise ActionError("no code here: select some, or put the cursor inside a function")
        span = span or (start, start)
        settings = self.get_settings()
        snapshot = self.completion.snapshot(doc, span[0])
        self.completion.cancel_prefetch()
        future = self.completion.worker.submit(
            lambda: self._generate(args, backend, settings, snapshot, span, cancelled, on_text))
        try:
            answer, stop_reason, n_tokens = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancelled.set()  # $/cancelRequest: the worker stops within one decode step
            raise
        except ActionError:
            raise
        except Exception as exc:  # the engine raised: the user asked for this action, so say it failed
            log.error("code action %s failed", args.action, exc_info=True)
            raise ActionError(f"the model failed during the action ({type(exc).__name__}: {str(exc)[:200]}); "
                              "run it again") from exc
        outcome = ActionOutcome(args.action, answer, stop_reason, n_tokens)
        if stop_reason == "cancelled":
            outcome.message = "cancelled"
            return outcome
        if stop_reason == "repetition":
            outcome.message = "stopped early: the model started repeating itself"
        elif stop_reason == "length":
            outcome.message = f"stopped at a paragraph break after about {A.ANSWER_SOFT_CHARS:,} characters"
        current = self.docs.get(args.uri)
        if current is None or current.text != snapshot.text:
            if A.ACTIONS[args.action].result in ("replace", "docstring"):
                outcome.message = "the document changed while Code Llama was working; run the action again"
                return outcome
        asked = Document(doc.uri, snapshot.text, doc.version, doc.language_id, doc.encoding)
        return outcome.with_proposal(self._propose(args.action, answer, asked, snapshot.path, snapshot.language, span))

    def _generate(self, args: ActionArgs, backend: Backend, settings: Settings, snap: Any,
                  span: tuple[int, int], cancelled: threading.Event,
                  on_text: Callable[[str], None] | None) -> tuple[str, str, int]:
        if cancelled.is_set():
            return "", "cancelled", 0
        count = self.completion.counter(backend)
        code = snap.text[span[0] : span[1]]
        max_new = min(settings.instruct_max_new_tokens, max(backend.context_length // 2, 16))
        room = backend.context_length - max_new - PROMPT_OVERHEAD_TOKENS - count(args.question)
        code_tokens = count(code)
        if code_tokens > room:
            raise ActionError(f"the selection is {code_tokens} tokens; the model takes about {max(room, 0)} "
                              "here: select less")
        context = ""
        context_room = min(settings.prompt_budget(backend) // 2, room - code_tokens)
        if settings.repository_context and context_room >= 64:
            candidates = self.completion.gather_candidates(snap, context_room)
            chosen, _ = snippets_for_span(candidates, snap.text, span[0], span[1], snap.path, snap.language,
                                          context_room, count)
            context = render_snippets(chosen, snap.language)
        user = A.user_message(args.action, code or lines_around(snap.text, span[0]), snap.language,
                              snap.path, context, args.question, args.diagnostics)
        if holds_secret(user):
            raise ActionError("the code holds what looks like a key or token; Code Llama does not put "
                              "secrets into a prompt")
        request = InstructRequest(user=user, system=A.SYSTEM_PROMPT, max_new_tokens=max_new,
                                  temperature=settings.temperature)
        if A.ACTIONS[args.action].result != "answer":
            completion = backend.instruct(request, should_stop=cancelled.is_set, on_text=on_text)
            reason = "cancelled" if cancelled.is_set() else completion.stop_reason
            return completion.text, reason, len(completion.tokens)
        # An answer ends where it starts repeating itself or grows past a sensible length
        # (instructMaxNewTokens stays the hard limit).
        cut: list[tuple[int, str]] = []

        def watch(text: str) -> None:
            if not cut:
                found = A.answer_cut(text)
                if found is not None:
                    cut.append(found)
            if on_text is not None:
                on_text(text)

        completion = backend.instruct(request, should_stop=lambda: cancelled.is_set() or bool(cut),
                                      on_text=watch)
        if cancelled.is_set():
            return completion.text, "cancelled", len(completion.tokens)
        if cut:
            return A.finish_answer(completion.text[: cut[0][0]]), cut[0][1], len(completion.tokens)
        return completion.text, completion.stop_reason, len(completion.tokens)

    def _propose(self, action: str, answer: str, doc: Document, path: str, language: str,
                 span: tuple[int, int]) -> Proposal | str | None:
        """The edit `answer` makes to `doc` for `action`, or why it makes none (None: it makes none by design)."""
        kind = A.ACTIONS[action].result
        text = doc.text
        if kind == "replace":
            code = A.extract_code(answer, language)
            new = A.fit_code(code, text, span[0], ends_with_newline=text[span[0]:span[1]].endswith("\n"))
            if not new.strip():
                return "the model returned no code"
            return _text_edit(doc, span[0], span[1], new, answer, language, path)
        if kind == "docstring":
            found = A.docstring_edit(text, span, language, A.docstring_text(answer, language))
            if found is None:
                return f"the model returned no {A.doc_word(language)}"
            return _text_edit(doc, found.start, found.end, found.text, answer, language, path)
        if kind == "tests":
            return self._tests_edit(answer, path, language)
        return None  # an answer-only action proposes nothing

    def _tests_edit(self, answer: str, path: str, language: str) -> Proposal | str:
        """Test code into the test file the language expects: appended when it exists, created when
        the client can create files, else only shown as an answer."""
        code = A.extract_code(answer, language)
        root = self.root()
        if not code.strip():
            return "the model returned no test code"
        if root is None:
            return "no workspace folder to put a test file in; the tests are in the answer"
        rel = A.tests_path_for(path, language, has_tests_dir=(root / "tests").is_dir())
        target = root / rel
        uri = target.as_uri()
        open_doc = self.docs.get(uri)
        existing = open_doc.text if open_doc is not None else (
            target.read_text(encoding="utf-8", errors="replace") if target.is_file() else None)
        if existing is not None:
            doc = open_doc or Document(uri, existing, 0, language, self.docs.encoding)
            sep = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
            # A file that is not open has no version to check.
            return _text_edit(doc, len(existing), len(existing), sep + code + "\n", answer, language, rel,
                              versioned=open_doc is not None)
        if not self.can_create_files():
            return f"the client cannot create {rel}; the tests are in the answer"
        new = code + "\n"
        start: Range = ((0, 0), (0, 0))
        rejected = _rejection(answer, "", 0, 0, new, language, rel, start)
        if rejected is not None:
            return Proposal(uri, start, new, None, *rejected)
        return Proposal(uri, start, new, types.WorkspaceEdit(document_changes=[
            types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True)),
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=[types.TextEdit(range=types.Range(types.Position(0, 0), types.Position(0, 0)), new_text=new)])]))


def _text_edit(doc: Document, start: int, end: int, new: str, answer: str, language: str, path: str,
               versioned: bool = True) -> Proposal:
    """One text edit; `versioned` makes the client refuse it if the document moved on meanwhile.
    No edit (a preview instead) when it would leave Python code that no longer parses."""
    rng = (doc.position_at(start), doc.position_at(end))
    rejected = _rejection(answer, doc.text, start, end, new, language, path, rng)
    if rejected is not None:
        return Proposal(doc.uri, rng, new, None, *rejected)
    return Proposal(doc.uri, rng, new, types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version if versioned else None),
        edits=[types.TextEdit(range=types.Range(types.Position(*rng[0]), types.Position(*rng[1])), new_text=new)])]))


def _rejection(answer: str, text: str, start: int, end: int, new: str, language: str, path: str,
               rng: Range) -> tuple[str, str] | None:
    """Why the edit would break Python code, and the preview shown instead; None when it would not."""
    if language != "python":
        return None  # no cheap check there: the edit goes in as before
    problem = A.python_edit_problem(text, start, end, new)
    if problem is None:
        return None
    (sl, _), (el, _) = rng
    where = f"line {sl + 1}" if sl == el else f"lines {sl + 1}–{el + 1}"
    where = f"the new file {path}" if not text else f"{where} of {path}"
    message = f"not applied: with it, {path} would not be valid Python ({problem})"
    preview = (f"_{message[0].upper()}{message[1:]}._\n\n"
               f"What Code Llama proposed for {where}:\n\n{A.fenced(new, language)}\n\n"
               f"## The model's answer\n\n{answer.strip()}\n")
    return message, preview


def lines_around(text: str, offset: int, n: int = 20) -> str:
    """`n` lines either side of `offset`: what a question asked on a blank line is about."""
    lo = offset
    for _ in range(n):
        lo = text.rfind("\n", 0, max(lo - 1, 0)) if lo > 0 else -1
        if lo < 0:
            break
    hi = offset
    for _ in range(n):
        hi = text.find("\n", hi + 1)
        if hi < 0:
            break
    return text[lo + 1 : len(text) if hi < 0 else hi]
