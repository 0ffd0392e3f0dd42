"""Fixtures for the evaluation tests: held-out files of real code (the standard library, which the
tiny test tokenizer was not trained on) and the tiny model's tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile

STDLIB = Path(os.__file__).parent
HELDOUT = ("shlex.py", "fnmatch.py", "colorsys.py")


@pytest.fixture(scope="session")
def heldout_paths() -> list[Path]:
    return [STDLIB / name for name in HELDOUT]


@pytest.fixture(scope="session")
def heldout_files(heldout_paths: list[Path]) -> list[SourceFile]:
    return [SourceFile("stdlib", p.name, p.read_text(encoding="utf-8")) for p in heldout_paths]


@pytest.fixture(scope="session")
def tiny_tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer(tiny_model_dir / "tokenizer.model")
