"""End to end against a real llama.cpp server: `python -m llama_cpp.server` (llama-cpp-python) serving
the default model exported by `python -m engine export --format gguf`, on 127.0.0.1.

- The remote backend learns what the server is (llama-cpp-python: /extras/tokenize, no /props), picks
  the spelling of the infilling pieces its tokenizer reads, and its prompt text becomes the engine's
  prompt ids on the server; greedy completions through the server are the engine's own.
- `python -m lsp_server` configured with the server's URL answers inline completions through it, says
  clearly when the server is killed, and recovers when it comes back on the same port.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test-integration)")

from engine.backends.base import CompletionRequest  # noqa: E402
from engine.backends.remote import RemoteBackend  # noqa: E402
from engine.prompts import PIECE_MARKERS, fim_prompt_text  # noqa: E402
from tests.lsp import lsp_client as lc  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
in_module_loop = pytest.mark.asyncio(loop_scope="module")

# Suffixes for which the prompt text tokenizes on llama.cpp to exactly the engine's ids (empty, or
# starting with a space), and one that gets llama.cpp's extra space (a newline first: the usual case).
EXACT = [
    ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        ", ""),
    ("def add(a, b):\n    return a", " + b\n"),
    ("import os\n\n\ndef home():\n    return os.", ""),
]
SPACED = [("import json\n\n\ndef load(path):\n    with open(path) as f:\n        ", "\n")]
MAX_NEW = 24


@pytest.fixture(scope="module")
def local(engine_f32):
    return engine_f32


@pytest.fixture(scope="module")
def remote(llama_server):
    backend = RemoteBackend(llama_server.url + "/v1", read_timeout=120.0)
    yield backend
    backend.close()


def server_tokens(url: str, text: str) -> list[int]:
    """llama-cpp-python's own tokenizer on the text it is sent (special pieces parsed, BOS added)."""
    req = urllib.request.Request(url + "/extras/tokenize", data=json.dumps({"input": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["tokens"]


def test_the_backend_recognises_llama_cpp_python_and_reads_its_pieces(remote, llama_server):
    assert remote.state == "ready"
    assert remote.server_kind == "llama-cpp-python" and "llama-cpp-python" in remote.description
    assert remote._markers == PIECE_MARKERS and not remote._use_infill
    assert remote.count_tokens("def f(x):\n    return x\n") > 0


@pytest.mark.parametrize("fmt", ["spm", "psm"])
def test_prompt_text_becomes_the_engines_prompt_ids_on_the_server(remote, local, llama_server, fmt):
    from engine.prompts import infill_prompt

    tok = local.tok
    for prefix, suffix in EXACT:
        text = fim_prompt_text(prefix, suffix, fmt, remote._markers)
        assert server_tokens(llama_server.url, text) == infill_prompt(tok, prefix, suffix, fmt)
    for prefix, suffix in SPACED:  # llama.cpp's space in front of the suffix, nothing else
        text = fim_prompt_text(prefix, suffix, fmt, remote._markers)
        assert server_tokens(llama_server.url, text) == infill_prompt(tok, prefix, " " + suffix, fmt)


@pytest.mark.parametrize("prefix,suffix", EXACT, ids=range(len(EXACT)))
def test_greedy_completion_through_the_server_is_the_engines(remote, local, prefix, suffix):
    # SPM: the default model's format (PSM is compared token by token in test_gguf_parity).
    request = CompletionRequest(prefix=prefix, suffix=suffix, fim_format="spm", max_new_tokens=MAX_NEW,
                                token_healing=False)
    ours, theirs = local.complete(request), remote.complete(request)
    print(f"\n{prefix.splitlines()[-1]!r}|{suffix[:8]!r}: {theirs.text!r} ({theirs.stop_reason}, "
          f"{theirs.timings.total_ms:.0f} ms)")
    assert theirs.text and (theirs.text, theirs.stop_reason) == (ours.text, ours.stop_reason)


def test_a_stop_string_ends_the_completion_on_the_server(remote, local):
    prefix, suffix = EXACT[0]
    request = CompletionRequest(prefix=prefix, suffix=suffix, fim_format="spm", max_new_tokens=MAX_NEW,
                                stop=["\n"], token_healing=False)
    theirs = remote.complete(request)
    # llama-cpp-python says finish_reason "stop" for a stop string and for the end of infill alike (no
    # vLLM-style stop_reason): the backend cannot tell which; either way it is no cut at the token limit.
    assert theirs.text == "self.items.append(x)" and theirs.stop_reason in ("stop_string", "eot")
    assert local.complete(request).text == theirs.text


def test_a_prompt_longer_than_the_servers_context_is_explained(default_gguf, tmp_path):
    # llama-cpp-python raises inside the stream: 200, then the connection closes without an event.
    from engine.backends.base import BackendError

    from .conftest import LlamaServer

    small = LlamaServer(default_gguf, tmp_path / "small.log", n_ctx=256).start()
    try:
        backend = RemoteBackend(small.url + "/v1", retries=0)
        with pytest.raises(BackendError, match="--n_ctx") as err:
            backend.complete(CompletionRequest(prefix="x = 1\n" * 200, max_new_tokens=8))
        assert "unreachable" not in str(err.value)
        assert backend.complete(CompletionRequest(prefix="x = 1\n" * 20, max_new_tokens=8)).text
    finally:
        small.kill()
    assert "exceed context window" in small.log_tail(20000)


# ---- the language server, configured with the server's URL ---------------------------------------


DOC = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        "


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(llama_server, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("llamacpp-repo")
    (root / "util.py").write_text("def first(items):\n    return items[0]\n")
    client = await lc.start(root, {"backend": f"{llama_server.url}/v1", "maxNewTokens": 48})
    status = await lc.wait_ready(client, timeout=600)
    assert status["backend"] == f"{llama_server.url}/v1" and status["device"] in (None, "remote")
    client.root = root  # type: ignore[attr-defined]
    yield client
    await client.shutdown_session()
    await client.stop()


async def complete(client, name: str) -> tuple[str, str]:
    """An inline completion at the end of a new document (a new file each time: the same text would be
    answered from the suggestion cache); (the suggestion, its document's URI)."""
    uri = lc.open_doc(client, Path(client.root) / f"{name}.py", DOC)
    line = DOC.count("\n")
    result = await lc.inline(client, uri, line, len(DOC.splitlines()[-1]) if not DOC.endswith("\n") else 0,
                             timeout=300)
    return (result.items[0].insert_text if result.items else ""), uri


@in_module_loop
async def test_inline_completions_come_from_llama_cpp(client, local):
    text, uri = await complete(client, "stack")
    assert text.startswith("self.items.append(x)"), text
    prompt = await lc.last_prompt(client, uri)
    assert prompt["fimFormat"] == "spm" and prompt["prefix"].endswith(DOC) and prompt["suffix"] == ""
    # The server's greedy text is the engine's for the language server's own prompt (it may have stopped
    # the generation early, once post-processing would cut the rest).
    ours = local.complete(CompletionRequest(prefix=prompt["prefix"], suffix=prompt["suffix"], fim_format="spm",
                                            max_new_tokens=48, token_healing=False))
    assert prompt["rawCompletion"] and ours.text.startswith(prompt["rawCompletion"])


@in_module_loop
async def test_killing_the_server_gives_a_clear_status_and_the_language_server_recovers(client, llama_server):
    llama_server.kill()
    try:
        text, _ = await complete(client, "while_down")
        assert text == ""
        status = await lc.wait_for(client, lambda s: s["state"] == "error", timeout=120)
        assert "remote server" in status["message"] and "unreachable" in status["message"]
        assert str(llama_server.port) in status["message"]
        assert any(str(llama_server.port) in m.message for m in client.messages)  # told once, as a message
    finally:
        llama_server.start()  # same port
    text, _ = await complete(client, "after_restart")
    assert text.startswith("self.items.append(x)"), text
    status = await lc.wait_for(client, lambda s: s["state"] == "ready", timeout=120)
    assert status["message"] is None
