from lsp_server.context.imports import outline, resolve_imports
from lsp_server.context.snippets import BM25, Snippet, dedupe, jaccard, rank, windows, words


def test_words_drop_keywords_and_single_letters():
    assert words("def parse_config(self, x): return self.loadYaml(path)") == [
        "parse_config", "loadyaml", "path"]


def test_windows_are_aligned_and_skip_blank_ones():
    text = "\n".join(f"line{i}" for i in range(100))
    wins = windows("a.py", text, "similar", size=40, stride=20)
    assert [w.start_line for w in wins] == [0, 20, 40, 60]  # the last one reaches the end
    assert wins[0].text.startswith("line0\n") and wins[-1].end_line == 100
    assert windows("b.py", "\n\n\n", "open") == []


def test_rank_prefers_similar_text_and_import_sources():
    query = set(words("total = compute_invoice_total(items, tax_rate)"))
    a = Snippet("a.py", "def compute_invoice_total(items, tax_rate):\n", 0, 1, "similar")
    b = Snippet("b.py", "def unrelated_thing(foo):\n", 0, 1, "similar")
    c = Snippet("c.py", "def unrelated_thing(bar):\n", 0, 1, "import")
    ranked = rank([b, c, a], query)
    assert ranked[0] is a and ranked[1] is c  # the import bonus beats a zero-similarity window
    assert jaccard({"x"}, set()) == 0.0


def test_dedupe_drops_overlaps_and_near_duplicates():
    s1 = Snippet("a.py", "alpha beta gamma delta", 0, 40, "open", score=0.9)
    s2 = Snippet("a.py", "epsilon zeta", 20, 60, "open", score=0.8)  # overlaps s1
    s3 = Snippet("b.py", "alpha beta gamma delta", 0, 40, "similar", score=0.7)  # same words
    s4 = Snippet("c.py", "omega", 0, 5, "similar", score=0.1)
    assert dedupe([s1, s2, s3, s4]) == [s1, s4]


def test_bm25_finds_the_window_with_rare_shared_words_and_follows_updates():
    index = BM25()
    for i in range(30):
        index.add(Snippet(f"f{i}.py", f"def common_helper_{i}(value):\n    return value\n", 0, 2, "similar"))
    target = Snippet("pay.py", "def refund_payment(invoice_id):\n    ledger.reverse(invoice_id)\n", 0, 2, "similar")
    index.add(target)
    hits = index.search(words("ledger reverse invoice_id"), limit=3)
    assert hits[0].path == "pay.py"
    index.remove_path("pay.py")
    assert all(h.path != "pay.py" for h in index.search(words("ledger reverse invoice_id"), limit=3))
    assert index.search(["nothing_matches_this"], limit=3) == []


def test_python_imports_resolve_absolute_relative_and_src_layout():
    files = {"src/pkg/__init__.py", "src/pkg/models.py", "src/pkg/util/strings.py", "src/pkg/api.py",
             "tests/test_api.py"}
    text = "import os\nfrom pkg import models\nfrom .util.strings import slugify\nfrom . import api\n"
    assert resolve_imports("src/pkg/views.py", text, "python", files) == [
        "src/pkg/models.py", "src/pkg/util/strings.py", "src/pkg/api.py"]


def test_an_unfinished_from_import_line_resolves_its_module():
    """`from geometry import |` is what the user is typing: the module must reach the context now,
    before any name is written, so the suggestion can take a name from it."""
    files = {"geometry.py", "pkg/__init__.py", "pkg/shapes.py", "app.py"}
    assert resolve_imports("app.py", "from geometry import ", "python", files) == ["geometry.py"]
    assert resolve_imports("app.py", "x = 1\nfrom pkg.shapes import", "python", files) == ["pkg/shapes.py"]
    assert resolve_imports("pkg/a.py", "from .shapes import (", "python", files) == ["pkg/shapes.py"]
    assert resolve_imports("app.py", "from geometry importer", "python", files) == []


def test_js_and_ts_imports_resolve_extensions_and_index_files():
    files = {"src/a.ts", "src/lib/index.ts", "src/b.js", "src/c.tsx"}
    text = ("import { x } from './a';\nimport lib from \"./lib\";\nconst b = require('./b.js');\n"
            "import React from 'react';\nexport * from './c.js';\n")
    assert resolve_imports("src/main.ts", text, "typescript", files) == [
        "src/a.ts", "src/lib/index.ts", "src/b.js", "src/c.tsx"]


def test_outline_keeps_signatures_not_bodies():
    text = "import os\n\nclass Cart:\n    def add(self, item):\n        self.items.append(item)\n\ndef total(cart):\n    return 0\n"
    out = outline(text, "python")
    assert "class Cart:" in out and "def add(self, item):" in out and "def total(cart):" in out
    assert "append" not in out and "return 0" not in out
