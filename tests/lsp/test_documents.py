import pytest

from lsp_server.documents import UTF8, UTF32, Document, DocumentStore, PositionError

TEXT = "a😀b = 1\n漢字x = '😀😀'\r\nlast"


def test_utf16_positions_count_surrogate_pairs():
    doc = Document("file:///t.py", TEXT)
    # "a😀b": the emoji is 2 UTF-16 code units, so "b" is at character 3.
    assert TEXT[doc.offset_at(0, 3)] == "b"
    assert doc.position_at(TEXT.index("b")) == (0, 3)
    # CJK characters are one unit each.
    line1 = TEXT.index("漢")
    assert doc.offset_at(1, 2) == line1 + 2 and TEXT[doc.offset_at(1, 2)] == "x"
    after_emojis = TEXT.index("'", line1 + 7)
    assert doc.position_at(after_emojis) == (1, 11)
    assert doc.offset_at(1, 11) == after_emojis


def test_position_inside_a_surrogate_pair_rounds_down():
    doc = Document("file:///t.py", TEXT)
    assert doc.offset_at(0, 2) == 1  # between the halves of 😀: before the emoji


def test_crlf_and_cr_end_lines_but_other_separators_do_not():
    doc = Document("file:///t.py", "a\r\nb\rc\u2028d\x0ce\nf")
    assert doc.line_count == 4
    assert doc.line_text(0) == "a" and doc.line_text(1) == "b" and doc.line_text(2) == "c\u2028d\x0ce"


def test_character_past_line_end_clamps_and_line_past_end_raises():
    doc = Document("file:///t.py", "ab\ncd")
    assert doc.offset_at(0, 99) == 2
    with pytest.raises(PositionError):
        doc.offset_at(5, 0)
    assert doc.offset_at(5, 0, clamp=True) == 5


def test_incremental_changes_with_emoji():
    store = DocumentStore()
    store.open("file:///t.py", "x = '😀'\ny = 2\n", 1)
    # Replace "y" (line 1) and insert after the emoji (line 0, character 7 = after 😀 in UTF-16).
    assert store.change("file:///t.py", 2, [("z", (1, 0), (1, 1)), ("!", (0, 7), (0, 7))])
    doc = store.get("file:///t.py")
    assert doc.text == "x = '😀!'\nz = 2\n" and doc.version == 2
    assert store.change("file:///t.py", 3, [("full", None, None)]) and doc.text == "full"
    assert not store.change("file:///missing.py", 1, [("x", None, None)])


def test_other_encodings():
    assert Document("u", "é😀x", encoding=UTF8).offset_at(0, 6) == 2  # é=2 bytes, 😀=4 bytes
    assert Document("u", "é😀x", encoding=UTF32).offset_at(0, 2) == 2
    assert Document("u", "é😀x", encoding=UTF8).position_at(2) == (0, 6)


def test_recent_edits_merge_nearby_keystrokes_and_skip_the_current_document():
    store = DocumentStore()
    store.open("a", "\n" * 100)
    store.open("b", "\n" * 100)
    for ch in range(5):
        store.change("a", ch, [("x", (10, ch), (10, ch))])
    store.change("b", 9, [("y", (50, 0), (50, 0))])
    edits = store.recent_edits(exclude_uri="b")
    assert [(e.uri, e.line) for e in edits] == [("a", 10)]
