"""The read loops for stdio and TCP: bytes from the client, cut into frames (lsp_server/framing.py),
each body handed to the protocol. They replace pygls' loops, which trust every Content-Length (see
framing.py for what that costs) and hand parse errors over without the body, so that the id of a
request too deeply nested to parse could not be answered."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from .framing import STALL_S, FrameReader

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


async def read_loop(read_some: Callable[[], Awaitable[bytes]], receive: Callable[[bytes], Any],
                    stop: threading.Event) -> None:
    """Hand every frame's body to `receive` until the client closes the stream."""
    frames = FrameReader()
    pending: asyncio.Future[bytes] | None = None
    while not stop.is_set():
        if pending is None:
            pending = asyncio.ensure_future(read_some())
        # Part of a body in and the stream quiet: maybe its Content-Length was too large.
        done, _ = await asyncio.wait({pending}, timeout=STALL_S if frames.in_body else None)
        if not done:
            stalled = frames.take_stalled()
            if stalled is not None:
                log.warning("a message is shorter than its Content-Length said; handling it anyway")
                _hand_over(receive, stalled)
            continue
        data, pending = pending.result(), None
        if not data:
            log.info("the client closed the connection")
            return
        for body in frames.feed(data):
            _hand_over(receive, body)


def _hand_over(receive: Callable[[bytes], Any], body: bytes) -> None:
    try:
        receive(body)
    except Exception:  # never let one message end the connection (and so the server)
        log.exception("a message could not be handled")


def stdin_reader(stdin: BinaryIO, executor: Any) -> Callable[[], Awaitable[bytes]]:
    """Whatever stdin has ready (up to a chunk), read on `executor` so that the loop keeps running."""
    read1 = stdin.read1  # type: ignore[attr-defined]  # a buffered stream: sys.stdin.buffer, a pipe

    def read_some() -> Awaitable[bytes]:
        return asyncio.get_running_loop().run_in_executor(executor, read1, CHUNK_BYTES)

    return read_some


def stream_reader(reader: asyncio.StreamReader) -> Callable[[], Awaitable[bytes]]:
    return lambda: reader.read(CHUNK_BYTES)
