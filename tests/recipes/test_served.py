"""Repository examples laid out as the language server sends them (recipes/default_model/served.py):
the prompt a model is trained on for a cursor must be the one the server would build there."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine.prompts import spm_prompt
from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes" / "default_model"))
from served import served_examples  # noqa: E402

from lsp_server.adapt.examples import (
    KINDS,
    LossWeights,
    ServedExamples,
    cross_file_cursors,
    pack_windows,
    sibling_names,
)

ROOT = Path(__file__).resolve().parents[2]
GEOMETRY = 'GRID_SPACING = 4821\n\n\ndef rectangle_area(width, height):\n    """Area of a rectangle."""\n    return width * height\n'
APP = ("from shapes.geometry import rectangle_area, GRID_SPACING\nimport shapes.units as units\n\n\n"
       "def total(rects):\n    return sum(rectangle_area(w, h) for w, h in rects)\n\n\n"
       "def spacing():\n    return GRID_SPACING * units.SCALE\n")
UNITS = "SCALE = 3\n\n\ndef to_mm(x):\n    return x * SCALE\n"
FILES = [SourceFile("shapes-1.0", "shapes/geometry.py", GEOMETRY), SourceFile("shapes-1.0", "shapes/app.py", APP),
         SourceFile("shapes-1.0", "shapes/units.py", UNITS)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(ROOT / "models" / "default" / "tokenizer.model")


def test_names_imported_from_the_package_and_module_aliases_are_found():
    names, modules = sibling_names(APP + "from os import path\nfrom . import helpers\n", {"shapes"})
    assert names == {"rectangle_area", "GRID_SPACING"}
    assert modules == {"units", "helpers"}  # `path` comes from another package


def test_cross_file_cursors_sit_before_uses_not_in_the_import_lines():
    names, modules = sibling_names(APP, {"shapes"})
    uses = {APP[at : at + 14] for at in cross_file_cursors(APP, names, modules)}
    assert uses == {"rectangle_area", "GRID_SPACING *", "SCALE\n"}
    assert all(at > APP.index("\n\n") for at in cross_file_cursors(APP, names, modules))


def test_a_cross_file_example_carries_the_definition_from_the_other_file(tok):
    ex = ServedExamples(tok, FILES, seed=0, spm_rate=1.0, context_rate=1.0)
    found = []
    for _ in range(60):
        one = ex.example(FILES[1], budget=1024)
        if one is not None and one.kind == "cross":
            found.append(one)
    assert found, "no cross-file example in 60 draws"
    for one in found:
        text = tok.decode(one.tokens)
        assert "# Path: shapes/geometry.py" in text and "GRID_SPACING = 4821" in text  # the server's snippet
        assert one.tokens[-1] == tok.eot_id and one.with_context and one.spm


def test_spm_tokens_are_the_served_prompt_with_the_middle_spelt_after_it(tok):
    """SPM with token healing: the model is asked from the prompt minus the prefix's last token and
    spells the rest of the joined text, so training tokens are spm_prompt(prefix + middle)."""
    ex = ServedExamples(tok, FILES, seed=1, spm_rate=1.0, context_rate=0.0)
    prefix, suffix, middle = "def f(x):\n    return x.up", "\n", "per()"
    assert ex._layout(prefix, suffix, middle, spm=True) == spm_prompt(tok, prefix + middle, suffix) + [tok.eot_id]


def test_psm_tokens_hold_back_the_last_prefix_token_for_the_middle(tok):
    ex = ServedExamples(tok, FILES, seed=1)
    prefix, suffix, middle = "value = compute_tot", "\n", "al(items)"
    ids = ex._layout(prefix, suffix, middle, spm=False)
    mid = ids.index(tok.middle_id)
    assert tok.decode_infill(ids[mid + 1 : -1]).endswith("al(items)")
    assert tok.decode(ids[2 : ids.index(tok.suffix_id)]) + tok.decode_infill(ids[mid + 1 : -1]) == prefix + middle


@pytest.mark.parametrize("spm", [True, False])
def test_loss_weights_mark_the_snippets_and_the_middle(tok, spm):
    """A weighted example: the repository snippets' tokens weigh `snippets`, the completion and its
    EOT weigh `middle`, the file's own text 1.0; decoded, each part is what it claims to be."""
    ex = ServedExamples(tok, FILES, seed=0, spm_rate=1.0 if spm else 0.0, context_rate=1.0,
                        loss_weights=LossWeights(snippets=0.25, middle=4.0))
    found = [one for one in (ex.example(FILES[1], budget=1024) for _ in range(60)) if one is not None and one.snippets]
    assert found, "no example with snippets in 60 draws"
    for one in found:
        w = one.loss_weights
        assert w is not None and len(w) == len(one.tokens)
        snippet_ids = [t for t, x in zip(one.tokens, w, strict=True) if x == 0.25]
        middle_ids = [t for t, x in zip(one.tokens, w, strict=True) if x == 4.0]
        assert "# Path: shapes/geometry.py" in tok.decode(snippet_ids)
        assert "Path: shapes/app.py" not in tok.decode(snippet_ids)  # the file's own header weighs 1.0
        assert middle_ids[-1] == tok.eot_id and 1 <= len(middle_ids) <= 40
        assert w[-len(middle_ids) - 1] != 4.0  # the middle is the example's tail, nothing before it


def test_names_the_workspace_defines_weigh_more_wherever_they_are_spelt(tok):
    ex = ServedExamples(tok, FILES, seed=0, spm_rate=1.0, context_rate=1.0, loss_weights=LossWeights(names=3.0))
    assert {"rectangle_area", "GRID_SPACING"} <= ex.defined
    found = [one for one in (ex.example(FILES[1], budget=1024) for _ in range(20)) if one is not None]
    assert found
    for one in found:
        w = one.loss_weights
        assert w is not None and set(np.unique(w)) <= {1.0, 3.0}
        heavy = [ex.healer.texts[t].strip() for t, x in zip(one.tokens, w, strict=True) if x == 3.0]
        assert heavy and all(any(piece in name for name in ex.defined) for piece in heavy), heavy


def test_windows_hold_whole_examples_each_opening_with_one(tok):
    files = FILES * 2
    examples = served_examples(tok, [SourceFile(f"p{i // 3}-1", f.path, f.text) for i, f in enumerate(files)],
                               max_tokens=512, seed=0)
    filler = np.arange(3000, dtype=np.uint16) % 50 + 100
    out, weights, counts = pack_windows(examples, 512, 6, filler, seed=0)
    assert weights is None  # plain examples: every token weighs the same
    assert counts["served_windows"] == 6 and counts["served_examples"] >= 6
    for w in out.reshape(6, 512):
        assert w[0] == tok.bos_id
        ends = np.flatnonzero(w == tok.eot_id)
        assert len(ends) >= 1  # at least one example, ended where it should be
        assert (w[ends[-1] + 1 :] >= 100).all()  # the rest is filler, no cut example


def test_every_package_is_visited_not_only_the_first(tok):
    files = [SourceFile(f"pkg{k}-1", f.path, f.text) for k in range(4) for f in FILES]
    gen = served_examples(tok, files, max_tokens=1024, seed=0, per_cycle=8)
    assert {next(gen).package for _ in range(8)} == {"pkg0-1", "pkg1-1", "pkg2-1", "pkg3-1"}


def test_line_start_cursors_ask_for_the_whole_line_with_its_indentation(tok):
    """The recipe's short stage puts the cursor at column 0, as HumanEval's single-line benchmark does:
    the middle is a whole line of the file, indentation included, and the prompt stops at a line end."""
    only_line_starts = tuple(1.0 if kind == "linestart" else 0.0 for kind in KINDS)
    files = [SourceFile("shapes-1.0", f.path, f.text) for f in FILES]
    gen = served_examples(tok, files, max_tokens=1024, seed=0, per_cycle=8, spm_rate=0.0,
                          budgets=(128, 256), full_budget_rate=0.0, kind_weights=only_line_starts)
    lines = {line for f in FILES for line in f.text.split("\n") if line.strip()}
    for _ in range(8):
        one = next(gen)
        assert one.kind == "linestart" and not one.spm
        assert one.prompt_tokens <= 256  # the short budget, not the server's full one
        mid = one.tokens.index(tok.middle_id)
        # One whole line, and nothing before it: at a line's start no prefix token is held back for
        # healing (engine.healing.TokenHealer.heal_text), as the engine serves it.
        assert tok.decode_infill(one.tokens[mid + 1 : -1]) in lines


BASE = "class Shape:\n    def area(self):\n        return 0\n\n    def describe(self):\n        return 'a shape'\n"
SQUARE = ("from .base import Shape\n\n\nclass Square(Shape):\n    def __init__(self, side):\n        self.side = side\n\n"
          "    def report(self):\n        return self.describe() + str(self.side)\n")


def test_inherited_cursors_sit_after_self_where_a_base_class_in_another_file_defines_the_name(tok):
    """`self.describe()` in Square comes from Shape in base.py: a cursor after `self.`, the rest of the
    line the middle, and the prompt quotes the base class; `self.side` (Square's own) is no such cursor."""
    files = [SourceFile("shapes-1.0", "shapes/base.py", BASE), SourceFile("shapes-1.0", "shapes/square.py", SQUARE)]
    ex = ServedExamples(tok, files, seed=0, spm_rate=1.0, context_rate=1.0)
    at = SQUARE.index("describe()")
    assert ex.inherited_cursors() == {"shapes/square.py": [at]}
    one = ex.example(files[1], budget=1024, kind="inherited")
    assert one is not None and one.kind == "inherited"
    text = tok.decode(one.tokens[:-1])
    assert text.endswith("return self.describe() + str(self.side)")  # SPM: the prompt, then the middle
    assert "# Path: shapes/base.py" in text and "def describe(self):" in text
    assert ex.example(files[0], budget=1024, kind="inherited") is None  # base.py inherits nothing


@pytest.mark.parametrize("spm", [True, False])
def test_the_middles_first_tokens_weigh_boundary(tok, spm):
    """Where the middle begins is what a PSM model gets wrong first: its first tokens (the prefix's
    held-back token among them) weigh `boundary` times the middle's weight; the rest weighs 1.0."""
    ex = ServedExamples(tok, FILES, seed=0, spm_rate=1.0 if spm else 0.0, context_rate=0.0,
                        loss_weights=LossWeights(boundary=10.0, boundary_tokens=3))
    found = [one for one in (ex.example(FILES[1], budget=1024) for _ in range(20)) if one is not None]
    assert found
    for one in found:
        w = one.loss_weights
        assert w is not None
        heavy = np.flatnonzero(w == 10.0)
        assert len(heavy) == min(3, len(one.tokens) - heavy[0]) and (np.diff(heavy) == 1).all()
        assert (w[: heavy[0]] == 1.0).all() and (w[heavy[-1] + 1 :] == 1.0).all()
        if not spm:  # PSM: the middle starts right after <MID>
            assert one.tokens[heavy[0] - 1] == tok.middle_id
