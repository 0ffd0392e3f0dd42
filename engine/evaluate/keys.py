"""The paper's synthetic key-retrieval task.

A window of real code (held-out files, path-headed and concatenated) with a small function inserted
at a relative position; the prompt ends with a question about it:

    BOS {code ...} \\n def my_function() -> int: ... return 57 \\n {code ...} \\n assert my_function() ==

The model must answer the two-digit key (greedy). The prompt is exactly the requested number of
tokens. The code window is cut at line boundaries; the surplus of the last line taken is dropped at
whichever end of the window is farther from the key (so the key's surroundings are whole lines), and
the key sits at the line boundary nearest to its relative position.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.cache import KVCache
from engine.generate import Sampling, generate
from engine.healing import TokenHealer
from engine.model import Transformer
from engine.tokenizer import Tokenizer
from engine.train.data import path_header
from engine.train.sources import SourceFile

KEY_FUNCTION = 'def my_function() -> int:\n    """Note that this function is used at the end\n    """\n    return {key}\n'
QUESTION = "assert my_function() == "
POSITIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class KeyPrompt:
    tokens: list[int]
    key: int
    position: float  # the requested relative position of the key
    key_start: int  # index in `tokens` where the key function's tokens begin
    key_length: int  # number of tokens of the key function (with its blank lines)


class CodeFiller:
    """Lines of real code (files concatenated, each after a path header), tokenised lazily."""

    def __init__(self, tok: Tokenizer, files: Sequence[SourceFile]) -> None:
        self.tok = tok
        self.lines: list[str] = []
        for f in files:
            text = f.text if f.text.endswith("\n") else f.text + "\n"
            self.lines += (path_header(f.path) + text).splitlines(keepends=True)
        if not self.lines:
            raise ValueError("key retrieval needs some code to fill the context: no files given")
        self._ids: dict[int, list[int]] = {}

    def line_ids(self, i: int) -> list[int]:
        i %= len(self.lines)  # wrap around when the code is shorter than the context
        if i not in self._ids:
            self._ids[i] = self.tok.encode_infill(self.lines[i])
        return self._ids[i]


def build_prompt(filler: CodeFiller, length: int, position: float, key: int, start_line: int = 0) -> KeyPrompt:
    """A prompt of exactly `length` tokens with the key function at relative `position` (0..1)."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"key position must be within [0, 1], not {position}")
    tok = filler.tok
    key_ids = tok.encode_infill("\n" + KEY_FUNCTION.format(key=key) + "\n")
    tail_ids = tok.encode_infill("\n" + QUESTION)
    budget = length - 1 - len(key_ids) - len(tail_ids)  # code tokens around the key (BOS is 1)
    if budget < 0:
        raise ValueError(f"a key-retrieval prompt needs more than {length} tokens")

    # Whole lines until the budget is covered; `bounds[j]` = tokens in the first j lines.
    lines: list[list[int]] = []
    bounds = [0]
    while bounds[-1] < budget:
        lines.append(filler.line_ids(start_line + len(lines)))
        bounds.append(bounds[-1] + len(lines[-1]))
    surplus = bounds[-1] - budget
    cut_start = position >= 0.5  # drop the surplus at the end farther from the key
    drop_front = surplus if cut_start else 0
    target = position * budget
    # The line boundary that puts the key nearest its target once the front surplus is dropped.
    j = min(range(len(bounds)), key=lambda b: (abs(bounds[b] - drop_front - target), b))
    before = [t for ids in lines[:j] for t in ids]
    after = [t for ids in lines[j:] for t in ids]
    if cut_start:
        if len(before) < surplus:  # not enough before the key: take the rest from after it
            after = after[: len(after) - (surplus - len(before))]
            before = []
        else:
            before = before[surplus:]
    else:
        after = after[: len(after) - surplus] if surplus else after
    tokens = [tok.bos_id] + before + key_ids + after + tail_ids
    assert len(tokens) == length, f"key prompt has {len(tokens)} tokens, wanted {length}"
    return KeyPrompt(tokens, key, position, 1 + len(before), len(key_ids))


def answer_of(text: str) -> int | None:
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else None


@torch.inference_mode()
def ask(
    model: Transformer, tok: Tokenizer, healer: TokenHealer | None, prompt: list[int], cache: KVCache,
    max_new_tokens: int = 4,
) -> str:
    """Greedy answer text after the prompt (with token healing of the prompt's last token)."""
    constrain, healed = None, ""
    if healer is not None:
        text = healer.heal_text(prompt[-1])
        if text:
            healed, prompt = text, prompt[:-1]
            constrain = healer.constraint(healed)
    result = generate(model, cache, prompt, max_new_tokens + (1 if healed else 0), tok.stop_ids(),
                      Sampling(), constrain=constrain)
    out = tok.decode_infill(result.tokens)
    return out[len(healed):] if out.startswith(healed) else out


def evaluate(
    model: Transformer,
    tok: Tokenizer,
    files: Sequence[SourceFile],
    lengths: Sequence[int],
    positions: Sequence[float] = POSITIONS,
    samples: int = 4,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    token_healing: bool = True,
    progress=None,
) -> dict:
    """Accuracy by context length and key position: {"by_length": {L: {pos: acc}}, "cases": [...]}.

    `dtype` is the KV cache's storage: the model's dtype, or torch.int8 for the int8 KV cache.
    """
    filler = CodeFiller(tok, files)
    healer = TokenHealer(tok.piece_texts()) if token_healing else None
    rng = random.Random(seed)
    cases = []
    by_length: dict[int, dict[float, float]] = {}
    total, done = len(lengths) * samples * len(positions), 0
    for length in lengths:
        cache = KVCache(model.args, length + 8, device, dtype)
        hits = {p: 0 for p in positions}
        for s in range(samples):
            key = rng.randint(10, 99)
            start = s * len(filler.lines) // samples  # a different window of the code per sample
            for p in positions:
                kp = build_prompt(filler, length, p, key, start)
                answer = ask(model, tok, healer, kp.tokens, cache)
                ok = answer_of(answer) == key
                hits[p] += ok
                cases.append({"length": length, "position": p, "key": key, "answer": answer, "correct": ok})
                done += 1
                if progress:
                    progress(done, total)
        by_length[length] = {p: hits[p] / samples for p in positions}
    return {"by_length": by_length, "cases": cases}
