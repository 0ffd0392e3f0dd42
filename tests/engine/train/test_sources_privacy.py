"""The training data source of a user's repository (engine.train.sources.collect_repo) takes no
git-ignored file, no secret-named file and no file holding a key: a fine-tuned model must never
learn one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.train.sources import collect_repo

AWS_KEY = "AKIA" + "QX7Z3EXAMPLEKEY7"


def test_training_data_holds_no_ignored_or_secret_file(tmp_path: Path):
    root = tmp_path / "repo"
    (root / ".ssh").mkdir(parents=True)
    files = {
        "app.py": "def area(w, h):\n    return w * h\n",
        ".gitignore": "local_settings.py\n",
        "local_settings.py": "DEBUG = True  # IGNORED_MARKER\n",
        ".env": "TOKEN=ENV_MARKER\n",
        ".env.production": "TOKEN=ENV_PROD_MARKER\n",
        "id_rsa": "RSA_MARKER\n",
        ".ssh/config.py": "SSH_MARKER = 1\n",
        "server.pem": "PEM_MARKER\n",
        "credentials.json": '{"token": "CREDENTIALS_MARKER"}\n',
        "aws.py": f'KEY = "{AWS_KEY}"  # AWS_MARKER\n',
        "tls.py": 'CERT = """-----BEGIN PRIVATE KEY-----\nPRIVATE_MARKER\n-----END PRIVATE KEY-----"""\n',
        "tokens.py": 'GITHUB = "ghp_' + "a" * 36 + '"  # GITHUB_MARKER\n',
    }
    for name, text in files.items():
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    collected = collect_repo(root)
    assert [f.path for f in collected] == ["app.py"]
    assert "MARKER" not in "".join(f.text for f in collected)
