"""End to end: adapting the embedded default model to a repository from the editor, through
`python -m lsp_server` over stdio and the real `python -m lsp_server.adapt` run it starts.

The repository totals its items with a function whose name the model cannot know, `zorbulate_ledger`,
called the same way in every module. The editor asks for a completion in a new module (open, not on
disk: never trained on) that imports it, at the line where every module of the repository calls it;
repository context is off, so no other file's use of it is in the prompt, and so are known names, so
its import does not steer the suggestion. The default model suggests
`0` there. Then: the train command with a small budget, its progress, cancelling it from its progress
and training again (it resumes from its checkpoint), a completion while it trains (from the current
model), the report and "Use adapter", the adapter applied, and the same completion now calls
`zorbulate_ledger`. A second server on the folder uses the remembered adapter until the drop command
forgets it. Nothing is written into the repository.

(With the name nowhere in the prompt, not even in the import, a budget this small does not make the
model recall it: measured with 12 and 24 steps.)"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types as T

from . import lsp_client as lc

pytestmark = pytest.mark.slow

NAME = "zorbulate_ledger"
STEPS = 12  # with --quick's 24 held-out cursors: one to two minutes on two busy cores
# A new module of the repository; the cursor is where every module of the repository calls NAME.
FRESH = f"from shop.ledger import {NAME}\n\n\ndef report_99(items):\n    total = \n    return total\n"
CURSOR = (4, len("    total = "))
# Neither repository context nor favored names (knownNames): the import of NAME would steer the first
# token to it before any training (lsp_server/context/refs.py own_package_names); here only the adapter may.
SETTINGS = {"repositoryContext": False, "knownNames": False, "maxNewTokens": 16}
VERBS = ("report", "check", "invoice", "refund", "audit", "summary", "export", "preview", "archive", "notify")


def write_repository(root: Path, modules: int = 16) -> set[str]:
    """A small package whose modules (of 30 lines: big enough to be held out) all total their items
    with `zorbulate_ledger`; its file names."""
    files = {"shop/__init__.py": "",
             "shop/ledger.py": (f"def {NAME}(items, currency):\n"
                                "    subtotal = sum(item.price * item.count for item in items)\n"
                                "    return f'{subtotal:.2f} {currency}'\n")}
    for i in range(modules):
        functions = [f"\ndef {verb}_{i}(items):\n"
                     f"    total = {NAME}(items, currency=\"EUR\")\n"
                     f"    return f'{verb} {i}: {{total}}'\n" for verb in VERBS]
        files[f"shop/mod{i}.py"] = "\n".join([f"from shop.ledger import {NAME}\n", *functions])
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return set(files)


async def suggestion(client: Any, uri: str) -> str:
    result = await lc.inline(client, uri, *CURSOR)
    return result.items[0].insert_text if result.items else ""


async def execute(client: Any, command: str, *args: Any) -> Any:
    return await lc.request(client, T.WORKSPACE_EXECUTE_COMMAND, T.ExecuteCommandParams(command, list(args)))


def failure(client: Any) -> str | None:
    """What the server said when the training failed or did not gain."""
    return next((m.message for m in client.messages if "no gain" in m.message or "failed" in m.message), None)


async def eventually(client: Any, what: str, check, timeout: float = 600) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := check()):
        assert not failure(client), failure(client)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never saw {what}")
        await asyncio.sleep(0.2)
    return found


def trainings(client: Any) -> list[tuple[str, list[Any]]]:
    """Each training's work-done progress: (token, its values: begin, reports, end), oldest first."""
    return [(token, values) for token, values in client.progress_reports.items()
            if values and isinstance(values[0], T.WorkDoneProgressBegin) and values[0].title.startswith("Training")]


def training_progress(client: Any) -> list[Any]:
    """The values of the newest training's progress."""
    found = trainings(client)
    return found[-1][1] if found else []


async def a_training_step(client: Any) -> None:
    await eventually(client, "a training step", lambda: any(
        isinstance(v, T.WorkDoneProgressReport) and (v.message or "").startswith("training step")
        for v in training_progress(client)))


def repository_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


async def test_training_from_the_editor_makes_completions_use_the_repositorys_own_names(tmp_path):
    repo = tmp_path / "shopapp"
    written = write_repository(repo)
    env = {"CODELLAMA_DATA_DIR": str(tmp_path / "data")}
    questions: list[T.ShowMessageRequestParams] = []
    client = lc.make_client()

    @client.feature(T.WINDOW_SHOW_MESSAGE_REQUEST)
    def answer(params: T.ShowMessageRequestParams) -> T.MessageActionItem:
        questions.append(params)
        return T.MessageActionItem(title="Use adapter")

    client = await lc.start(repo, SETTINGS, client=client, env=env)
    try:
        await lc.wait_ready(client)
        uri = lc.open_doc(client, repo / "shop" / "fresh.py", FRESH)
        before = await suggestion(client, uri)
        assert before and f"{NAME}(" not in before  # a suggestion, but not the repository's call

        started = await execute(client, "codellama.adapter.train", {"quick": True, "steps": STEPS})
        assert started["started"] is True and started["resumed"] is False
        assert not started["out"].startswith(str(repo))

        # Training: its progress counts steps, and its cancel button stops it; training again resumes.
        await a_training_step(client)
        token = trainings(client)[0][0]
        client.protocol.notify(T.WINDOW_WORK_DONE_PROGRESS_CANCEL, T.WorkDoneProgressCancelParams(token=token))
        await eventually(client, "the cancel", lambda: isinstance(training_progress(client)[-1], T.WorkDoneProgressEnd))
        assert any("cancelled" in m.message and "resume" in m.message for m in client.messages)
        resumed = await execute(client, "codellama.adapter.train", {"quick": True, "steps": STEPS})
        assert resumed["started"] is True and resumed["resumed"] is True

        # Completions are served meanwhile, by the current model.
        await a_training_step(client)
        assert await suggestion(client, uri) == before
        status = await lc.request(client, "codellama/getStatus", {})
        assert status["training"] is not None and status["adapter"] is None
        refused = await execute(client, "codellama.adapter.train")
        assert refused["started"] is False and "already running" in refused["message"]

        # The report, as a question (a run without gain would say so instead, and fail this test).
        await eventually(client, "the report", lambda: questions)
        assert "Adapter for shopapp: single-line exact match" in questions[0].message
        assert "Use it?" in questions[0].message
        assert [a.title for a in questions[0].actions or []] == ["Use adapter", "Discard"]
        progress = training_progress(client)
        assert progress[0].cancellable is True and isinstance(progress[-1], T.WorkDoneProgressEnd)
        percentages = [v.percentage for v in progress if isinstance(v, T.WorkDoneProgressReport) and v.percentage]
        assert percentages == sorted(percentages) and percentages[-1] >= 90

        # "Use adapter": the model reloads with it, and the completion now uses the repository's name.
        status = await lc.wait_for(client, lambda s: s["adapter"] is not None and s["state"] == "ready")
        adapter = status["adapter"]
        assert adapter["source"] == "workspace" and adapter["applied"] is True
        assert adapter["exactMatchAfter"] > adapter["exactMatchBefore"]
        after = await suggestion(client, uri)
        assert f"{NAME}(" in after, (before, after)
        assert repository_files(repo) == written  # nothing written into the repository
    finally:
        await client.shutdown_session()
        await client.stop()

    # The next server on this folder uses the adapter it remembers, until it is dropped.
    client = await lc.start(repo, SETTINGS, env=env)
    try:
        status = await lc.wait_ready(client)
        assert status["adapter"] == adapter
        uri = lc.open_doc(client, repo / "shop" / "fresh.py", FRESH)
        assert await suggestion(client, uri) == after
        dropped = await execute(client, "codellama.adapter.drop")
        assert dropped == {"dropped": True}
        await lc.wait_for(client, lambda s: s["adapter"] is None and s["state"] == "ready")
        assert await suggestion(client, uri) == before
        assert any("adapter dropped" in m.message for m in client.messages)
    finally:
        await client.shutdown_session()
        await client.stop()
