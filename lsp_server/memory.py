"""The server's own memory: resident size for the status, returning freed heap to the system, and a
tracemalloc dump for finding what grows.

`CODELLAMA_TRACEMALLOC=FILE` (read at start-up) starts tracemalloc and appends, every
`CODELLAMA_TRACEMALLOC_SECONDS` (default 60), the allocation sites that grew most since the
previous dump to FILE (`CODELLAMA_TRACEMALLOC_FRAMES`: frames per site, default 1). It slows the server down: for diagnosis only (benchmarks/soak.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)


def resident_bytes(pid: int | str = "self") -> int | None:
    """A process's resident memory (VmRSS; this process by default), or None where /proc is not
    available or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


# mallopt parameters (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 4 * 2**20, arena_max: int = 2) -> bool:
    """Make glibc's malloc hand freed tensor memory back to the system. By default its mmap threshold
    rises to the size of every large block freed (up to 32 MB), after which tensors of many sizes
    (a prefill chunk, attention scores, the KV cache growing) come from the heap, where freed holes
    stay resident; and each thread that allocates gets an arena of its own. A fixed threshold keeps
    large blocks in mmap (unmapped when freed); two arenas bound the heaps. Call it before the
    threads start. False when not glibc.

    The threshold is 4 MB: a small model's prefill makes a few dozen tensors of 0.5-4 MB per layer, and
    with 256 KB each was a fresh mapping, its pages faulted in and unmapped again: an 8K-token prefill
    of the default model took 2.4 s instead of 1.2 (two threads, benchmarks/RESULTS.md, session 18)."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(_LIBC.mallopt(_M_ARENA_MAX, arena_max))


class HeapTrimmer:
    """`trim_heap()` at most every `every_s` seconds (the engine thread calls it after requests)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            trim_heap()


def trim_heap() -> bool:
    """Give memory freed to glibc's malloc back to the system (`malloc_trim(0)`). The engine frees
    many tensors of many sizes; without this the freed pages stay resident. False when not glibc."""
    if _LIBC is None:
        return False
    try:
        _LIBC.malloc_trim(0)
    except Exception:  # never let housekeeping break a request
        return False
    return True


def start_tracemalloc_dumps(path: str, every_s: float = 60.0, top: int = 25, frames: int = 1) -> None:
    """Append the `top` allocation sites (lines; call chains of `frames` frames when more than one)
    that grew most since the previous snapshot to `path`, every `every_s` seconds, from a daemon
    thread. More frames cost much more: the comparison holds the GIL for seconds."""
    tracemalloc.start(frames)
    started = time.monotonic()
    key = "traceback" if frames > 1 else "lineno"

    def loop() -> None:
        previous = tracemalloc.take_snapshot()
        while True:
            time.sleep(every_s)
            snap = tracemalloc.take_snapshot()
            stats = snap.compare_to(previous, key)[:top]
            previous = snap
            current, peak = tracemalloc.get_traced_memory()
            lines = [f"=== {time.monotonic() - started:.0f} s: traced {current / 2**20:.1f} MB "
                     f"(peak {peak / 2**20:.1f} MB), RSS {(resident_bytes() or 0) / 2**20:.0f} MB"]
            for stat in stats:
                lines.append(f"{stat.size_diff / 2**20:+.2f} MB {stat.count_diff:+d} blocks "
                             f"(now {stat.size / 2**20:.2f} MB)")
                lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback[-6:]]
            with Path(path).open("a", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")

    threading.Thread(target=loop, name="tracemalloc-dump", daemon=True).start()


def maybe_start_tracemalloc() -> None:
    path = os.environ.get("CODELLAMA_TRACEMALLOC")
    if path:
        start_tracemalloc_dumps(path, float(os.environ.get("CODELLAMA_TRACEMALLOC_SECONDS", "60")),
                                frames=int(os.environ.get("CODELLAMA_TRACEMALLOC_FRAMES", "1")))
        log.warning("tracemalloc on: top growth every minute to %s", path)
