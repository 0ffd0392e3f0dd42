"""The FIM transform lays out training sequences exactly like the engine's inference prompts."""

from __future__ import annotations

import random

import pytest

from engine.prompts import psm_prompt, spm_prompt
from engine.tokenizer import Tokenizer
from engine.train.fim import fim_tokens, split_document, transform


@pytest.fixture(scope="module")
def tok(tiny_model_dir) -> Tokenizer:
    return Tokenizer(tiny_model_dir / "tokenizer.model")


CASES = [
    ("", "x = 1", "\nprint(x)\n"),  # empty prefix
    ("def f():\n    ", "return 1", ""),  # empty suffix
    ("", "", ""),  # everything empty
    ("s = 'naïve café ", "日本語 ✓", "'\n# ünïcödé 🙂\n"),  # non-ASCII, multi-byte, astral
]


@pytest.mark.parametrize("prefix,middle,suffix", CASES)
@pytest.mark.parametrize("spm", [False, True])
def test_fim_sequence_is_prompt_then_middle_then_eot(tok, prefix, middle, suffix, spm):
    ids = fim_tokens(tok, prefix, middle, suffix, spm)
    prompt = spm_prompt(tok, prefix, suffix) if spm else psm_prompt(tok, prefix, suffix)
    # The training sequence begins with exactly the tokens the engine will prompt with ...
    assert ids[: len(prompt)] == prompt
    # ... then the middle as generated mid-stream, then <EOT>; each sentinel appears exactly once.
    assert ids[len(prompt) :] == tok.encode_infill(middle) + [tok.eot_id]
    for sentinel in (tok.prefix_id, tok.suffix_id, tok.middle_id, tok.eot_id):
        assert ids.count(sentinel) == 1
    assert ids[0] == tok.bos_id
    # The pieces decode back to the original text.
    mid = ids.index(tok.middle_id)
    suf = ids.index(tok.suffix_id)
    if spm:
        assert tok.decode_infill(ids[suf + 1 : mid]) == suffix
        assert tok.decode(ids[mid + 1 : -1]) == prefix + middle
    else:
        assert tok.decode(ids[2:suf]) == prefix
        assert tok.decode_infill(ids[suf + 1 : mid]) == suffix
        assert tok.decode_infill(ids[mid + 1 : -1]) == middle


def test_split_covers_document_and_transform_mixes_formats(tok):
    rng = random.Random(0)
    text = "def f(x):\n    return x * 2  # é\n" * 3
    for _ in range(50):
        p, m, s = split_document(text, rng)
        assert p + m + s == text
    kinds = [transform(tok, text, rng, fim_rate=0.9, spm_rate=0.5)[1] for _ in range(400)]
    assert 0.05 < kinds.count("plain") / 400 < 0.17
    assert abs(kinds.count("psm") - kinds.count("spm")) < 80


def test_documents_longer_than_a_context_stay_plain(tok):
    rng = random.Random(0)
    text = "x = 1\n" * 200
    kinds = {transform(tok, text, rng, fim_rate=1.0, max_tokens=50)[1] for _ in range(20)}
    assert kinds == {"plain"}
    ids, _ = transform(tok, text, rng, fim_rate=1.0, max_tokens=50)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids[1:-1]) == text
