"""Shared fixtures: small real models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

# Test models are tiny: one thread is as fast as two, and idle OpenMP threads must not spin while
# other processes (servers under test, a training run) need the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model (Hugging Face layout, float32, grouped-query attention, rope base 1e6)
    with a real sentencepiece tokenizer that has Code Llama's four infilling pieces."""
    from engine.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hf")
