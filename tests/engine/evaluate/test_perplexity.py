"""Perplexity by context length: the chunked, cached computation equals a plain forward pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.checkpoints import load_model
from engine.evaluate import perplexity


@pytest.fixture(scope="module")
def tiny_fp32(tiny_model_dir):
    return load_model(tiny_model_dir, dtype=torch.float32)


def test_window_nll_matches_a_direct_forward_pass(tiny_fp32, heldout_files):
    model, tok = tiny_fp32.model, tiny_fp32.tokenizer
    tokens = tok.encode(heldout_files[0].text, bos=True)[:300]
    # Small chunks, so the scored tokens straddle chunk boundaries and the KV cache is used.
    nll = perplexity.window_nll(model, tokens, score_tokens=70, dtype=torch.float32, chunk=64)
    with torch.inference_mode():
        logits = model(torch.tensor([tokens]))[0].float()  # (T, vocab)
    direct = F.cross_entropy(logits[-71:-1], torch.tensor(tokens[-70:]), reduction="none")
    assert nll.shape == (70,)
    torch.testing.assert_close(nll, direct, atol=1e-4, rtol=1e-4)


def test_every_length_scores_the_same_tokens(tiny_fp32, heldout_files):
    tok = tiny_fp32.tokenizer
    docs = perplexity.documents(tok, heldout_files)
    ends = perplexity.window_ends(docs, 256, windows=3)
    assert len(ends) == 3 and all(e >= 256 and e <= len(docs[d]) for d, e in ends)
    result = perplexity.evaluate(tiny_fp32.model, tok, heldout_files, [64, 256], windows=3, score_tokens=16,
                                 dtype=torch.float32)
    for length in (64, 256):
        r = result["by_length"][length]
        assert r["tokens"] == 3 * 16
        assert math.isclose(r["ppl"], math.exp(r["nll"])) and r["ppl"] > 1


def test_no_document_long_enough_is_an_error_that_says_what_to_do(tiny_fp32, heldout_files):
    docs = perplexity.documents(tiny_fp32.tokenizer, heldout_files)
    with pytest.raises(ValueError, match="--concat"):
        perplexity.window_ends(docs, 10**7, windows=2)
    joined = perplexity.documents(tiny_fp32.tokenizer, heldout_files, concat=True)
    assert len(joined) == 1 and len(joined[0]) > max(len(d) for d in docs)
