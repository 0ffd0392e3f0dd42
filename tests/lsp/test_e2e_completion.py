"""End to end: `python -m lsp_server` over stdio with the real engine, in a small git repository, and
no model configured: the server serves the embedded default model (models/default, a small Code Llama
trained on Python). Its suggestions are checked for what a user would notice (non-empty, at the cursor
with the exact range, the file still compiles, names from the code around the cursor or from other
files of the workspace), never as exact strings; the prompt the engine saw is read back with
`codellama/lastPrompt`. Decoding is greedy, so each suggestion is the same on every run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from engine import default_model_dir

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

SECRET_WORD = "zebra_quantum_flux"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7zebra\n-----END RSA PRIVATE KEY-----\n"
TOTAL = 'def total(values):\n    """Return the sum of the values."""\n    \n'


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    files = {
        "physics.py": f"def {SECRET_WORD}(mass, speed):\n    return mass * speed * speed\n",
        "geometry.py": "def rectangle_area(width, height):\n    return width * height\n\n\nGRID_SPACING = 4821\n",
        "app.py": "from geometry import rectangle_area\n\n\ndef main():\n    total = \n    return total\n",
        # A package that re-exports a constant defined in one of its modules.
        "wholesale/__init__.py": "from .pricing import WHOLESALE_MARGIN\n",
        "wholesale/pricing.py": '"""Prices for bulk orders."""\n\nWHOLESALE_MARGIN = 0.35\n',
        # A base class whose method the subclass below calls through `self.` (known names).
        "ledger/__init__.py": "",
        "ledger/base.py": ("class LedgerBase:\n    def zorbulate_entries(self, entries):\n"
                           "        return sorted(entries)\n"),
        # Where a tool keeps its settings, spelt out once (copied from the workspace).
        "paths_config.py": ("import os\n\nSETTINGS_FILE_NAME = os.path.join(os.path.expanduser('~'), '.config', "
                            "'tool', 'settings.toml')\n"),
        ".env": f"{SECRET_WORD.upper()}=hunter2-password\n",
        "config/id_rsa": PRIVATE_KEY,
        "keys.py": f"{SECRET_WORD}_key = '''\n{PRIVATE_KEY}'''\n",
        "ignored_notes.py": f"# {SECRET_WORD} ignored_by_git_marker\n",
        "node_modules/lib/index.js": f"// {SECRET_WORD} vendored_marker\n",
        ".gitignore": "ignored_notes.py\n",
        "blob.py": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "blob.py").write_bytes(b"\x00\x01binary\xff" * 100)
    (root / "latin1.py").write_bytes("caf\xe9 = 'cr\xe8me'\n".encode("latin-1"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(repo: Path):
    # No `model` setting: the embedded default model. 24 new tokens hold a line of code.
    client = await lc.start(repo, {"maxNewTokens": 48})
    await lc.wait_ready(client)
    yield client
    await client.shutdown_session()
    await client.stop()


def offset(text: str, line: int, character: int) -> int:  # ASCII documents: characters are UTF-16 units
    return sum(len(x) + 1 for x in text.split("\n")[:line]) + character


def inserted(text: str, line: int, character: int, suggestion: str) -> str:
    at = offset(text, line, character)
    return text[:at] + suggestion + text[at:]


async def suggestion_at(client, uri: str, line: int, character: int) -> T.InlineCompletionItem:
    """The one inline suggestion at the cursor: not empty, and inserted exactly there."""
    result = await lc.inline(client, uri, line, character)
    assert len(result.items) == 1, result
    item = result.items[0]
    assert item.insert_text.strip(), item
    assert item.range == T.Range(T.Position(line, character), T.Position(line, character))
    return item


async def test_with_no_model_configured_the_server_loads_the_default_model_with_progress(client):
    status = await lc.request(client, "codellama/getStatus", {})
    assert status["state"] == "ready" and status["device"] == "cpu" and status["model"] == default_model_dir().name
    assert status["description"].startswith(f"local: {default_model_dir().name} ")
    assert status["indexedFiles"] >= 4

    def reports(kind: type) -> list:
        return [r for rs in client.progress_reports.values() for r in rs if isinstance(r, kind)]

    # A progress ends after its begin went out, which may be just after the status says ready.
    deadline = asyncio.get_running_loop().time() + 120
    while len(reports(T.WorkDoneProgressEnd)) < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    titles = [r.title for r in reports(T.WorkDoneProgressBegin)]
    assert any("Loading model" in t for t in titles) and any("Indexing" in t for t in titles)
    assert len(reports(T.WorkDoneProgressEnd)) >= 2, "every progress that began has ended"
    assert any(s["state"] == "ready" for s in client.statuses)


async def test_function_body_after_the_docstring_gets_code_that_compiles_and_uses_the_parameter(client, repo):
    uri = lc.open_doc(client, repo / "stats.py", TOTAL)
    item = await suggestion_at(client, uri, 2, 4)
    compile(inserted(TOTAL, 2, 4, item.insert_text), "stats.py", "exec")  # the file still compiles
    assert re.search(r"\bvalues\b", item.insert_text), item.insert_text
    prompt = await lc.last_prompt(client, uri)
    assert item.insert_text == prompt["completion"]
    assert prompt["prefix"].endswith("# Path: stats.py\n" + TOTAL[: offset(TOTAL, 2, 4)])
    assert prompt["suffix"] == "\n" and prompt["fimFormat"] == "spm" and prompt["promptTokens"] > 0


async def test_completion_fallback_is_the_same_suggestion_as_one_item_with_a_text_edit(client, repo):
    uri = lc.open_doc(client, repo / "stats.py", TOTAL)
    inline = await suggestion_at(client, uri, 2, 4)
    result = await asyncio.wait_for(client.text_document_completion_async(T.CompletionParams(
        text_document=T.TextDocumentIdentifier(uri), position=T.Position(2, 4),
        context=T.CompletionContext(T.CompletionTriggerKind.Invoked))), 120)
    assert isinstance(result, T.CompletionList) and result.is_incomplete
    assert len(result.items) == 1
    item = result.items[0]
    assert item.text_edit.new_text == inline.insert_text and item.filter_text == inline.insert_text
    assert item.text_edit.range == T.Range(T.Position(2, 4), T.Position(2, 4))
    assert item.insert_text_format == T.InsertTextFormat.PlainText


async def test_imported_file_is_in_the_prompt_under_its_path(client, repo):
    uri = lc.open_doc(client, repo / "app.py")
    text = (repo / "app.py").read_text()
    item = await suggestion_at(client, uri, 4, 12)
    compile(inserted(text, 4, 12, item.insert_text), "app.py", "exec")
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith("# Path: app.py\n" + text[: offset(text, 4, 12)])
    assert text[offset(text, 4, 12):].startswith(prompt["suffix"])
    assert item.insert_text == prompt["completion"]
    # geometry.py is imported by app.py: its code (the imported name's definition) is in the prompt,
    # commented, under its path.
    assert "# Path: geometry.py\n# def rectangle_area(width, height):" in prompt["prefix"]
    assert any(s["path"] == "geometry.py" and s["source"] in ("import", "definition") for s in prompt["snippets"])


@contextlib.contextmanager
def turned_off(client, setting: str):
    """A boolean setting off for the block, on again after it (the tests share one server)."""
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"codellama": {setting: False}}))
    try:
        yield
    finally:
        client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"codellama": {setting: True}}))


async def test_repository_context_brings_a_value_from_another_file_into_the_suggestion(client, repo):
    """A fair test: GRID_SPACING's value, 4821, is defined in geometry.py only, and nothing the model could
    guess: with the repository context turned off it suggests something else (checked below). So when
    the suggestion holds it, the value came from the workspace through the prompt."""
    text = "from geometry import GRID_SPACING\n\nassert GRID_SPACING == "
    uri = lc.open_doc(client, repo / "shapes.py", text)
    end = len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, 2, end)
    assert re.match(r"\s*4821\b", item.insert_text), item.insert_text
    prompt = await lc.last_prompt(client, uri)
    assert any(s["path"] == "geometry.py" and s["source"] in ("import", "definition") for s in prompt["snippets"])
    with turned_off(client, "repositoryContext"):
        alone = await lc.inline(client, uri, 2, end)
        assert (await lc.last_prompt(client, uri))["snippets"] == []
        assert "4821" not in "".join(i.insert_text for i in alone.items)


async def test_after_self_dot_the_suggestion_names_a_method_that_exists_in_the_base_class(client, repo):
    """`self.zo|` in a class whose base, in another file, defines `zorbulate_entries`: the suggestion
    goes on to that name, the only member that starts so (known names); with `knownNames` off the
    model spells some other name."""
    text = ("from ledger.base import LedgerBase\n\n\nclass Book(LedgerBase):\n"
            "    def settle(self, entries):\n        return self.zo")
    uri = lc.open_doc(client, repo / "ledger" / "book.py", text)
    line, end = 5, len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, line, end)
    assert item.insert_text.startswith("rbulate_entries"), item.insert_text
    prompt = await lc.last_prompt(client, uri)
    assert "rbulate_entries" in prompt["nameChoices"] and prompt["favoredNames"] is None
    with turned_off(client, "knownNames"):
        free = await lc.inline(client, uri, line, end)
        assert not any(i.insert_text.startswith("rbulate_entries") for i in free.items), free.items


async def test_at_an_expression_start_the_suggestion_leans_toward_a_name_the_file_imports_from_its_package(client, repo):
    """`raise |` in a file that imports ValidationError from its own package: the suggestion raises
    it (favored names), where with `knownNames` off the model writes the builtin ValueError."""
    text = ("from .errors import ValidationError\n\n\n"
            "def check_name(value):\n    if not value:\n        raise ValidationError(\"name is required\")\n"
            "    return value\n\n\ndef check_age(value):\n    if value < 0:\n        raise ")
    uri = lc.open_doc(client, repo / "ledger" / "checks.py", text)
    line, end = text.count("\n"), len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, line, end)
    assert item.insert_text.startswith("ValidationError("), item.insert_text
    assert (await lc.last_prompt(client, uri))["favoredNames"] == ["ValidationError"]
    with turned_off(client, "knownNames"):
        free = await lc.inline(client, uri, line, end)
        assert free.items and not free.items[0].insert_text.startswith("Validation"), free.items

    # While the name is being typed (`raise V|`) the rest of it is what leans, relative to the cursor.
    lc.insert(client, uri, 2, line, end, "V")
    item = await suggestion_at(client, uri, line, end + 1)
    assert item.insert_text.startswith("alidationError("), item.insert_text
    assert (await lc.last_prompt(client, uri))["favoredNames"] == ["alidationError"]
    with turned_off(client, "knownNames"):
        free = await lc.inline(client, uri, line, end + 1)
        assert free.items and not free.items[0].insert_text.startswith("alidation"), free.items


async def test_a_path_the_file_spells_out_above_is_copied_whole_into_the_suggestion(client, repo):
    """The file builds its settings path once; at `path = ` in a function below, the suggestion writes
    the same path (copied from the prompt, engine/prompt_copy.py), where with `copyFromPrompt` off the
    model makes up the end of it."""
    text = ("import os\n\nSETTINGS_FILE_NAME = os.path.join(os.path.expanduser('~'), '.config', 'tool', "
            "'settings.toml')\n\n\ndef load():\n    path = ")
    uri = lc.open_doc(client, repo / "tool_settings.py", text)
    line, end = text.count("\n"), len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, line, end)
    assert item.insert_text.startswith("os.path.join(os.path.expanduser('~'), '.config', 'tool', 'settings.toml')"), \
        item.insert_text
    with turned_off(client, "copyFromPrompt"):
        alone = await lc.inline(client, uri, line, end)
        assert "'settings.toml'" not in "".join(i.insert_text for i in alone.items), alone.items


async def test_a_path_spelt_out_in_another_workspace_file_is_copied_into_the_suggestion(client, repo):
    """paths_config.py builds the settings path; a new file that builds it again gets the rest of it
    from the workspace (its snippet in the prompt, or the workspace's tokens: engine/prompt_copy.py),
    where without repository context the model makes up its end."""
    text = "import os\n\n\ndef load():\n    path = os.path.join(os.path.expanduser('~'), '.config', "
    uri = lc.open_doc(client, repo / "loader.py", text)
    line, end = text.count("\n"), len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, line, end)
    assert item.insert_text.startswith("'tool', 'settings.toml')"), item.insert_text
    with turned_off(client, "repositoryContext"):
        alone = await lc.inline(client, uri, line, end)
        assert "'settings.toml'" not in "".join(i.insert_text for i in alone.items), alone.items


async def test_a_name_imported_through_a_package_re_export_brings_its_value_from_the_defining_module(client, repo):
    """WHOLESALE_MARGIN is imported from the package `wholesale`, whose __init__ only re-exports it from
    wholesale/pricing.py: the retrieval follows the import there, and its value (0.35) comes back in
    the suggestion; with the repository context off it does not."""
    text = ("from wholesale import WHOLESALE_MARGIN\n\n\ndef price(cost):\n    return cost * (1 + WHOLESALE_MARGIN)\n\n\n"
            "assert WHOLESALE_MARGIN == ")
    uri = lc.open_doc(client, repo / "bulk.py", text)
    line, end = 7, len(text.splitlines()[-1])
    item = await suggestion_at(client, uri, line, end)
    assert re.match(r"\s*0\.35\b", item.insert_text), item.insert_text
    prompt = await lc.last_prompt(client, uri)
    assert any(s["path"] == "wholesale/pricing.py" and s["source"] == "definition" for s in prompt["snippets"])
    assert "# Path: wholesale/pricing.py\n# WHOLESALE_MARGIN = 0.35\n" in prompt["prefix"]
    with turned_off(client, "repositoryContext"):
        alone = await lc.inline(client, uri, line, end)
        assert "0.35" not in "".join(i.insert_text for i in alone.items)


async def test_secret_ignored_vendored_and_binary_files_never_reach_the_prompt(client, repo):
    uri = lc.open_doc(client, repo / "use_flux.py", f"import physics\n\nspeed = {SECRET_WORD}(2, 3)\nx = ")
    await lc.inline(client, uri, 3, 4)
    prompt = await lc.last_prompt(client, uri)
    whole = prompt["prefix"] + prompt["suffix"]
    assert f"def {SECRET_WORD}(mass, speed)" in whole  # retrieval works...
    for leaked in ("hunter2", "PRIVATE KEY", "ignored_by_git_marker", "vendored_marker", "binary"):
        assert leaked not in whole  # ...but never for secrets, ignored, vendored or binary files
    paths = {s["path"] for s in prompt["snippets"]}
    assert not paths & {".env", "config/id_rsa", "keys.py", "ignored_notes.py", "node_modules/lib/index.js", "blob.py"}


async def test_file_changed_on_disk_shows_up_in_the_context(client, repo):
    uri = lc.open_doc(client, repo / "walrus_user.py", "speed = compute_walrus_velocity(fish_count)\nx = ")

    async def context_has(needle: str, present: bool = True) -> dict:
        for _ in range(150):
            await lc.inline(client, uri, 1, 4)
            prompt = await lc.last_prompt(client, uri)
            if (needle in prompt["prefix"]) == present:
                return prompt
            await asyncio.sleep(0.2)
        raise AssertionError(f"{needle!r} {'never appeared in' if present else 'never left'} the prompt")

    fresh = repo / "walrus.py"
    fresh.write_text("def compute_walrus_velocity(fish_count):\n    return fish_count * 3\n")
    prompt = await context_has("return fish_count * 3")
    assert any(s["path"] == "walrus.py" and s["source"] == "similar" for s in prompt["snippets"])
    fresh.write_text("def compute_walrus_velocity(fish_count):\n    return fish_count * 42\n")
    await context_has("return fish_count * 42")
    fresh.unlink()
    await context_has("compute_walrus_velocity(fish_count):", present=False)


async def test_typing_through_a_suggestion_answers_from_the_cache(client, repo):
    path = repo / "typing.py"
    uri = lc.open_doc(client, path, 'def count_words(text):\n    """Return the number of words in text."""\n    \n')
    line, character = 2, 4
    suggestion = (await suggestion_at(client, uri, line, character)).insert_text
    typed = suggestion[0]
    assert suggestion[1:].strip(), suggestion  # something left to show after the typed character
    lc.insert(client, uri, 2, line, character, typed)
    again = await lc.inline(client, uri, line, character + lc.utf16_len(typed))
    assert again.items[0].insert_text == suggestion[1:]
    assert again.items[0].range.start == T.Position(line, character + lc.utf16_len(typed))
    prompt = await lc.last_prompt(client, uri)
    assert prompt["fromCache"] is True
    status = await lc.request(client, "codellama/getStatus", {})
    assert status["lastFromCache"] is True


async def test_accepting_a_suggestion_finds_the_next_one_ready(client, repo):
    """Accept-then-next: while the first suggestion shows, the server computes the one for the cursor
    after it; accepting it gets that one from the cache, with no model call."""
    text = "def total_price(items):\n    total = 0\n    for item in \n    return total\n"
    uri = lc.open_doc(client, repo / "accept.py", text)
    first = (await suggestion_at(client, uri, 2, 16)).insert_text
    assert first.rstrip().endswith(":"), first  # a block opener: the loop's body comes next
    lc.insert(client, uri, 2, 2, 16, first)  # the editor inserts what the user accepted
    after = 16 + lc.utf16_len(first)
    nxt = await suggestion_at(client, uri, 2, after)
    assert "item" in nxt.insert_text, nxt.insert_text  # the loop's body, using its variable
    prompt = await lc.last_prompt(client, uri)
    assert prompt["fromCache"] is True


async def test_utf16_positions_with_emoji_and_cjk(client, repo):
    line0 = 's = "😀漢字😀"'
    text = f"{line0}\nt = s + \n"
    uri = lc.open_doc(client, repo / "emoji.py", text)
    # Right after the first emoji: 5 ASCII characters + 2 UTF-16 units.
    result = await lc.inline(client, uri, 0, 7)
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith('s = "😀') and prompt["suffix"].startswith('漢字😀"')
    assert prompt["position"] == {"line": 0, "character": 7}
    if result.items:
        assert result.items[0].range.start == T.Position(0, 7)
    # End of the second line, after a line holding astral characters.
    await lc.inline(client, uri, 1, 8)
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith(f"{line0}\nt = s + ") and prompt["suffix"] == "\n"
    # Whole line 0 in UTF-16 units is 12; the cursor at its end.
    await lc.inline(client, uri, 0, lc.utf16_len(line0))
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith(line0) and prompt["suffix"].startswith("\nt = s")


async def test_cancel_request_is_answered_and_frees_the_engine(client, repo):
    uri = lc.open_doc(client, repo / "cancel.py", "def long_function():\n    \n")
    params = T.InlineCompletionParams(
        context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
        text_document=T.TextDocumentIdentifier(uri), position=T.Position(1, 4))
    future = client.protocol.send_request(T.TEXT_DOCUMENT_INLINE_COMPLETION, params)
    msg_id = next(k for k, v in client.protocol._request_futures.items() if v is future)
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id=msg_id))
    with pytest.raises(Exception) as info:
        await asyncio.wait_for(asyncio.wrap_future(future), 120)
    assert "cancel" in str(info.value).lower()
    # The engine is free: the next request is answered.
    result = await lc.inline(client, uri, 1, 4)
    assert isinstance(result, T.InlineCompletionList)


async def test_a_newer_request_supersedes_an_older_one(client, repo):
    uri = lc.open_doc(client, repo / "supersede.py", "def f(a, b):\n    \n")
    first = asyncio.ensure_future(lc.inline(client, uri, 1, 4))
    second = asyncio.ensure_future(lc.inline(client, uri, 1, 4))
    a, b = await asyncio.gather(first, second)
    assert list(a.items) == []  # superseded: answered, empty
    prompt = await lc.last_prompt(client, uri)
    assert [i.insert_text for i in b.items] == ([prompt["completion"]] if prompt["completion"] else [])


async def test_status_reports_resident_memory_the_kv_cache_and_the_index(client, repo):
    uri = lc.open_doc(client, repo / "memory_figures.py", "def double(x):\n    return \n")
    await lc.inline(client, uri, 1, 11)
    status = await lc.request(client, "codellama/getStatus", {})
    memory = status["memory"]
    # The process holds at least the model's weights, and nowhere near a laptop's memory.
    weights = (default_model_dir() / "model.safetensors").stat().st_size
    assert weights < memory["residentBytes"] < 4 * 2**30
    # The KV cache holds the last prompt: keys and values of every layer, for a whole number of
    # 256-position steps at least as long as that prompt.
    config = json.loads((default_model_dir() / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    per_position = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * (
        2 if status["dtype"] in ("bfloat16", "float16") else 4)
    assert memory["kvCacheBytes"] % (256 * per_position) == 0
    assert memory["kvCacheBytes"] >= per_position * status["lastPromptTokens"] > 0
    # The index: the files the status counts, holding at least their text.
    assert memory["indexFiles"] == status["indexedFiles"] >= 4
    indexed_text = sum(len((repo / name).read_text()) for name in ("physics.py", "geometry.py", "app.py"))
    assert indexed_text < memory["indexBytes"] < 10 * 2**20
