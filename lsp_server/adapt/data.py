"""What an adaptation trains on: the workspace's files split into training and held-out files, and
training windows that open with the server's own prompts for cursors in the training files.

Held-out files never reach training, not even as repository snippets inside another file's prompt:
the examples' index holds the training files only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.tokenizer import Tokenizer
from engine.train.data import DataConfig, build_stream
from engine.train.sources import SourceFile

from .examples import (
    KIND_WEIGHTS,
    SERVER_CPU_BUDGET,
    LossWeights,
    ServedExample,
    ServedExamples,
    pack_windows,
)


@dataclass(frozen=True)
class Split:
    train: list[SourceFile]
    heldout: list[SourceFile]


def split_workspace(files: Sequence[SourceFile], fraction: float, seed: int, min_heldout: int = 2) -> Split:
    """Whole Python files held out by a stable hash order: about `fraction` of them, at least
    `min_heldout` (while at least as many remain to train on). Only files with real code are held
    out (an `__init__.py` of imports or a ten-line module says little about completions); other
    source files always train."""
    py = [f for f in files if f.path.endswith(".py")]
    candidates = sorted((f for f in py if _substantial(f)), key=lambda f: hashlib.sha1(f"{seed}:{f.path}".encode()).digest())
    n = min(max(min_heldout, round(fraction * len(py))), len(py) // 2, len(candidates))
    held = {f.path for f in candidates[:n]}
    return Split([f for f in files if f.path not in held], [f for f in files if f.path in held])


def _substantial(f: SourceFile, min_code_lines: int = 30) -> bool:
    name = f.path.rsplit("/", 1)[-1]
    code = sum(1 for line in f.text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return name not in ("__init__.py", "conftest.py", "setup.py") and code >= min_code_lines


@dataclass(frozen=True)
class ExampleMix:
    kind_weights: tuple[float, ...] = KIND_WEIGHTS  # over examples.KINDS
    spm_rate: float = 0.7
    context_rate: float = 0.9
    full_budget_rate: float = 0.5  # prompts at the server's budget; the rest at a smaller one
    loss_weights: LossWeights = LossWeights()


def served_stream(files: Sequence[SourceFile], tok: Tokenizer, mix: ExampleMix, seed: int,
                  max_tokens: int) -> Iterator[ServedExample]:
    """Served examples of at most max_tokens for cursors in the training files, without end."""
    rng = random.Random(seed)
    py = [f for f in files if f.path.endswith(".py")]
    examples = ServedExamples(tok, py, seed=seed, spm_rate=mix.spm_rate, context_rate=mix.context_rate,
                              kind_weights=mix.kind_weights, loss_weights=mix.loss_weights)
    while py:
        budget = SERVER_CPU_BUDGET if rng.random() < mix.full_budget_rate else rng.randint(384, SERVER_CPU_BUDGET)
        one = examples.example(rng.choice(py), min(budget, max_tokens - 200))
        if one is not None and len(one.tokens) <= max_tokens:
            yield one


def training_windows(files: Sequence[SourceFile], tok: Tokenizer, seq_len: int, n_windows: int, mix: ExampleMix,
                     seed: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, int]]:
    """n_windows windows of seq_len tokens (one more token at the end, for the last target): served
    examples first in each, the rest ordinary FIM documents of the same files. Also the tokens' loss
    weights (None when the mix weighs every token alike) and counts of what went in."""
    filler, _ = build_stream(list(files), tok, DataConfig(seq_len=seq_len, fim_rate=0.9, spm_rate=0.5, seed=seed))
    if len(filler) < seq_len + 1:  # a tiny workspace: repeat its documents
        filler = np.tile(filler, (seq_len + 1) // max(1, len(filler)) + 1)
    windows, weights, counts = pack_windows(served_stream(files, tok, mix, seed, seq_len), seq_len, n_windows,
                                            filler, seed)
    if weights is not None:
        weights = np.concatenate([weights, np.ones(1, dtype=weights.dtype)])
    return np.concatenate([windows, filler[:1]]), weights, counts
