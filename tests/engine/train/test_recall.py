"""Recall documents: real code with planted definitions, each asked about at the end, of an exact length."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.evaluate.keys import KEY_FUNCTION, QUESTION
from engine.tokenizer import Tokenizer
from engine.train.recall import RecallDocuments, mix_windows
from engine.train.sources import SourceFile

STDLIB = Path(os.__file__).parent


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer(tiny_model_dir / "tokenizer.model")


@pytest.fixture(scope="module")
def files() -> list[SourceFile]:
    return [SourceFile("stdlib", n, (STDLIB / n).read_text()) for n in ("shlex.py", "fnmatch.py", "argparse.py")]


@pytest.mark.parametrize("n", [512, 777, 2048])
def test_documents_have_the_exact_length_and_every_question_follows_its_definition(tok, files, n):
    docs = RecallDocuments(tok, files, seed=n, spm_rate=0.5)
    layouts = set()
    for _ in range(12):
        doc = docs.document(n)
        assert len(doc.tokens) == n and doc.tokens[0] == tok.bos_id
        layouts.add(doc.spm)
        if doc.spm:  # BOS <PRE> <SUF> suffix <MID> code+questions, the last answer is the middle
            assert doc.tokens[1:3] == [tok.prefix_id, tok.suffix_id] and doc.tokens[-1] == tok.eot_id
            text = tok.decode_infill(doc.tokens[doc.tokens.index(tok.middle_id) + 1 : -1])
        else:
            assert doc.tokens[-1] == tok.eos_id
            text = tok.decode_infill(doc.tokens[1:-1])
        assert 2 <= len(doc.planted) <= 5 and sorted(map(id, doc.questions)) == sorted(map(id, doc.planted))
        asked = "".join(q.question + q.answer + "\n" for q in doc.questions)
        assert text.endswith(asked), text[-300:]
        code = text[: -len(asked)]
        for p in doc.planted:  # the value asked for is the one defined, and defined before the questions
            assert p.definition in code
            value = p.answer.removesuffix(")")
            assert value in p.definition.splitlines()[-1]
    assert layouts == {True, False}


def test_the_evaluation_key_function_and_question_never_occur(tok, files):
    docs = RecallDocuments(tok, files, seed=0)
    key_name = KEY_FUNCTION.split("(")[0]
    for _ in range(200):
        doc = docs.document(512)
        for p in doc.planted:
            assert key_name not in p.definition and "used at the end" not in p.definition
            assert p.question != QUESTION


def test_too_short_a_document_is_an_error(tok, files):
    with pytest.raises(ValueError, match="needs more than"):
        RecallDocuments(tok, files, seed=0).document(20)


def test_a_corpus_with_very_long_lines_still_gives_documents_of_the_asked_length(tok, files):
    """An SPM suffix drawn from a file of huge lines (data, minified code) can leave no room for code in
    a short document: that draw is made again rather than failing the whole stream."""
    huge = SourceFile("data", "table.py", "".join(f"ROW_{i} = {list(range(400))!r}\n" for i in range(40)))
    docs = RecallDocuments(tok, [*files, huge], seed=3, spm_rate=1.0)
    for n in (300, 400, 600) * 4:
        assert len(docs.document(n).tokens) == n


def test_mixed_windows_keep_real_slices_in_order_and_recall_documents_whole(tok, files):
    seq_len = 1536
    real = np.arange(10 * seq_len, dtype=np.uint16) % 5000 + 100  # recognisable "real" tokens
    out, counts = mix_windows(real, RecallDocuments(tok, files, seed=1), seq_len, 12, recall_share=0.5, seed=3)
    assert out.shape == (12 * seq_len,) and counts["real_windows"] + counts["recall_windows"] == 12
    assert counts["real_windows"] >= 2 and counts["recall_windows"] >= 2
    next_real = 0
    for w in range(12):
        window = out[w * seq_len : (w + 1) * seq_len]
        if window[0] == tok.bos_id:  # recall documents, back to back, none cut by the window's edge
            assert window[-1] in (tok.eos_id, tok.eot_id)
            ends = np.flatnonzero(np.isin(window, [tok.eos_id, tok.eot_id]))
            starts = np.flatnonzero(window == tok.bos_id)
            assert list(starts[1:]) == list(ends[:-1] + 1)
        else:
            assert np.array_equal(window, real[next_real : next_real + seq_len])
            next_real += seq_len
    assert counts["recall_documents"] >= counts["recall_windows"]
