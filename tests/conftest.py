"""Shared fixtures: small real models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores here; several test processes at once must not oversubscribe them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model (Hugging Face layout, float32, grouped-query attention, rope base 1e6)
    with a real sentencepiece tokenizer that has Code Llama's four infilling pieces."""
    from engine.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hf")
