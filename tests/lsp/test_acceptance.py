"""The session's acceptance statistics (lsp_server/acceptance.py): what the status reports. The same
counts are checked end to end in both editors (tests/editors/test_nvim_real_server.py, make test-vscode)."""

from __future__ import annotations

from lsp_server.acceptance import AcceptanceStats, typed_into


def test_typing_part_of_a_suggestion_is_typing_through():
    assert typed_into("return a + b", "ret")
    assert not typed_into("return a + b", "")  # nothing typed yet
    assert not typed_into("return a + b", "return a + b")  # all of it: that is an accept
    assert not typed_into("return a + b", "rex")  # something else


def test_counts_as_the_status_shows_them():
    stats = AcceptanceStats()
    stats.record_shown("file:///a.py", 10, "return a + b")
    stats.record_request("file:///a.py", "re")
    stats.record_request("file:///a.py", "ret")  # the same suggestion typed through further: counted once
    stats.record_request("file:///b.py", "re")  # another document
    stats.record_shown("file:///a.py", 13, "urn a + b")
    assert stats.record_event("word") and stats.record_event("line") and stats.record_event("dismissed")
    assert not stats.record_event("upload everything")
    stats.record_accepted()
    assert stats.as_status() == {"shown": 2, "accepted": 1, "acceptedWord": 1, "acceptedLine": 1, "dismissed": 1,
                                 "typedThrough": 1}
