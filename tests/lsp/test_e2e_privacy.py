"""Secrets and the workspace boundary, end to end (`python -m lsp_server`, the default model): no
git-ignored file, secret-named file or secret-holding text reaches a completion prompt or a code
action's prompt, whether it is on disk or open in the editor; a file opened from outside the
workspace gets no context from anywhere; the remote backend's API key never shows in a debug log or
in codellama/lastPrompt. (The training side: tests/engine/train/test_sources_privacy.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from .raw_client import RawServer
from .test_e2e_remote import ANSWER, OpenAIish, Served

pytestmark = pytest.mark.slow

AWS_KEY = "AKIA" + "QX7Z3EXAMPLEKEY7"  # the shape of an AWS access key id
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
MARKERS = ("IGNORED_MARKER", "ENV_MARKER", "RSA_MARKER", "PEM_MARKER", "CREDENTIALS_MARKER", AWS_KEY,
           "PRIVATE KEY", "OUTSIDE_MARKER")
GOOD = "def scale_values(values, factor):\n    return [v * factor for v in values]\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("privacy")
    root = base / "repo"
    root.mkdir()
    files = {
        "good.py": GOOD,
        "neighbour.py": "def scale_neighbours(values):  # WORKSPACE_NEIGHBOUR_MARKER\n    return values\n",
        ".gitignore": "private_notes.py\n",
        "private_notes.py": "def scale_values_fast(values, factor):  # IGNORED_MARKER\n    return values\n",
        ".env": "SCALE_VALUES_TOKEN=ENV_MARKER\n",
        "id_rsa": "RSA_MARKER scale_values factor\n",
        "server.pem": f"PEM_MARKER\n{PRIVATE_KEY}\n",
        "credentials.json": '{"scale_values": "CREDENTIALS_MARKER"}\n',
        "aws_config.py": f'SCALE_VALUES_KEY = "{AWS_KEY}"  # scale_values factor\n',
        "tls.py": f'CERT = """{PRIVATE_KEY}"""  # scale_values factor\n',
    }
    for name, text in files.items():
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    outside = base / "elsewhere"
    outside.mkdir()
    (outside / "neighbour.py").write_text("def scale_neighbours(values):  # OUTSIDE_MARKER\n    return values\n")
    return root


@pytest.fixture(scope="module")
def server(workspace: Path):
    server = RawServer()
    # instructCapable: run code actions on the default model (it would refuse them before any prompt).
    server.initialize(workspace, {"maxNewTokens": 8, "instructCapable": True})
    assert server.wait_ready()["indexedFiles"] == 2  # good.py and neighbour.py
    yield server
    server.close()


def open_doc(server: RawServer, path: Path, text: str | None = None) -> str:
    text = path.read_text() if text is None else text
    server.notify("textDocument/didOpen", {"textDocument": {"uri": path.as_uri(), "languageId": "python",
                                                            "version": 1, "text": text}})
    return path.as_uri()


def complete(server: RawServer, uri: str, line: int, character: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    answer = server.request(f"c-{uri}-{line}", "textDocument/inlineCompletion", {
        "context": {"triggerKind": 1}, "textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
    prompt = server.request(f"p-{uri}-{line}", "codellama/lastPrompt", {"uri": uri})["result"]
    return answer["result"], prompt


def prompt_text(prompt: dict[str, Any]) -> str:
    return prompt["prefix"] + prompt["suffix"]


def test_no_secret_or_ignored_file_reaches_a_prompt_on_disk_or_open(server: RawServer, workspace: Path):
    # Every one of them open in the editor too (an editor may open any file).
    for name in (".env", "id_rsa", "server.pem", "credentials.json", "aws_config.py", "tls.py", "private_notes.py"):
        open_doc(server, workspace / name)
    open_doc(server, workspace.parent / "elsewhere" / "neighbour.py")
    text = ("from good import scale_values\nfrom private_notes import scale_values_fast\nimport aws_config\n"
            "import tls\n\n\ndef scale_all(values, factor):\n    return scale_")
    uri = open_doc(server, workspace / "main.py", text)
    _, prompt = complete(server, uri, 7, 17)
    assert prompt is not None
    assert "# def scale_values(values, factor):" in prompt_text(prompt)  # the repository context works...
    for marker in MARKERS:  # ...and holds nothing private
        assert marker not in prompt_text(prompt), marker
    assert {s["path"] for s in prompt["snippets"]} <= {"good.py", "neighbour.py", "main.py"}


def test_a_secret_typed_into_the_document_is_redacted_and_a_secret_file_gets_no_completion(
        server: RawServer, workspace: Path):
    uri = open_doc(server, workspace / "deploy.py", f'ACCESS_KEY = "{AWS_KEY}"\n\n\ndef upload(values):\n    return ')
    _, prompt = complete(server, uri, 4, 11)
    assert prompt is not None and AWS_KEY not in prompt_text(prompt)
    assert 'ACCESS_KEY = "<redacted>"' in prompt["prefix"]
    env = (workspace / ".env").as_uri()
    result, env_prompt = complete(server, env, 0, 5)
    assert result["items"] == [] and env_prompt is None  # no prompt was ever built from it


def test_a_code_action_on_code_holding_a_secret_is_refused(server: RawServer, workspace: Path):
    uri = open_doc(server, workspace / "deploy.py", f'ACCESS_KEY = "{AWS_KEY}"\n')
    answer = server.request("action", "workspace/executeCommand", {"command": "codellama.runAction", "arguments": [
        {"action": "explain", "uri": uri, "range": {"start": {"line": 0, "character": 0},
                                                   "end": {"line": 1, "character": 0}}}]})
    assert answer["error"]["code"] == -32803 and "key or token" in answer["error"]["message"]


def test_a_file_outside_the_workspace_gets_no_other_file_into_its_prompt(server: RawServer, workspace: Path):
    outside = workspace.parent / "elsewhere"
    # Its neighbour is open, and the workspace has a file of the same name that an import would find.
    uri = open_doc(server, outside / "main.py", "import neighbour\nfrom good import scale_values\n\n\n"
                                                "def run(values):\n    return neighbour.scale_")
    _, prompt = complete(server, uri, 5, 27)
    assert prompt is not None
    assert {s["source"] for s in prompt["snippets"]} <= {"local"}
    for marker in ("OUTSIDE_MARKER", "WORKSPACE_NEIGHBOUR_MARKER", "def scale_values(values, factor)"):
        assert marker not in prompt_text(prompt), marker


class KeyRecorder(OpenAIish):
    authorizations: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        KeyRecorder.authorizations.append(self.headers.get("Authorization", ""))
        super().do_POST()


def test_the_remote_api_key_never_shows_in_a_debug_log_or_in_last_prompt(tmp_path: Path):
    key = "sk-" + "remote0key0" * 4
    served = Served()
    served.start()
    served.httpd.RequestHandlerClass = KeyRecorder  # type: ignore[union-attr]
    log = tmp_path / "server.log"
    server = RawServer("--log-level", "debug", "--log-file", str(log))
    try:
        server.initialize(tmp_path, {"backend": f"http://127.0.0.1:{served.port}/v1", "apiKey": key,
                                     "maxNewTokens": 8})
        server.notify("workspace/didChangeConfiguration", {"settings": {"codellama": {
            "backend": f"http://127.0.0.1:{served.port}/v1", "apiKey": key, "maxNewTokens": 8}}})
        assert server.wait_ready(timeout=300)["state"] == "ready"
        uri = open_doc(server, tmp_path / "app.py", "def area(width, height):\n    return ")
        result, prompt = complete(server, uri, 1, 11)
        assert result["items"][0]["insertText"] == ANSWER  # it went through the remote server...
        assert f"Bearer {key}" in KeyRecorder.authorizations  # ...with the key
        status = server.request("s", "codellama/getStatus", {})["result"]
        for text in (str(prompt), str(status), log.read_text(), server.stderr_text()):
            assert key not in text
        assert "codellama/lastPrompt" in log.read_text()  # the debug log did record the traffic
    finally:
        server.close()
        served.stop()
