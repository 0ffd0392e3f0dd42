"""Copying from the prompt: what followed the same tokens elsewhere in the prompt is mixed into each
token's choice, on the real default model through the local backend."""

from __future__ import annotations

import pytest
import torch

from engine import prompt_copy as copying
from engine.backends.base import CompletionRequest, WorkspaceFiles
from engine.backends.local import load_local_backend
from engine.prompt_copy import MIN_MATCH, NgramIndex, WorkspaceTokens, prompt_copy

# The file spells out where its settings live; the model alone makes up the rest of the path.
SETTINGS_PREFIX = ("import os\n\nSETTINGS_FILE_NAME = os.path.join(os.path.expanduser('~'), '.config', 'tool', "
                   "'settings.toml')\n\n\ndef load():\n    path = ")


@pytest.fixture(scope="module")
def backend():
    return load_local_backend(device="cpu", dtype="bfloat16")


def _index(tokens: list[int], special: set[int] | None = None) -> NgramIndex:
    return NgramIndex(torch.tensor(tokens), special or set())


def test_the_continuations_are_those_after_the_longest_earlier_match():
    index = _index([1, 2, 3, 4, 9, 7, 2, 3, 4, 5, 8, 2, 3, 4, 5])
    # `1 2 3 4` occurred once, before 9 (`2 3 4` also occurred before 5, twice: a shorter match)
    assert index.continuations([0, 1, 2, 3, 4]) == ({9: 1}, 4)
    assert index.continuations([6, 2, 3, 4]) == ({9: 1, 5: 2}, 3)  # counted by how often
    assert index.continuations([3, 4, 6]) == ({}, 0)  # never seen
    assert index.continuations([3, 4][: MIN_MATCH - 1]) == ({}, 0)  # too short to say anything
    assert index.continuations([0, 2, 3, 4], min_match=4) == ({}, 0)  # shorter than asked for
    assert index.continuations([6, 2, 3, 4], skip=(0, 6)) == ({5: 2}, 3)  # the first occurrence left out


def test_the_matches_are_what_a_plain_search_finds():
    """Against the definition, on random short runs over a small alphabet (many matches of every length)."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        tokens = [rng.randrange(4) for _ in range(rng.randrange(5, 60))]
        context = [rng.randrange(4) for _ in range(rng.randrange(3, 40))]
        found = {}  # start of the last MIN_MATCH tokens' occurrence -> how far the match goes back
        for start in range(len(tokens) - MIN_MATCH):
            length = 0
            while (length < min(copying.LONGEST_MATCH, len(context)) and start + MIN_MATCH - length - 1 >= 0
                   and tokens[start + MIN_MATCH - length - 1] == context[-length - 1]):
                length += 1
            if length >= MIN_MATCH:
                found[start] = length
        want = ({}, 0)
        if found:
            longest = max(found.values())
            votes: dict[int, int] = {}
            for start, length in found.items():
                if length == longest:
                    votes[tokens[start + MIN_MATCH]] = votes.get(tokens[start + MIN_MATCH], 0) + 1
            want = (votes, longest)
        got = _index(tokens).continuations(context)
        assert (dict(got[0]), got[1]) == want, (tokens, context)


def test_a_special_token_or_a_gap_between_files_is_never_a_continuation_nor_part_of_a_match():
    assert _index([5, 6, 7, 99, 5, 6, 7, 8], special={99}).continuations([5, 6, 7]) == ({8: 1}, 3)
    gap = copying.GAP
    index = _index([5, 6, gap, 7, 1, 5, 6, 7, 2, gap, 6, 7, 3])
    assert index.continuations([5, 6, 7]) == ({2: 1}, 3)  # `5 6 | 7` across a gap is no match


def test_the_workspace_tokens_follow_the_index_and_leave_out_the_file_at_the_cursor():
    encoded: list[str] = []

    def encode(text: str) -> list[int]:
        encoded.append(text)
        return [ord(c) for c in text]

    tokens = WorkspaceTokens(encode)
    files = {"a.py": "xyz1", "b.py": "wxyz2"}
    source = tokens.source(lambda: files, 1, "b.py")
    assert source is not None and sorted(encoded) == ["wxyz2", "xyz1"]
    ctx = [ord(c) for c in "wxyz"]
    assert source.index.continuations(ctx) == ({ord("2"): 1}, 4)
    # b.py is at the cursor: only a.py's shorter match is left
    assert source.index.continuations(ctx, skip=source.skip) == ({ord("1"): 1}, 3)
    assert source.index.continuations(ctx, min_match=4, skip=source.skip) == ({}, 0)
    # Nothing changed: nothing is read or encoded again.
    assert tokens.source(lambda: pytest.fail("read again"), 1, "a.py") is not None and len(encoded) == 2
    # One file changed, one removed: only the changed one is encoded again; the removed one is gone.
    files = {"a.py": "xyz3"}
    source = tokens.source(lambda: files, 2, None)
    assert encoded[2:] == ["xyz3"] and source.index.continuations(ctx[1:]) == ({ord("3"): 1}, 3)
    # `prepare` is applied to what gets encoded (the server redacts secrets there).
    tokens.source(lambda: {"a.py": "key=hunter2"}, 3, None, prepare=lambda t: t.replace("hunter2", "<r>"))
    assert encoded[-1] == "key=<r>"


def test_a_large_workspace_is_caught_up_with_over_several_requests_the_nearest_files_first(monkeypatch):
    monkeypatch.setattr(copying, "SYNC_CHARS", 10)
    tokens = WorkspaceTokens(lambda text: [ord(c) for c in text])
    files = {f"far/f{i}.py": f"abc{i}" * 3 for i in range(3)} | {"near/g.py": "abcX" * 3}  # 12 characters each
    source = tokens.source(lambda: files, 7, "near/h.py")  # one file a request: not caught up yet ...
    assert tokens.generation is None and set(tokens._files) == {"near/g.py"}
    # ... but the file nearest the cursor's is looked up already
    assert source is not None and source.index.continuations([ord(c) for c in "abcX"]) == ({ord("a"): 2}, 4)
    built = []
    monkeypatch.setattr(tokens, "_rebuild", lambda real=tokens._rebuild: built.append(1) or real())
    for _ in range(3):
        source = tokens.source(lambda: files, 7, "near/h.py")
    assert tokens.generation == 7 and len(tokens._files) == 4
    assert len(built) == 2  # while catching up, only when the tokens held have doubled (1 -> 2 files), then once caught up
    assert source is not None and source.index.continuations([ord(c) for c in "abc2"]) == ({ord("a"): 2}, 4)


def test_a_workspace_over_the_budget_keeps_the_files_nearest_the_cursor_and_follows_it_elsewhere(monkeypatch):
    monkeypatch.setattr(copying, "WORKSPACE_MAX_TOKENS", 25)
    tokens = WorkspaceTokens(lambda text: [ord(c) for c in text[::3]])  # a token per 3 characters, as estimated
    files = {path: f"{path:<30}"[:30] for path in ("pkg/a/x.py", "pkg/a/y.py", "pkg/b/v.py", "pkg/b/z.py", "other/w.py")}
    tokens.source(lambda: files, 1, "pkg/a/x.py")
    assert set(tokens._files) == {"pkg/a/x.py", "pkg/a/y.py"} and tokens.focus == "pkg/a"  # 10 tokens each
    index = tokens._index
    tokens.source(lambda: files, 1, "pkg/a/y.py")
    assert tokens._index is index  # a file already kept: nothing moves
    source = tokens.source(lambda: files, 1, "other/w.py")
    assert set(tokens._files) == {"other/w.py", "pkg/a/x.py"} and tokens.focus == "other"
    assert source is not None and source.skip == tokens._spans["other/w.py"]
    # A move caught up with over several requests goes on to the end, though the cursor's file is kept at once.
    monkeypatch.setattr(copying, "SYNC_CHARS", 10)
    for _ in range(3):
        tokens.source(lambda: files, 1, "pkg/b/v.py")
    assert set(tokens._files) == {"pkg/b/v.py", "pkg/b/z.py"} and tokens.focus == "pkg/b" and tokens.generation == 1


def test_a_workspace_within_the_budget_is_kept_whole_wherever_the_cursor_goes():
    tokens = WorkspaceTokens(lambda text: [ord(c) for c in text])
    files = {"pkg/a/x.py": "x = 1", "other/w.py": "w = 2"}
    tokens.source(lambda: files, 1, "pkg/a/x.py")
    index = tokens._index
    tokens.source(lambda: files, 1, "other/w.py")
    tokens.source(lambda: files, 1, "elsewhere/new.py")  # not indexed yet
    assert tokens._index is index and tokens.focus is None and set(tokens._files) == set(files)


def test_the_copy_takes_over_a_near_tie_and_leaves_the_logits_alone_where_nothing_matches():
    prompt = [10, 11, 12, 13, 20, 30, 31, 32]
    mix = prompt_copy(prompt, written_before=[10, 11, 12, 13])
    logits = torch.zeros(40)
    logits[21], logits[20] = 1.0, 0.5  # the model slightly prefers 21; the prompt wrote 20 after `10 11 12 13`
    assert int(torch.argmax(mix([], logits))) == 20
    assert torch.equal(mix([40 - 1], logits), logits)  # `12 13 39` never occurred: no change
    assert torch.allclose(torch.softmax(mix([], logits), -1).sum(), torch.tensor(1.0))  # still a distribution


def test_where_a_line_begins_the_copy_never_chooses_its_indentation():
    prompt = [5, 6, 9, 30, 31, 5, 7, 9, 32]  # 9 ends a line; one line began with 30 (an indentation), one with 32
    logits = torch.zeros(40)
    logits[20] = 0.5  # the model prefers 20
    assert int(torch.argmax(prompt_copy(prompt, [1, 5, 6])([9], logits))) == 30  # copied, without line ends
    after_a_line_end = prompt_copy(prompt, [1, 5, 6], line_ends={9}, indents={30})
    assert torch.equal(after_a_line_end([9], logits), logits)  # the completion ended a line
    at_a_line_start = prompt_copy(prompt, [1, 5, 6, 9], line_ends={9}, indents={30})
    assert torch.equal(at_a_line_start([], logits), logits)  # the cursor is at a line's start
    code_line = prompt_copy(prompt, [1, 5, 7, 9], line_ends={9}, indents={30})
    assert int(torch.argmax(code_line([], logits))) == 32  # a line's first code token is still copied
    # ... and so is an indentation where the completion first spells again a token held back from the prompt
    healing = prompt_copy(prompt, [1, 5, 6, 9], line_ends={9}, indents={30}, healing=True)
    assert int(torch.argmax(healing([], logits))) == 30


def test_the_longer_match_decides_between_the_prompt_and_the_workspace_and_the_prompt_wins_a_tie():
    from engine.prompt_copy import WorkspaceSource

    def choice(prompt: list[int], workspace_tokens: list[int]) -> int:
        source = WorkspaceSource(_index(workspace_tokens), None)
        mix = prompt_copy(prompt, written_before=[5, 1, 2, 3, 4], workspace=source)
        return int(torch.argmax(mix([], torch.zeros(40))))

    assert choice([2, 3, 4, 20, 9], [1, 2, 3, 4, 30]) == 30  # four tokens matched there, three in the prompt
    assert choice([1, 2, 3, 4, 20, 9], [1, 2, 3, 4, 30]) == 20  # four each: the prompt's


@pytest.mark.parametrize("speculative", [False, True])
def test_a_path_the_file_spells_out_is_copied_where_the_model_alone_makes_one_up(backend, speculative):
    def complete(copy: bool) -> str:
        request = CompletionRequest(prefix=SETTINGS_PREFIX, suffix="\n", max_new_tokens=40, stop=["\n"],
                                    prompt_copy=copy, speculative=speculative)
        return backend.complete(request).text

    alone, copied = complete(False), complete(True)
    assert "'tool', 'settings.toml')" not in alone, alone
    assert copied.startswith("os.path.join(os.path.expanduser('~'), '.config', 'tool', 'settings.toml')"), copied


def test_a_line_from_another_workspace_file_is_copied_where_the_prompt_has_none(backend):
    """The path is spelt out in another file of the workspace, not in the prompt: with the workspace
    the suggestion writes it; the file at the cursor itself is never a source."""
    prefix = "import os\n\n\ndef load():\n    path = os.path.join(os.path.expanduser('~'), '.config', "
    other = SETTINGS_PREFIX.split("\n\n\n")[0] + "\n"

    generations = iter(range(100))

    def complete(files: dict[str, str]) -> str:
        workspace = WorkspaceFiles(lambda: files, generation=(0, next(generations)), current="load.py")
        request = CompletionRequest(prefix=prefix, suffix="\n", max_new_tokens=40, stop=["\n"], workspace=workspace)
        return backend.complete(request).text

    assert "'tool', 'settings.toml')" not in complete({})
    assert complete({"settings.py": other}).startswith("'tool', 'settings.toml')")
    assert "'tool', 'settings.toml')" not in complete({"load.py": other})  # the file at the cursor


def test_a_new_line_at_the_top_level_is_not_given_the_indentation_of_a_block_copied_from_elsewhere(backend):
    """Another file has the same statement inside a method, followed by the method's body: the copy
    must not begin the cursor's top-level line with that body's indentation (invalid code here)."""
    other = ("class Loader:\n    def run(self, album):\n        result = schema.dump(album)\n"
             "        data = result.get('data', {})\n        return data\n")
    prefix = "from app import schema\n\n\ndef fetch():\n    return 1\n\n\nresult = schema.dump(album)\n"
    workspace = WorkspaceFiles(lambda: {"loader.py": other}, generation=(0, 1), current="main.py")
    text = backend.complete(CompletionRequest(prefix=prefix, suffix="", max_new_tokens=12, workspace=workspace)).text
    assert text.strip() and not text[0].isspace(), text


def test_in_psm_order_the_copy_continues_the_prefix_not_the_suffix(backend):
    """In PSM the prefix ends before <SUF>: its tail is what the completion continues, and the
    sentinel that follows it in the prompt is never copied (the model alone closes the call at once)."""
    def complete(copy: bool) -> str:
        request = CompletionRequest(prefix=SETTINGS_PREFIX + "os.path.join(", suffix="\n    return path\n",
                                    fim_format="psm", max_new_tokens=40, stop=["\n"], prompt_copy=copy)
        return backend.complete(request).text

    assert "settings.toml" not in complete(False)
    assert complete(True) == "os.path.expanduser('~'), '.config', 'tool', 'settings.toml')"
