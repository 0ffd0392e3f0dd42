"""On-device adaptation (`lsp_server.adapt`): what it trains on, what it measures, what it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile
from lsp_server.adapt.data import ExampleMix, split_workspace, training_windows
from lsp_server.adapt.evaluate import EVAL_KINDS, line_cases, summarise, workspace_modules
from lsp_server.adapt.report import verdict

ROOT = Path(__file__).resolve().parents[2]


def marked_workspace(n: int = 10) -> list[SourceFile]:
    """A package whose modules import each other, each holding a name found in no other file."""
    files = [SourceFile("ws", "shop/__init__.py", "")]
    for i in range(n):
        other = (i + 1) % n
        files.append(SourceFile("ws", f"shop/mod{i}.py", (
            f"from shop.mod{other} import marker_{other}_total\n\n\n"
            f"def marker_{i}_total(items, rate=0.{i + 1}):\n"
            f"    subtotal = sum(item.price * item.count for item in items)\n"
            f"    return round(subtotal * (1 + rate), 2)\n\n\n"
            f"def report_{i}(items):\n"
            f"    value = marker_{other}_total(items)\n"
            f"    return f'mod{i}: {{value}}'\n"
            + "".join(f"\n\ndef helper_{i}_{k}(values, scale={k}):\n"
                      f"    scaled = [v * scale for v in values]\n"
                      f"    kept = [v for v in scaled if v > {k}]\n"
                      f"    return sorted(kept)[: {k + 2}]\n" for k in range(6)))))
    return files


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(str(ROOT / "models" / "default" / "tokenizer.model"))


def test_heldout_files_never_reach_the_training_windows(tok):
    files = marked_workspace()
    split = split_workspace(files, fraction=0.2, seed=0)
    assert len([f for f in split.heldout if f.path.endswith(".py")]) == 2
    assert {f.path for f in split.train}.isdisjoint(f.path for f in split.heldout)
    windows, _, counts = training_windows(split.train, tok, seq_len=1024, n_windows=12, mix=ExampleMix(), seed=0)
    text = tok.decode([int(t) for t in windows])
    held = [f.path.removeprefix("shop/").removesuffix(".py") for f in split.heldout]
    # A held-out module's own function is defined only in it (its name appears in the module that
    # imports it, which may train: that use is the training file's text, not the held-out file's).
    for module in held:
        assert f"def marker_{module[3:]}_total" not in text
    trained = [f for f in split.train if f.path.endswith(".py") and f.text]
    seen = [f for f in trained if f"def marker_{f.path[len('shop/mod'):-3]}_total" in text]
    assert len(seen) >= len(trained) // 2  # while the training files' code is there
    assert counts["served_examples"] >= 12  # every window opens with the server's prompt for a cursor


def test_cases_put_the_cursor_where_users_ask_and_the_target_is_the_rest_of_the_line():
    files = marked_workspace()
    split = split_workspace(files, fraction=0.2, seed=0)
    cases = line_cases(split.heldout, n=40, seed=0, modules=workspace_modules([f.path for f in files]))
    assert len(cases) >= 20
    assert {c.kind for c in cases} == set(EVAL_KINDS)
    originals = {f.path: f.text for f in split.heldout}
    for c in cases:
        assert c.path in originals
        restored = c.text[: c.offset] + c.target + c.text[c.offset :]
        assert restored == originals[c.path]
        assert "\n" not in c.target and c.target.strip()
        if c.kind == "cross":  # before a name imported from another file of the workspace
            assert c.target.startswith("marker_")


def test_the_adapter_is_offered_only_when_held_out_exact_match_rises():
    def scores(exact: list[bool]) -> dict:
        return summarise([{"kind": "line", "exact": e, "similarity": float(e)} for e in exact])

    before = scores([True] + [False] * 19)  # 5 %
    better, same = scores([True] * 3 + [False] * 17), scores([True] + [False] * 19)
    assert verdict(before, better)[0] and "+10.0 points" in verdict(before, better)[1]
    gain, message = verdict(before, same)
    assert not gain and "no gain" in message


def test_a_training_seed_varies_the_training_not_the_heldout_files_or_cursors():
    """--train-seed measures how much of a gain is the luck of one training run: the held-out files
    and the cursors scored on them stay those of --seed."""
    from lsp_server.adapt.run import parse_args, recipe_from

    plain = recipe_from(parse_args(["--workspace", "w", "--out", "o"]))
    other = recipe_from(parse_args(["--workspace", "w", "--out", "o", "--train-seed", "3"]))
    assert (plain.seed, plain.training_seed) == (0, 0)
    assert (other.seed, other.training_seed) == (0, 3)
