"""End to end: the workspace changes under the running server (the real engine, the default model).
Files the context came from vanish, turn into a directory or a dangling link, or leave with their
directory: they drop out of the context and completions keep coming. Ten thousand files appear at once:
every completion request meanwhile is answered, and the index ends up holding every one of them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DEFINITIONS = {
    "walrus.py": "def compute_walrus_velocity(fish_count):\n    return fish_count * 3\n",
    "otter.py": "def compute_otter_buoyancy(shell_count):\n    return shell_count * 5\n",
    "pkg/penguin.py": "def compute_penguin_depth(krill_count):\n    return krill_count * 7\n",
}
FILLERS = 12
USER = ("speed = compute_walrus_velocity(fish_count)\nlift = compute_otter_buoyancy(shell_count)\n"
        "depth = compute_penguin_depth(krill_count)\nx = ")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws-faults") / "ws"
    for i in range(FILLERS):  # unrelated modules: repository search needs a few to rank against
        (root / "lib").mkdir(parents=True, exist_ok=True)
        (root / "lib" / f"shape{i}.py").write_text(f"def area_{i}(width, height):\n    return width * height * {i}\n")
    for rel, text in DEFINITIONS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(workspace: Path):
    client = await lc.start(workspace, {"maxNewTokens": 16})
    await lc.wait_for(client, lambda s: s["state"] == "ready" and not s["indexing"] and s["indexedFiles"] == FILLERS + 3)
    yield client
    await client.shutdown_session()
    await client.stop()


async def answered(client, uri: str, line: int, character: int) -> T.InlineCompletionList:
    result = await lc.inline(client, uri, line, character)
    assert isinstance(result, T.InlineCompletionList)
    return result


async def snippet_paths_become(client, uri: str, line: int, character: int, done, timeout: float = 120) -> set[str]:
    """Ask for completions until the prompt's snippets come from paths for which `done(paths)`."""
    paths: set[str] = set()
    for _ in range(int(timeout / 0.2)):
        await answered(client, uri, line, character)
        paths = {s["path"] for s in (await lc.last_prompt(client, uri))["snippets"]}
        if done(paths):
            return paths
        await asyncio.sleep(0.2)
    raise AssertionError(f"the snippets still come from {sorted(paths)}")


async def test_files_that_vanish_or_change_kind_drop_out_of_the_context(client, workspace, tmp_path):
    uri = lc.open_doc(client, workspace / "user.py", USER)
    await snippet_paths_become(client, uri, 3, 4, lambda paths: set(DEFINITIONS) <= paths)

    (workspace / "walrus.py").unlink()  # a file turned into a directory of the same name
    (workspace / "walrus.py").mkdir()
    (workspace / "walrus.py" / "notes.py").write_text("NOTES = 'nothing about walruses'\n")
    (workspace / "otter.py").unlink()  # a file turned into a link to nowhere
    (workspace / "otter.py").symlink_to(workspace / "no-such-file.py")
    shutil.move(workspace / "pkg", tmp_path / "pkg-elsewhere")  # a directory moved out: no event per file

    await snippet_paths_become(client, uri, 3, 4, lambda paths: not paths & set(DEFINITIONS))
    result = await answered(client, uri, 3, 4)
    assert result.items and result.items[0].insert_text.strip()  # still suggesting
    status = await lc.request(client, "codellama/getStatus", {})
    assert status["indexedFiles"] == FILLERS + 1  # and walrus.py/notes.py (user.py is open, not on disk)


async def test_ten_thousand_files_created_at_once_are_indexed_while_requests_are_answered(client, workspace):
    uri = lc.open_doc(client, workspace / "writer.py", "total = generated_function_7777()\nx = ")
    before = (await lc.request(client, "codellama/getStatus", {}))["indexedFiles"]
    count = 10_000
    for i in range(count):
        folder = workspace / "generated" / f"d{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"gen_{i}.py").write_text(f"def generated_function_{i}():\n    return {i * 7}\n")
        if i % 2000 == 1999:  # the server answers while the files keep coming
            await answered(client, uri, 1, 4)
    status = await lc.wait_for(client, lambda s: s["indexedFiles"] == before + count, timeout=600)
    assert status["state"] == "ready"
    # Among ten thousand new files, repository search finds the one the open document calls.
    await snippet_paths_become(client, uri, 1, 4, lambda paths: "generated/d07/gen_7777.py" in paths)
