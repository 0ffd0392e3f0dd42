"""pygls' LSP protocol, hardened so that every request gets a response.

Plain pygls 2.1 leaves some requests unanswered, and an editor then waits forever:
- params that do not match the method's type (the message fails to deserialize before any handler
  runs): answered here with -32602 InvalidParams;
- messages that are no JSON-RPC 2.0 request (a missing or wrong "jsonrpc", an array, a number, an
  id with neither method nor result): answered with -32600 InvalidRequest when they carry an id;
- requests after `shutdown`: answered with -32600;
- unparseable JSON: answered with -32700 ParseError, for the request's id when it can still be read
  from the broken text, else with id null; JSON nested deeper than the parser goes: -32600 for its id
  (see `receive`, which the read loops in lsp_server/transport.py call with each frame's body).
Params of custom methods are kept as plain dicts (`robust_converter`), and may be left out.

The open-document handlers are also replaced: the server keeps its own document store
(lsp_server/documents.py), so pygls' copy of every buffer is not kept.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import attrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
    default_converter,
)
from pygls.protocol.language_server import lsp_method

from .framing import envelope_members

log = logging.getLogger(__name__)

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
PARSE_ERROR = -32700


@attrs.define
class BadRequest:
    """A request whose envelope was readable but which cannot be handled: answer it with `code`."""

    id: Any
    method: Any
    code: int
    message: str
    jsonrpc: str = "2.0"


def valid_id(msg_id: Any) -> int | str | None:
    """The id to answer with: ids that are no string or integer become null."""
    if isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool)):
        return msg_id
    return None


def _keep_raw(obj: dict[str, Any], cls: type) -> Any:
    if cls is not JsonRPCResponseMessage:
        obj = {"params": None, **obj}  # JSON-RPC lets a request or notification leave params out
    return cls(**obj)


def robust_converter():  # type: ignore[no-untyped-def]
    """pygls' converter, except that the params of custom and unknown methods stay plain dicts.
    (pygls turns them into namedtuples, building a class per object: a hostile message with 100K
    keys would take minutes to parse.)"""
    converter = default_converter()
    for cls in (JsonRPCRequestMessage, JsonRPCNotification, JsonRPCResponseMessage):
        converter.register_structure_hook(cls, _keep_raw)
    return converter


class RobustProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]) -> Any:
        if isinstance(data, dict) and "method" in data and "id" in data and data.get("jsonrpc") != self.VERSION:
            return BadRequest(data["id"], data["method"], INVALID_REQUEST, "Not a JSON-RPC 2.0 request")
        if isinstance(data, dict) and {"jsonrpc", "id"} <= data.keys() \
                and not {"method", "result", "error"} & data.keys():
            # Neither a request nor a response (say, a request that lost its method): the sender
            # is waiting for an answer to this id.
            return BadRequest(data["id"], None, INVALID_REQUEST, "A request needs a method")
        if isinstance(data, dict) and "method" in data and "id" in data and "jsonrpc" in data:
            # A request whose id or method could not be used as such (pygls would fail on an
            # unhashable id, or a method that is no string).
            if valid_id(data["id"]) is None or not isinstance(data["method"], str):
                return BadRequest(data["id"], data["method"], INVALID_REQUEST,
                                  "A request needs a string or integer id and a string method")
            if self._is_notification(data["method"]):
                # pygls would structure it as the notification, drop the id and never answer.
                return BadRequest(data["id"], data["method"], INVALID_REQUEST,
                                  f"{data['method']} is a notification: send it without an id")
            if "result" in data or "error" in data:
                # pygls would take it for a response and drop it, while its sender waits.
                return BadRequest(data["id"], data["method"], INVALID_REQUEST,
                                  "A message cannot be both a request and a response")
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and "method" in data:
                log.warning("invalid params for %r (id %r): %s", data.get("method"), data.get("id"),
                            exc.__cause__ or exc)
                detail = str(exc.__cause__ or exc)[:500]
                return BadRequest(data.get("id"), data.get("method"), INVALID_PARAMS,
                                  f"Invalid params for {data.get('method')!r}: {detail}")
            raise  # a notification or a response: nothing to answer

    def _is_notification(self, method: str) -> bool:
        """True for the LSP methods that are notifications (their message type has no id)."""
        message_type = self.get_message_type(method)
        return message_type is not None and attrs.has(message_type) and "id" not in attrs.fields_dict(message_type)

    def handle_message(self, message: Any) -> None:
        if isinstance(message, BadRequest):
            self._reply_error(message.id, message.code, message.message)
            return
        if isinstance(message, list):
            # A JSON-RPC batch, which LSP does not allow: refuse each request in it under its own id
            # (its sender waits for those), or the whole batch once when it holds none.
            ids: list[int | str | None] = [*batch_request_ids(message)] or [None]
            for batch_id in ids:
                self._reply_error(batch_id, INVALID_REQUEST, "LSP does not allow batches: send each message alone")
            return
        if not hasattr(message, "jsonrpc") or message.jsonrpc != self.VERSION:
            # Not a JSON-RPC 2.0 message: answer it when it looks like a request (or is no object
            # at all: a number, a string, null).
            if isinstance(message, dict):
                is_request, msg_id = "method" in message and "id" in message, message.get("id")
            else:
                is_request = hasattr(message, "id") and hasattr(message, "method")
                is_request = is_request or not hasattr(message, "jsonrpc")
                msg_id = getattr(message, "id", None)
            if is_request:
                self._reply_error(msg_id, INVALID_REQUEST, "Not a JSON-RPC 2.0 request")
            else:
                log.warning("ignoring a message that is not JSON-RPC 2.0: %.200r", message)
            return
        if self._shutdown and hasattr(message, "method") and hasattr(message, "id") \
                and message.method != types.EXIT:
            self._reply_error(message.id, INVALID_REQUEST, "The server is shutting down")
            return
        super().handle_message(message)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        if valid_id(msg_id) is None:  # pygls would fail on an unhashable id
            log.warning("ignoring $/cancelRequest for id %.100r", msg_id)
            return
        super()._handle_cancel_notification(msg_id)

    def _run_generator(self, future: Any, *, gen: Any, result_future: Any) -> None:
        """pygls runs a built-in generator handler (workspace/executeCommand) by starting the handler
        it yields under an id of its own: `$/cancelRequest` for the client's id cancelled and answered
        only the outer request, while the command (a code action generating thousands of tokens) ran
        on and kept the engine busy. Cancelling the outer request now cancels the command too (whose
        cancellation stops the engine within one decode step); a finished command's entry is dropped
        (pygls kept one per executeCommand)."""
        before = set(self._request_futures)
        super()._run_generator(future, gen=gen, result_future=result_future)
        for key in self._request_futures.keys() - before:
            child = self._request_futures[key]
            child.add_done_callback(partial(self._forget_future, key))
            result_future.add_done_callback(lambda f, child=child: child.cancel() if f.cancelled() else None)

    def _forget_future(self, key: Any, _done: Any) -> None:
        self._request_futures.pop(key, None)

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None,
                         kwargs: Any = None) -> None:
        """pygls files the future of every coroutine handler under its id, and takes it out when the
        answer is sent; a notification has no answer, so the future of each one with an async
        handler (`workspace/didChangeConfiguration`, `initialized`) stayed for good. Dropped here
        once done."""
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        if callback == self._check_handler_result:  # a notification
            future = self._request_futures.get(msg_id)
            if future is not None:
                future.add_done_callback(lambda _: self._request_futures.pop(msg_id, None))

    def receive(self, body: bytes) -> None:
        """Parse and handle one frame's body; answer it when it is no JSON. Only the top level is
        structured as a message (pygls' reader ran `structure_message` on every nested object, so
        that a request whose params held something shaped like a broken notification was dropped)."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            self.report_unparseable(body, exc)
            return
        try:
            message = self.structure_message(data) if isinstance(data, dict) else data
        except Exception as exc:  # a notification or response whose params do not fit: nothing to answer
            log.warning("ignoring a message that cannot be read: %s", exc.__cause__ or exc)
            return
        try:
            self.handle_message(message)
        except Exception:
            log.exception("failed to handle a message")

    def report_unparseable(self, body: bytes, error: Exception) -> None:
        log.warning("unparseable message (%d bytes): %s", len(body), str(error)[:200])
        code, msg_id = unparseable_answer(body, error)
        what = ("Invalid request: nested deeper than the server parses" if code == INVALID_REQUEST
                else f"Parse error: {str(error)[:200]}")
        self._reply_error(msg_id, code, what)

    def _reply_error(self, msg_id: Any, code: int, message: str) -> None:
        response = types.ResponseErrorMessage(
            id=valid_id(msg_id), error=types.ResponseError(code=code, message=message))
        self._send_data(response)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):  # type: ignore[no-untyped-def]
        result = yield from super().lsp_initialize(params)
        # A client with inline completion would otherwise ask twice per keystroke (and run the model
        # twice): advertise the `textDocument/completion` fallback only to clients without it. The
        # method is still answered when a client sends it anyway.
        text_caps = getattr(params.capabilities, "text_document", None)
        if getattr(text_caps, "inline_completion", None) is not None:
            result.capabilities.completion_provider = None
        return result

    # The server keeps its own documents: skip pygls' workspace copies, call the handlers directly.
    # (Plain methods without `lsp_method` are not registered as built-in features, so the user
    # features registered for these methods run instead.)
    lsp_text_document__did_open = None  # type: ignore[assignment]
    lsp_text_document__did_change = None  # type: ignore[assignment]
    lsp_text_document__did_close = None  # type: ignore[assignment]


def batch_request_ids(batch: list[Any]) -> list[int | str]:
    """The ids of the requests in a batch (objects with a method and a usable id)."""
    return [m["id"] for m in batch if isinstance(m, dict) and isinstance(m.get("method"), str)
            and valid_id(m.get("id")) is not None]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were no UTF-8
        return False
    return True


def unparseable_answer(body: bytes, error: Exception) -> tuple[int, int | str | None]:
    """(error code, id) for a body `json.loads` gave up on. The id is the request's when its
    envelope can still be read (a request, not a response: it has a method), else null. JSON nested
    deeper than the parser goes is well-formed, only too deep: InvalidRequest; the rest ParseError."""
    members = envelope_members(body)
    msg_id = valid_id(members.get("id")) if isinstance(members.get("method"), str) else None
    if isinstance(msg_id, str) and not _is_utf8(msg_id):
        msg_id = None  # invalid UTF-8 inside the id itself: what we read is not the sender's id
    if isinstance(error, RecursionError):
        return (INVALID_REQUEST if msg_id is not None else PARSE_ERROR), msg_id
    return PARSE_ERROR, msg_id
