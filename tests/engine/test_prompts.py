"""FIM and instruct prompt layouts, token for token, against lists written by hand."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sentencepiece as spm

from engine.prompts import instruct_prompt, left_to_right_prompt, psm_prompt, spm_prompt
from engine.tokenizer import INFILL_PIECES, Tokenizer


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A character-level tokenizer: every piece is one character, so expected ids are easy to write."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["abc def", "a b c", "x = 1"]),
        model_writer=buf,
        model_type="char",
        vocab_size=4 + 4 + 11,
        user_defined_symbols=list(INFILL_PIECES),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        byte_fallback=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    path: Path = tmp_path_factory.mktemp("chartok") / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return Tokenizer(path)


def ids(tok: Tokenizer, *pieces: str) -> list[int]:
    out = []
    for p in pieces:
        i = tok.sp.piece_to_id(p)
        assert tok.sp.id_to_piece(i) == p, f"piece {p!r} not in the test vocabulary"
        out.append(i)
    return out


def test_infill_pieces_are_found_by_piece(char_tok):
    assert char_tok.can_infill
    assert [char_tok.id_to_piece(i) for i in (char_tok.prefix_id, char_tok.suffix_id, char_tok.middle_id,
                                             char_tok.eot_id)] == list(INFILL_PIECES)
    assert char_tok.stop_ids() == {char_tok.eos_id, char_tok.eot_id}


def test_psm_prompt_layout(char_tok):
    # A prefix that ends in a space and a suffix that starts with one.
    got = psm_prompt(char_tok, "a b ", " c")
    bos, pre, suf, mid = 1, char_tok.prefix_id, char_tok.suffix_id, char_tok.middle_id
    # encode(prefix) keeps sentencepiece's implicit leading space; the suffix gets none of its own.
    expected = [bos, pre] + ids(char_tok, "▁", "a", "▁", "b", "▁") + [suf] + ids(char_tok, "▁", "c") + [mid]
    assert got == expected


def test_spm_prompt_layout(char_tok):
    got = spm_prompt(char_tok, "a b ", " c")
    bos, pre, suf, mid = 1, char_tok.prefix_id, char_tok.suffix_id, char_tok.middle_id
    expected = [bos, pre, suf] + ids(char_tok, "▁", "c") + [mid] + ids(char_tok, "▁", "a", "▁", "b", "▁")
    assert got == expected


def test_empty_prefix_and_suffix(char_tok):
    bos, pre, suf, mid = 1, char_tok.prefix_id, char_tok.suffix_id, char_tok.middle_id
    assert psm_prompt(char_tok, "", "") == [bos, pre, suf, mid]
    assert spm_prompt(char_tok, "", "") == [bos, pre, suf, mid]


def test_mid_stream_encoding_round_trips_leading_space(char_tok):
    for text in (" c", "c ", "  a  b", "x = 1"):
        assert char_tok.decode_infill(char_tok.encode_infill(text)) == text
    assert char_tok.encode_infill(" c") == ids(char_tok, "▁", "c")
    assert char_tok.encode("c") == ids(char_tok, "▁", "c")  # the implicit space


def test_text_with_a_lone_surrogate_still_encodes(char_tok):
    # JSON lets an editor (or a fuzzer) send "\ud800"; sentencepiece alone raises on it.
    assert char_tok.encode("a\ud800b") == char_tok.encode("a\ufffdb")
    assert char_tok.encode_infill("\udfff c") == char_tok.encode_infill("\ufffd c")


def test_instruct_prompt(char_tok, tiny_model_dir):
    tok = Tokenizer(tiny_model_dir / "tokenizer.model")
    with_sys = instruct_prompt(tok, "  Explain this.  ", system=" Be brief. ")
    assert with_sys == tok.encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nExplain this. [/INST]", bos=True)
    assert instruct_prompt(tok, "Hi") == tok.encode("[INST] Hi [/INST]", bos=True)


def test_model_without_infill_pieces_completes_left_to_right(tmp_path):
    from tests.tiny_models import build_tokenizer

    tok = Tokenizer(build_tokenizer(tmp_path / "tokenizer.model", infill=False))
    assert not tok.can_infill and tok.eot_id is None
    with pytest.raises(ValueError, match="no infilling pieces"):
        psm_prompt(tok, "a", "b")
    assert left_to_right_prompt(tok, "def f():") == [tok.bos_id] + tok.encode("def f():")
