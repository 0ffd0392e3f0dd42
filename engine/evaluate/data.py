"""Held-out source files for evaluation, from whichever form the user has them in:

- files or directories (`--files`; directories are walked like the language server walks a workspace:
  .gitignore respected, vendored, generated, binary and secret files skipped),
- a list of paths, one per line (`--file-list`),
- JSON lines of {"repo", "path", "text"} (`--data-jsonl`; the default model's corpus/heldout.jsonl),
- a training run's `heldout.json` ({"repo", "path"} entries) resolved against `--repo` directories.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.train.sources import SourceFile


def _read(path: Path) -> str | None:
    from engine.sourcefiles import read_source_text

    return read_source_text(path)


def files_from_paths(paths: Iterable[str | Path]) -> list[SourceFile]:
    """Each path a file or a directory (walked with engine.sourcefiles)."""
    from engine.sourcefiles import iter_source_files

    out: list[SourceFile] = []
    for p in map(Path, paths):
        if p.is_dir():
            for rel in iter_source_files(p):
                text = _read(p / rel)
                if text is not None and text.strip():
                    out.append(SourceFile(p.resolve().name, rel, text))
        elif p.is_file():
            text = _read(p)
            if text is not None and text.strip():
                out.append(SourceFile(p.parent.name, p.name, text))
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def files_from_list(list_file: str | Path) -> list[SourceFile]:
    """Paths one per line ('#' comments allowed); relative ones are relative to the list's folder."""
    list_file = Path(list_file)
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            paths.append(p if p.is_absolute() else list_file.parent / p)
    return files_from_paths(paths)


def files_from_jsonl(path: str | Path) -> list[SourceFile]:
    with open(path, encoding="utf-8") as fh:
        return [SourceFile(d.get("repo", ""), d["path"], d["text"]) for d in map(json.loads, fh) if d.get("text")]


def files_from_heldout(heldout_json: str | Path, repos: Sequence[str | Path]) -> list[SourceFile]:
    """A training run's held-out list, each entry found in the `--repo` directory of that name."""
    roots = {Path(r).resolve().name: Path(r) for r in repos}
    out: list[SourceFile] = []
    for entry in json.loads(Path(heldout_json).read_text()):
        root = roots.get(entry["repo"])
        if root is None:
            raise ValueError(
                f"{heldout_json}: file {entry['path']!r} is from repository {entry['repo']!r}; "
                f"pass that repository with --repo (have: {', '.join(roots) or 'none'})"
            )
        text = _read(root / entry["path"])
        if text is not None and text.strip():
            out.append(SourceFile(entry["repo"], entry["path"], text))
    return out


def load_files(
    files: Sequence[str] = (),
    file_list: str | None = None,
    data_jsonl: Sequence[str] = (),
    heldout: str | None = None,
    repos: Sequence[str] = (),
    exts: Sequence[str] = (),
) -> list[SourceFile]:
    """All files named by the evaluation flags, filtered by extension (`exts`, e.g. ['.py'])."""
    out = files_from_paths(files)
    if file_list:
        out += files_from_list(file_list)
    for path in data_jsonl:
        out += files_from_jsonl(path)
    if heldout:
        out += files_from_heldout(heldout, repos)
    if exts:
        wanted = tuple(e if e.startswith(".") else "." + e for e in exts)
        out = [f for f in out if f.path.endswith(wanted)]
    return out
