"""What the server answers for a suggestion: one item with the exact range, or no item at all."""

from lsp_server.completion import CompletionResult
from lsp_server.server import _completion_items, _inline_items


def result(text: str) -> CompletionResult:
    return CompletionResult(text=text, start=(3, 4), end=(3, 4), word_start=(3, 4), word="", from_cache=False)


def test_a_suggestion_is_one_item_at_the_cursor() -> None:
    items = _inline_items(result("return a + b")).items
    assert [i.insert_text for i in items] == ["return a + b"]
    assert (items[0].range.start.line, items[0].range.start.character) == (3, 4)
    assert [i.text_edit.new_text for i in _completion_items(result("return a + b"), "python").items] == ["return a + b"]


def test_an_empty_or_blank_suggestion_is_no_item() -> None:
    # Post-processing can cut everything (an unfinished line): the editor must get nothing to show,
    # not an item that inserts nothing (some clients render it as a blank ghost or a blank menu entry).
    for text in ("", "   ", "\n"):
        assert _inline_items(result(text)).items == []
        assert _completion_items(result(text), "python").items == []
    assert _inline_items(None).items == []
