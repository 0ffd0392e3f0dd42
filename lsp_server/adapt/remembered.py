"""Where adapters live, and which one each workspace uses.

Everything is kept outside the user's repository (which stays clean, and whose index never sees an
adapter), in one folder per workspace under the user's data directory:

    $XDG_DATA_HOME/codellama/workspaces/<name>-<hash of the path>/   (~/.local/share/codellama/...)
        training/      the newest run's OUT (adapter, report, run/ checkpoints, train.log, job.json)
        adapter/       the adapter the user accepted (its files and its report, copied from training/)
        accepted.json  the accepted adapter: its path, the model it was trained for, its measured gain

The language server applies the accepted adapter in that workspace unless the `adapter` setting
names one (an explicit setting wins).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..settings import Settings

ACCEPTED_FILE = "accepted.json"
ADAPTER_FILES = ("adapter.safetensors", "adapter.json", "report.json", "report.txt", "report.png", "heldout.json")


def data_dir(env: dict[str, str] | None = None) -> Path:
    """The user's data directory for codellama (CODELLAMA_DATA_DIR overrides it)."""
    env = dict(os.environ) if env is None else env
    if env.get("CODELLAMA_DATA_DIR"):
        return Path(env["CODELLAMA_DATA_DIR"])
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "codellama"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "codellama"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "codellama"


def workspace_dir(root: Path, base: Path) -> Path:
    """The folder of one workspace: readable name, and a hash so equal names do not collide."""
    resolved = str(root.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name)[:40] or "root"
    return base / "workspaces" / f"{name}-{digest}"


def model_identity(model: str | None) -> str | None:
    """The `model` setting as an adapter remembers it: an absolute path, None for the default model."""
    return str(Path(model).expanduser().resolve()) if model else None


@dataclass(frozen=True)
class AcceptedAdapter:
    """An adapter the user accepted for a workspace, and what its report measured."""

    adapter: str
    workspace: str
    model: str | None  # model_identity() of the model it was trained on
    exact_match_before: float | None = None
    exact_match_after: float | None = None
    heldout_files: int | None = None
    accepted_at: str = ""

    def as_status(self) -> dict[str, Any]:
        return {"path": self.adapter, "source": "workspace", "exactMatchBefore": self.exact_match_before,
                "exactMatchAfter": self.exact_match_after, "heldoutFiles": self.heldout_files}


class WorkspaceAdapters:
    """The folders of one workspace (see the module's docstring)."""

    def __init__(self, root: Path, base: Path | None = None) -> None:
        self.root = root.resolve()
        self.folder = workspace_dir(self.root, base if base is not None else data_dir())

    @property
    def training(self) -> Path:
        return self.folder / "training"

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    def accepted(self) -> AcceptedAdapter | None:
        """The accepted adapter, if any and its files are still there."""
        try:
            data = json.loads((self.folder / ACCEPTED_FILE).read_text(encoding="utf-8"))
            accepted = AcceptedAdapter(**data)
        except (OSError, ValueError, TypeError):
            return None
        return accepted if Path(accepted.adapter).is_dir() else None

    def accept(self, done: dict[str, Any], model: str | None, heldout_files: int | None) -> AcceptedAdapter:
        """Keep the finished run's adapter (and its report) as this workspace's, and remember it."""
        source = Path(str(done.get("adapter") or self.training))
        staging = self.folder / "adapter.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        shutil.rmtree(self.adapter, ignore_errors=True)
        staging.rename(self.adapter)
        accepted = AcceptedAdapter(
            adapter=str(self.adapter), workspace=str(self.root), model=model_identity(model),
            exact_match_before=_percent(done.get("exact_match_before")),
            exact_match_after=_percent(done.get("exact_match_after")),
            heldout_files=heldout_files, accepted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (self.folder / ACCEPTED_FILE).write_text(json.dumps(asdict(accepted), indent=1), encoding="utf-8")
        return accepted

    def forget(self) -> bool:
        """Drop the accepted adapter; True when there was one."""
        had = (self.folder / ACCEPTED_FILE).exists()
        (self.folder / ACCEPTED_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.adapter, ignore_errors=True)
        return had


def _percent(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def applies(accepted: AcceptedAdapter | None, settings: Settings) -> bool:
    """Whether the workspace's accepted adapter goes on the model these settings load: not when the
    `adapter` setting names one (it wins), not on a remote backend, not on another model than the one
    it was trained for."""
    return (accepted is not None and not settings.adapter and settings.backend == "local"
            and accepted.model == model_identity(settings.model))


def with_accepted(settings: Settings, accepted: AcceptedAdapter | None) -> Settings:
    """The settings the server loads its model with: the client's, plus the workspace's adapter."""
    return replace(settings, adapter=accepted.adapter) if accepted is not None and applies(accepted, settings) else settings


def adapter_status(client_settings: Settings, accepted: AcceptedAdapter | None) -> dict[str, Any] | None:
    """`adapter` in codellama/status: the adapter in use, where it comes from and its measured gain."""
    if client_settings.adapter:
        return {"path": client_settings.adapter, "source": "setting"}
    if accepted is None:
        return None
    status = accepted.as_status()
    status["applied"] = applies(accepted, client_settings)
    return status
