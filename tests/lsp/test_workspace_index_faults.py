"""The workspace index when the disk changes under it: files that vanish, turn into directories,
dangling links or named pipes between being listed and being read; directories moved out of the
workspace; thousands of files created at once. The index never hangs or crashes, drops what is gone,
and reads each file of a burst once (end to end with the real server: test_e2e_workspace_faults.py)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import lsp_server.context.index as index_module
from lsp_server.context.index import WorkspaceIndex


def wait_until(condition: Callable[[], bool], what: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what()}")
        time.sleep(0.05)


def write_module(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"def {name}(value):\n    return value + {len(name)}\n")


def test_files_that_change_kind_or_vanish_between_listing_and_reading(tmp_path):
    names = ["keep", "gone", "now_dir", "dangling", "pipe"]
    for name in names:
        write_module(tmp_path / f"{name}.py", name)
    index = WorkspaceIndex(tmp_path)
    sabotaged = []

    def sabotage(done: int, total: int) -> None:
        """Called after the first file is read: everything not read yet changes under the index."""
        if sabotaged:
            return
        for name in names:
            path = tmp_path / f"{name}.py"
            if f"{name}.py" in index.texts or name == "keep":
                continue
            path.unlink()
            if name == "now_dir":
                write_module(path / "inner.py", "inner")
            elif name == "dangling":
                path.symlink_to(tmp_path / "nowhere.py")
            elif name == "pipe":
                os.mkfifo(path)
            sabotaged.append(name)

    builder = threading.Thread(target=index.build, kwargs={"progress": sabotage}, daemon=True)
    builder.start()
    builder.join(timeout=60)
    assert not builder.is_alive(), "the build hangs (reading a named pipe?)"
    assert sabotaged, "the first file read was no regular one"
    assert index.paths() == {f"{n}.py" for n in names if n not in sabotaged}
    assert "def keep" in (index.text("keep.py") or "")
    assert {hit.path for hit in index.search({"value"}, 10)} == index.paths()  # nothing gone is found


def test_the_watcher_drops_what_vanishes_and_a_directory_moved_out_of_the_workspace(tmp_path):
    root = tmp_path / "ws"
    for name in ("stays", "deleted", "becomes_dir", "becomes_link"):
        write_module(root / f"{name}.py", name)
    for i in range(3):
        write_module(root / "pkg" / f"mod{i}.py", f"mod{i}")
    index = WorkspaceIndex(root)
    assert index.start_watching()
    try:
        index.build()
        assert len(index) == 7
        (root / "deleted.py").unlink()
        (root / "becomes_dir.py").unlink()
        write_module(root / "becomes_dir.py" / "inner.py", "inner")
        (root / "becomes_link.py").unlink()
        (root / "becomes_link.py").symlink_to(root / "missing.py")
        shutil.move(root / "pkg", tmp_path / "pkg-elsewhere")  # no event names the files inside
        want = {"stays.py", "becomes_dir.py/inner.py"}
        wait_until(lambda: index.paths() == want, lambda: f"index == {want} (it is {sorted(index.paths())})")
        assert index.search({"mod0", "mod1", "mod2"}, 10) == []
    finally:
        index.stop_watching()


def test_ten_thousand_files_created_at_once_are_each_read_once(tmp_path, monkeypatch):
    """A burst marks each path once; the updater reads each file once, not once per event (a file
    written in one go gives created, modified and closed events)."""
    root = tmp_path / "ws"
    write_module(root / "main.py", "main")
    reads: list[str] = []
    real_read = index_module.read_source_text

    def counting_read(path, *args, **kwargs):  # noqa: ANN001, ANN202 - read_source_text's signature
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(index_module, "read_source_text", counting_read)
    index = WorkspaceIndex(root)
    assert index.start_watching()
    try:
        index.build()
        count = 10_000
        for i in range(count):
            folder = root / "generated" / f"d{i // 1000}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"gen_{i}.py").write_text(f"GEN_{i} = {i}\n")
        wait_until(lambda: len(index) == count + 1, lambda: f"{count + 1} files indexed (have {len(index)})",
                   timeout=300)
        assert index.text(f"generated/d9/gen_{count - 1}.py") == f"GEN_{count - 1} = {count - 1}\n"
        assert len(reads) < 1.5 * (count + 1), f"{len(reads)} reads for {count + 1} files"
    finally:
        index.stop_watching()


def test_the_index_keeps_its_cap_when_more_files_arrive(tmp_path):
    root = tmp_path / "ws"
    write_module(root / "main.py", "main")
    index = WorkspaceIndex(root, max_files=50)
    assert index.start_watching()
    try:
        index.build()
        for i in range(200):
            write_module(root / "many" / f"m{i}.py", f"m{i}")
        wait_until(lambda: len(index) == 50 and not index._pending,
                   lambda: f"the index filled up to its cap, nothing left to read (has {len(index)})")
        assert len(index) == 50 and "main.py" in index.paths()
    finally:
        index.stop_watching()


def test_lost_events_make_the_index_list_the_workspace_again(tmp_path):
    """When the kernel's event queue overflows, watchdog says events were lost (no paths): the index
    lists the tree again, so files whose events were lost are found and files gone are dropped."""
    from watchdog.events import EventsLostEvent

    root = tmp_path / "ws"
    write_module(root / "old.py", "old")
    index = WorkspaceIndex(root)
    index.build()
    (root / "old.py").unlink()  # changed before the watcher starts: as if their events were lost
    write_module(root / "unseen.py", "unseen")
    assert index.start_watching()
    try:
        index._mark(EventsLostEvent(str(root), is_directory=True))  # what the observer hands its handler
        wait_until(lambda: index.paths() == {"unseen.py"}, lambda: f"the index lists unseen.py only ({index.paths()})")
    finally:
        index.stop_watching()


@pytest.fixture(autouse=True)
def _no_stray_updaters():
    """Each test stops the index it started watching."""
    before = {t for t in threading.enumerate() if t.name == "index-updater"}
    yield
    wait_until(lambda: {t for t in threading.enumerate() if t.name == "index-updater"} <= before,
               lambda: "the updater threads ended", timeout=10)
