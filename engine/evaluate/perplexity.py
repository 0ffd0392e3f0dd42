"""Perplexity by context length: the same tokens, predicted from longer and longer context.

Held-out files are tokenised as documents (`BOS text EOS`, as training lays out a plain document), or
with `concat` all files as one document in path-headed order (repository-level context, as the
training stream has it). Windows end at positions spread over the documents long enough for the
longest context; for every length L the window is the L tokens before that end, and only its last
`score_tokens` tokens are scored. The scored tokens are therefore identical for every L, and only the
context before them changes: a model that uses long context gets a lower perplexity at larger L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from engine.cache import KVCache
from engine.model import Transformer
from engine.tokenizer import Tokenizer
from engine.train.data import path_header
from engine.train.sources import SourceFile

CHUNK = 1024  # tokens per forward pass: bounds activation memory at long context


def documents(tok: Tokenizer, files: Sequence[SourceFile], concat: bool = False) -> list[list[int]]:
    if concat:
        text = "".join(path_header(f.path) + f.text + ("" if f.text.endswith("\n") else "\n") for f in files)
        return [tok.encode(text, bos=True, eos=True)]
    return [tok.encode(f.text, bos=True, eos=True) for f in files]


def window_ends(docs: Sequence[Sequence[int]], max_length: int, windows: int) -> list[tuple[int, int]]:
    """(document index, end position) of `windows` windows spread evenly over all valid ends.

    A valid end e has e >= max_length, so the longest window [e - max_length, e) fits.
    """
    spans = [(d, max_length, len(doc)) for d, doc in enumerate(docs) if len(doc) >= max_length]
    total = sum(hi - lo + 1 for _, lo, hi in spans)
    if total == 0:
        longest = max((len(d) for d in docs), default=0)
        raise ValueError(
            f"no held-out document has {max_length} tokens (the longest has {longest}): give longer "
            "files, smaller --lengths, or --concat to join the files into one document"
        )
    picks = sorted({(i * total) // windows + (total // windows) // 2 for i in range(windows)}) if windows < total \
        else list(range(total))
    out = []
    for k in picks:
        for d, lo, hi in spans:
            n = hi - lo + 1
            if k < n:
                out.append((d, lo + k))
                break
            k -= n
    return out


@torch.inference_mode()
def window_nll(
    model: Transformer, tokens: Sequence[int], score_tokens: int, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16, chunk: int = CHUNK,
) -> torch.Tensor:
    """NLL (float32, nats) of each of the last `score_tokens` tokens of `tokens`, given all before it.

    The window is run through the model in chunks with a KV cache (as the engine prefills), and the
    output projection is applied only to the positions that predict scored tokens. `dtype` is the
    cache's storage: the model's dtype, or torch.int8 for the int8 KV cache.
    """
    n = len(tokens)
    assert 0 < score_tokens < n, f"score {score_tokens} tokens of a {n}-token window"
    cache = KVCache(model.args, n, device, dtype)
    first_pred = n - 1 - score_tokens  # position whose output predicts the first scored token
    x_all = torch.tensor(tokens, dtype=torch.long, device=device)
    nll = []
    for start in range(0, n - 1, chunk):
        end = min(start + chunk, n - 1)  # the last token is only ever a target
        hidden = model(x_all[None, start:end], start_pos=start, cache=cache, return_hidden=True)  # (1, T, dim)
        cache.tokens.extend(tokens[start:end])
        lo = max(first_pred, start)
        if lo < end:
            logits = model.output(hidden[0, lo - start :]).float()  # (T', vocab)
            nll.append(F.cross_entropy(logits, x_all[lo + 1 : end + 1], reduction="none"))
    return torch.cat(nll)


def evaluate(
    model: Transformer,
    tok: Tokenizer,
    files: Sequence[SourceFile],
    lengths: Sequence[int],
    windows: int = 8,
    score_tokens: int = 256,
    concat: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    progress=None,
) -> dict:
    """{"by_length": {L: {"nll", "ppl", "tokens"}}, "windows": n, "score_tokens": k}."""
    lengths = sorted(set(lengths))
    score_tokens = min(score_tokens, lengths[0] // 2)
    docs = documents(tok, files, concat)
    ends = window_ends(docs, lengths[-1], windows)
    by_length = {}
    done, total = 0, len(lengths) * len(ends)
    for length in lengths:
        losses = []
        for d, e in ends:
            losses.append(window_nll(model, docs[d][e - length : e], score_tokens, device, dtype))
            done += 1
            if progress:
                progress(done, total)
        nll = float(torch.cat(losses).mean())
        by_length[length] = {"nll": nll, "ppl": math.exp(nll), "tokens": sum(len(x) for x in losses)}
    return {"by_length": by_length, "windows": len(ends), "score_tokens": score_tokens}
