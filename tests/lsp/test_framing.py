"""The tolerant frame reader and the envelope reader for broken JSON (lsp_server/framing.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.framing import FrameReader, envelope_members
from lsp_server.protocol import INVALID_REQUEST, PARSE_ERROR, unparseable_answer

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def frame(body: bytes, length: int | None = None) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


def feed_in_chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    reader = FrameReader()
    bodies: list[bytes] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        bodies += reader.feed(data[last:cut])
        last = cut
    return bodies


@settings(derandomize=True, max_examples=200)
@given(st.lists(JSON_VALUES, min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=8),
       st.booleans())
def test_well_formed_frames_come_out_whole_however_the_stream_is_cut(values: list[Any], cuts: list[int],
                                                                     content_type: bool):
    bodies = [json.dumps(v, ensure_ascii=False).encode() for v in values]
    header = b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n" if content_type else b""
    data = b"".join(b"Content-Length: %d\r\n%s\r\n" % (len(b), header) + b for b in bodies)
    assert feed_in_chunks(data, cuts) == bodies


def test_a_content_length_larger_than_the_body_costs_nothing_when_a_frame_follows():
    first = b'{"jsonrpc": "2.0", "id": 1, "method": "a"}'
    second = b'{"jsonrpc": "2.0", "id": 2, "method": "b"}'
    # pygls would read 10,000 bytes into the stream and never find a header again.
    assert FrameReader().feed(frame(first, 10_000) + frame(second)) == [first, second]


def test_a_content_length_shorter_than_the_body_loses_only_that_frame():
    first = b'{"jsonrpc": "2.0", "id": 1, "method": "a"}'
    second = b'{"jsonrpc": "2.0", "id": 2, "method": "b"}'
    assert FrameReader().feed(frame(first, 10) + frame(second)) == [first[:10], second]


def test_garbage_and_stray_lines_between_frames_are_skipped():
    body = b'{"id": 1}'
    data = b"\r\n\r\nnot a header\r\nContent-Type: x\r\n\r\n" + frame(body) + b"xx" + frame(body)
    assert FrameReader().feed(data) == [body, body]


def test_a_body_short_of_its_content_length_is_taken_once_the_stream_is_quiet_if_it_is_whole_json():
    reader = FrameReader()
    assert reader.feed(frame(b'{"id": 1}', 500)) == [] and reader.in_body
    assert reader.take_stalled() == b'{"id": 1}'
    assert not reader.in_body
    reader.feed(frame(b'{"id": ', 500))
    assert reader.take_stalled() is None  # might still be coming
    assert reader.feed(b'2}' + frame(b"[]")) == [b'{"id": 2}', b"[]"]


@settings(derandomize=True, max_examples=200)
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=6))
def test_envelope_members_reads_the_top_level_scalars_of_any_object(obj: dict[str, Any]):
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list))}
    assert envelope_members(json.dumps(obj).encode()) == scalars


def test_the_id_of_a_request_nested_too_deep_or_cut_short_is_recovered():
    deep = b'{"jsonrpc": "2.0", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b', "id": "x\\"}", "method": "m"}'
    try:
        json.loads(deep)
        raise AssertionError("expected the parser to give up")
    except RecursionError as exc:
        assert unparseable_answer(deep, exc) == (INVALID_REQUEST, 'x"}')
    cut = b'{"jsonrpc": "2.0", "id": 7, "method": "m", "params": {"a": [1, 2'
    assert unparseable_answer(cut, ValueError()) == (PARSE_ERROR, 7)
    # A response (no method) is never answered under its id; nor is an id that is no string or integer.
    assert unparseable_answer(b'{"id": 7, "result": [', ValueError()) == (PARSE_ERROR, None)
    assert unparseable_answer(b'{"id": 1.5, "method": "m", "params": [', ValueError()) == (PARSE_ERROR, None)
    assert unparseable_answer(b"\xff\xfe", ValueError()) == (PARSE_ERROR, None)
    # A bad byte after a backslash (an escape it breaks): read up to there, never raise.
    assert unparseable_answer(b'{"method": "m", "id": "f\\\xffu00e1"', ValueError()) == (PARSE_ERROR, None)
    # A number cut short or broken by junk is not read: 12 may have been 1234.
    assert unparseable_answer(b'{"method": "m", "id": 12', ValueError()) == (PARSE_ERROR, None)
    assert unparseable_answer(b'{"method": "m", "id": 12\xff34}', ValueError()) == (PARSE_ERROR, None)
    # Invalid UTF-8 inside the id: what could be read is not the sender's id.
    assert unparseable_answer(b'{"id": "f4\xff3", "method": "m"', ValueError()) == (PARSE_ERROR, None)
    assert unparseable_answer(b'{"id": "f43", "method": "m\xff"', ValueError()) == (PARSE_ERROR, "f43")


@settings(derandomize=True, max_examples=300)
@given(st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params"]), JSON_VALUES, max_size=4),
       st.integers(min_value=0), st.binary(min_size=1, max_size=3), st.booleans())
def test_reading_the_envelope_of_broken_bytes_never_raises(obj: dict[str, Any], at: int, junk: bytes, cut: bool):
    body = json.dumps(obj).encode()
    at %= len(body) + 1
    broken = body[:at] if cut else body[:at] + junk + body[at:]
    code, msg_id = unparseable_answer(broken, ValueError())
    assert code == PARSE_ERROR and (msg_id is None or msg_id == obj.get("id"))
