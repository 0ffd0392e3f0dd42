"""The default model's "train as you serve" stage: repository examples laid out by the language
server's own context builder (lsp_server/adapt/examples.py), drawn from every package of the corpus.
For each package, the package's files are the workspace. Recipes sit above both packages, so this
imports lsp_server; engine/ never does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile
from lsp_server.adapt.examples import (
    KIND_WEIGHTS,
    KINDS,
    SERVER_CPU_BUDGET,
    LossWeights,
    ServedExample,
    ServedExamples,
)


def packages(files: Sequence[SourceFile], min_files: int = 3) -> dict[str, list[SourceFile]]:
    """Files grouped by package (SourceFile.repo); packages of fewer than min_files are no workspace."""
    out: dict[str, list[SourceFile]] = {}
    for f in files:
        if f.path.endswith(".py"):
            out.setdefault(f.repo, []).append(f)
    return {k: v for k, v in out.items() if len(v) >= min_files}


def served_examples(tok: Tokenizer, files: Sequence[SourceFile], max_tokens: int, seed: int,
                    per_cycle: int = 100, spm_rate: float = 0.7, budgets: tuple[int, int] = (384, SERVER_CPU_BUDGET),
                    full_budget_rate: float = 0.5, kind_weights: Sequence[float] = KIND_WEIGHTS,
                    loss_weights: LossWeights | None = None) -> Iterator[ServedExample]:
    """Examples of at most max_tokens, without end. The packages are visited in a random order, again
    and again; a cycle over all of them gives about per_cycle examples, shared out by the square root
    of each package's file count (big packages, the stdlib, do not drown the rest). Each visit writes
    and indexes the package once, so ask for about as many examples per cycle as will be used.
    The prompt budget is the server's CPU budget in full_budget_rate of the prompts, a budget drawn
    from `budgets` otherwise (short prompts put several middles in one window); spm_rate of the
    prompts are in SPM order, the rest PSM; kind_weights: how often each kind of cursor (KINDS). An
    `inherited` cursor is looked for in the files that have one, the other kinds in any file;
    loss_weights: how much each part of an example counts (examples.LossWeights; None: alike)."""
    rng = random.Random(seed)
    groups = packages(files)
    names = sorted(groups)
    weight = {k: len(v) ** 0.5 for k, v in groups.items()}
    total = sum(weight.values())
    visit = 0
    while True:
        rng.shuffle(names)
        for name in names:
            visit += 1
            want = max(1, round(per_cycle * weight[name] / total))
            ex = ServedExamples(tok, groups[name], seed=seed * 100_003 + visit, spm_rate=spm_rate,
                                kind_weights=kind_weights, loss_weights=loss_weights or LossWeights())
            made = tries = 0
            while made < want and tries < want * 6:
                tries += 1
                budget = SERVER_CPU_BUDGET if rng.random() < full_budget_rate else rng.randint(*budgets)
                kind = rng.choices(KINDS, kind_weights)[0]
                pool = groups[name]
                if kind == "inherited":
                    pool = [f for f in pool if f.path in ex.inherited_cursors()] or pool
                one = ex.example(rng.choice(pool), min(budget, max_tokens - 160), kind)
                if one is not None and len(one.tokens) <= max_tokens:
                    made += 1
                    yield one


