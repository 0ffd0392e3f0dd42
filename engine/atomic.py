"""Atomic writes: a file or a directory appears under its name complete, or not at all.

Every writer of something a later run loads (adapters, checkpoints, exports, token caches) goes
through here, so that a full disk, a crash or a kill mid-write never leaves a half-written file where a
loader finds it: the data goes to a temporary name in the same directory, is flushed to disk (fsync),
and is renamed over the target only once complete. A failed write removes its temporary and leaves the
previous target as it was.

Temporary names start with "." and end with ".tmp", so no loader's pattern (`*.safetensors`,
`step-*`, `*.json`) ever matches one left behind by a killed process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Make renames in a directory durable; where directories cannot be opened (Windows) the rename
    is as durable as the system makes it."""
    with contextlib.suppress(OSError):
        fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write the file to; on success it replaces `path`.

        with atomic_file(out / "adapter.json") as tmp:
            tmp.write_text(...)

    Nest two to commit a pair (the outer one, what readers look for first, is renamed last)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_directory(target.parent)  # the rename itself survives a power cut


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields an empty temporary directory to fill; on success every file in it is flushed and it
    takes the place of `path` (an existing directory there is moved aside, then removed). Between
    those two renames `path` is briefly absent, never partial."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fsync_path(file)
        _fsync_directory(tmp)
        if target.exists():
            old = _temporary_sibling(target)
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        if old is not None and not target.exists():
            os.replace(old, target)  # the new one never arrived: put the previous one back
        raise
    _fsync_directory(target.parent)
    if old is not None:
        _remove(old)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
