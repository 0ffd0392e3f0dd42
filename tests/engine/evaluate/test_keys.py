"""Key retrieval: the prompt has the requested length and the key sits where it was asked to."""

from __future__ import annotations

import pytest

from engine.evaluate import keys


@pytest.mark.parametrize("length", [300, 1024])
def test_prompt_has_the_requested_length_and_the_key_at_its_relative_position(tiny_tok, heldout_files, length):
    filler = keys.CodeFiller(tiny_tok, heldout_files)
    starts = []
    for position in keys.POSITIONS:
        kp = keys.build_prompt(filler, length, position, key=57, start_line=40)
        assert len(kp.tokens) == length
        assert kp.tokens[0] == tiny_tok.bos_id
        key_text = tiny_tok.decode_infill(kp.tokens[kp.key_start : kp.key_start + kp.key_length])
        assert "def my_function() -> int:" in key_text and "return 57" in key_text
        assert tiny_tok.decode_infill(kp.tokens).endswith("\nassert my_function() == ")
        # Code around the key: the key starts where `position` of the code tokens are before it,
        # give or take the line boundary it snaps to.
        code = length - 1 - kp.key_length - len(tiny_tok.encode_infill("\n" + keys.QUESTION))
        longest_line = max(len(filler.line_ids(40 + i)) for i in range(200))
        assert abs((kp.key_start - 1) - position * code) <= longest_line, (position, kp.key_start, code)
        starts.append(kp.key_start)
    assert starts == sorted(starts) and starts[0] == 1  # key right after BOS at position 0
    assert starts[-1] + kp.key_length + len(tiny_tok.encode_infill("\n" + keys.QUESTION)) == length


def test_prompt_text_is_real_code_with_the_key_function_inserted_between_lines(tiny_tok, heldout_files):
    filler = keys.CodeFiller(tiny_tok, heldout_files)
    kp = keys.build_prompt(filler, 400, 0.4, key=23, start_line=0)
    text = tiny_tok.decode_infill(kp.tokens[1:])
    assert text.startswith("# shlex.py\n")  # the code window begins with the first file's path header
    before, after = text.split(keys.KEY_FUNCTION.format(key=23))
    assert before.endswith("\n\n") and after.startswith("\n")


def test_too_short_a_context_is_an_error(tiny_tok, heldout_files):
    with pytest.raises(ValueError):
        keys.build_prompt(keys.CodeFiller(tiny_tok, heldout_files), 10, 0.5, key=11)


def test_answer_parsing():
    assert keys.answer_of("57)\n") == 57
    assert keys.answer_of(" 5") == 5
    assert keys.answer_of("None") is None
