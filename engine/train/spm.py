"""Train a Code Llama–style sentencepiece tokenizer on a corpus.

BPE with byte fallback, digits split, whitespace kept exactly (no normalisation, runs of spaces allowed
as pieces so indentation is cheap), newlines as ordinary characters (trained on multi-line chunks, so
`\\n` gets its own piece instead of a byte-fallback token), unk=0 bos=1 eos=2 as in Llama, and the four
infilling pieces `▁<PRE> ▁<SUF> ▁<MID> ▁<EOT>` as control pieces (never produced from text; the engine
looks them up by piece).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

INFILL_PIECES = ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]
CHUNK_CHARS = 2000  # sentencepiece caps one "sentence"; cut documents at line ends below this


def chunks(texts: Iterable[str], max_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Multi-line pieces of each text, cut at line ends, each at most max_chars."""
    for text in texts:
        buf = ""
        for line in text.splitlines(keepends=True):
            if len(buf) + len(line) > max_chars and buf:
                yield buf
                buf = ""
            buf += line[:max_chars]
        if buf:
            yield buf


def train_tokenizer(
    texts: Iterable[str],
    out_path: str | Path,
    vocab_size: int = 8192,
    max_sentences: int = 200_000,
    seed: int = 0,
) -> Path:
    """Train on (a random sample of) the chunks of `texts`; writes `out_path` (a tokenizer.model)."""
    pieces = list(chunks(texts))
    random.Random(seed).shuffle(pieces)
    pieces = pieces[:max_sentences]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(pieces),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.9999,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        max_sentence_length=CHUNK_CHARS * 4 + 16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=INFILL_PIECES,
        num_threads=2,
        train_extremely_large_corpus=False,
        minloglevel=2,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.getvalue())
    return out_path
