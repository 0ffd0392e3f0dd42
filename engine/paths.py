"""Where the repository and its embedded default model are (no imports: anything may use it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_model_dir() -> Path:
    """The embedded default model shipped in the repository (override: CODELLAMA_DEFAULT_MODEL)."""
    override = os.environ.get("CODELLAMA_DEFAULT_MODEL")
    return Path(override) if override else REPO_ROOT / "models" / "default"
