"""Fixtures for the training tests: a small repository of real-looking code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

FUNCS = [
    "def add(a, b):\n    return a + b\n",
    "def mul(a, b):\n    return a * b\n",
    "def greet(name):\n    return f'hello {name}'\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
]


@pytest.fixture
def code_repo(tmp_path: Path) -> Path:
    """A git repository with source files, an ignored file, a secret-named file and a file holding a key."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        body = "\n\n".join(FUNCS[(i + j) % len(FUNCS)] for j in range(4))
        (root / "pkg" / f"mod{i}.py").write_text(f'"""Module {i}."""\n\n{body}')
    (root / ".gitignore").write_text("ignored_dir/\n*.log\n")
    (root / "ignored_dir").mkdir()
    (root / "ignored_dir" / "private.py").write_text("IGNORED_MARKER = 1\n")
    (root / "debug.log").write_text("IGNORED_LOG_MARKER\n")
    (root / ".env").write_text("API_TOKEN=ENV_SECRET_MARKER\n")
    (root / "keys.py").write_text(
        "KEY = '''-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKEY_SECRET_MARKER\n-----END RSA PRIVATE KEY-----'''\n"
    )
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root
