"""The fill-in-the-middle transform at the character level, as Code Llama trains it.

A document is split at two character positions drawn uniformly into (prefix, middle, suffix) and laid
out as tokens exactly like the engine's inference prompts (engine/prompts.py), followed by the middle
and `<EOT>`:

    PSM: BOS <PRE> encode(prefix) <SUF> encode_infill(suffix) <MID> encode_infill(middle) <EOT>
    SPM: BOS <PRE> <SUF> encode_infill(suffix) <MID> encode(prefix) encode_infill(middle) <EOT>

A document left whole is `BOS encode(document) EOS`.
"""

from __future__ import annotations

import random

from engine.prompts import psm_prompt, spm_prompt
from engine.tokenizer import Tokenizer


def split_document(text: str, rng: random.Random) -> tuple[str, str, str]:
    """(prefix, middle, suffix) at two uniform character positions (either may be empty)."""
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return text[:a], text[a:b], text[b:]


def fim_tokens(tok: Tokenizer, prefix: str, middle: str, suffix: str, spm: bool) -> list[int]:
    prompt = spm_prompt(tok, prefix, suffix) if spm else psm_prompt(tok, prefix, suffix)
    assert tok.eot_id is not None
    return prompt + tok.encode_infill(middle) + [tok.eot_id]


def plain_tokens(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, bos=True, eos=True)


def transform(
    tok: Tokenizer,
    text: str,
    rng: random.Random,
    fim_rate: float = 0.9,
    spm_rate: float = 0.5,
    max_tokens: int | None = None,
) -> tuple[list[int], str]:
    """Tokens for one document and its kind ('psm', 'spm' or 'plain').

    Only documents that fit one context (`max_tokens`) are FIM-transformed, as in the paper; the
    random draws are made for every document so the stream of choices does not depend on lengths.
    """
    do_fim = rng.random() < fim_rate
    use_spm = rng.random() < spm_rate
    prefix, middle, suffix = split_document(text, rng)
    if do_fim and tok.can_infill:
        ids = fim_tokens(tok, prefix, middle, suffix, use_spm)
        if max_tokens is None or len(ids) <= max_tokens:
            return ids, "spm" if use_spm else "psm"
    return plain_tokens(tok, text), "plain"
