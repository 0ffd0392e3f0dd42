"""Retrieval of what the cursor needs (lsp_server/context/definitions.py): one small workspace, one test
per kind of reference. The buffer at the cursor never parses (the line is unfinished), as while typing."""

from __future__ import annotations

from lsp_server.context.builder import build_context
from lsp_server.context.definitions import OutlineCache, Resolver, definition_snippets
from lsp_server.context.gather import Gatherer, OpenDoc, Request
from lsp_server.context.refs import buffer_imports, cursor_chain, enclosing_class
from lsp_server.context.snippets import Snippet
from lsp_server.context.symbols import outline_module

WORKSPACE = {
    "shop/__init__.py": "from .money import Price\nfrom .units import *\n",
    "shop/units.py": 'GRAMS_PER_POUND = 453.59237\n\n\ndef to_grams(pounds):\n    """Pounds to grams."""\n    return pounds * GRAMS_PER_POUND\n',
    "shop/money.py": (
        "TAX_RATE = 0.2\n\n\n"
        "class Price:\n"
        '    """An amount in cents."""\n\n'
        "    def __init__(self, cents: int) -> None:\n"
        "        self.cents = cents\n\n"
        "    def with_tax(self, rate: float = TAX_RATE) -> 'Price':\n"
        '        """The price with tax added.\n\n        More words that stay out of the snippet."""\n'
        "        return Price(round(self.cents * (1 + rate)))\n"
    ),
    "shop/storage/base.py": (
        "class Record:\n"
        "    def serialise_fields(self) -> dict:\n        return dict(self.__dict__)\n"
    ),
    "shop/storage/model.py": (
        "from .base import Record\n\n\n"
        "class Model(Record):\n"
        "    table_name = 'models'\n\n"
        "    def persist_to(self, store, *, overwrite=False):\n        store.append(self)\n"
    ),
    "shop/lexical.py": "\n".join(f"line_{i} = basket_total_cents + basket_total_cents" for i in range(40)) + "\n",
}


def snippets_for(path: str, text: str, files: dict[str, str] = WORKSPACE) -> list[Snippet]:
    """The definition snippets for a cursor at the end of `text`."""
    resolver = Resolver(set(files) | {path}, files.get, OutlineCache(), path)
    return definition_snippets(path, text, len(text), resolver)


def texts(snips: list[Snippet]) -> str:
    return "".join(s.text for s in snips)


def test_relative_from_import_brings_the_name_definition_as_a_compact_signature():
    buffer = "from .money import Price\n\n\ndef checkout(cents):\n    price = Price(cents)\n    return price.with_tax("
    snips = snippets_for("shop/cart.py", buffer)
    first = snips[0]
    assert first.path == "shop/money.py" and first.source == "definition"
    assert first.text.startswith("class Price:\n")
    assert "def with_tax(self, rate: float = TAX_RATE) -> 'Price':" in first.text
    assert '"""The price with tax added."""' in first.text and "More words" not in first.text  # docstring's first line
    assert "return Price(round" not in first.text  # bodies stay out
    assert "self.cents = cents" in first.text  # attributes __init__ sets


def test_absolute_from_import_and_a_constant_comes_with_its_value():
    buffer = "from shop.money import TAX_RATE\n\ntotal = 100 * (1 + "
    snips = snippets_for("app/main.py", buffer)
    assert snips[0].path == "shop/money.py" and snips[0].text == "TAX_RATE = 0.2\n"


def test_package_init_re_exports_are_followed_to_the_defining_file():
    buffer = "from shop import Price, to_grams\n\nweight = to_grams(3)\nx = "
    snips = snippets_for("app/main.py", buffer)
    paths = [s.path for s in snips]
    assert paths[:2] == ["shop/units.py", "shop/money.py"]  # to_grams is used nearer the cursor
    assert snips[0].text == 'def to_grams(pounds):\n    """Pounds to grams."""\n    ...\n'


def test_module_alias_then_dot_lists_the_module_names_including_star_re_exports():
    buffer = "import shop as s\nimport shop.money as m\n\nrate = m."
    snips = snippets_for("app/main.py", buffer)
    assert {s.text.split("\n")[0] for s in snips if s.path == "shop/money.py"} >= {
        "TAX_RATE = 0.2", "class Price:"}
    attr = snippets_for("app/main.py", "import shop as s\n\nw = s.to_")
    assert attr[0].path == "shop/units.py" and attr[0].text.startswith("def to_grams(pounds):")  # via `*`


def test_self_dot_brings_the_bases_members_across_files():
    buffer = ("from shop.storage.model import Model\n\n\nclass Customer(Model):\n    def save(self, store):\n"
              "        if self.")
    snips = snippets_for("shop/customer.py", buffer)
    assert [s.path for s in snips[:2]] == ["shop/storage/model.py", "shop/storage/base.py"]  # base, then its base
    assert "def persist_to(self, store, *, overwrite=False):" in snips[0].text
    assert "table_name = 'models'" in snips[0].text
    assert "def serialise_fields(self) -> dict:" in snips[1].text


def test_a_big_base_class_comes_as_its_constructor_and_every_member_name_and_fits_beside_a_long_file():
    """A base class of a hundred methods (flask's `App`) would outline to more than the room a long file
    leaves for snippets: it comes as its constructor and the names of all its members instead, so the
    method at the end of the class is in the prompt for `self.` in a subclass."""
    methods = "".join(f"    def handler_{i}(self, request, *, strict=False):\n        return {i}\n\n" for i in range(100))
    app = ("class App:\n    \"\"\"The application.\"\"\"\n\n    def __init__(self, import_name: str) -> None:\n"
           "        self.import_name = import_name\n\n" + methods + "    def select_autoescape(self, filename):\n"
           "        return True\n")
    files = {**WORKSPACE, "shop/app.py": app}
    long_file = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(200))
    buffer = ("from .app import App\n\n\n" + long_file + "class Shop(App):\n    def render(self, name):\n"
              "        options = {}\n        options['autoescape'] = self.")
    snips = snippets_for("shop/web.py", buffer, files)
    outline = snips[0].text
    assert snips[0].path == "shop/app.py" and outline.startswith("class App:\n")
    assert "def __init__(self, import_name: str) -> None:" in outline  # what a call site needs
    assert "select_autoescape" in outline and "handler_99" in outline  # every member, the last one too
    assert "return True" not in outline and len(outline.splitlines()) < 10  # no bodies, a few lines
    req = Request("shop/web.py", buffer, "python", len(buffer), 1, [OpenDoc(p, t, "python", 1) for p, t in files.items()])
    built = build_context(text=buffer, cursor=len(buffer), path="shop/web.py", language="python", budget=2048,
                          count=lambda s: len(s) // 4 + 1, candidates=Gatherer().gather(req, None, set()))
    assert "select_autoescape" in built.prefix[: built.prefix.index("# Path: shop/web.py")]


def test_a_name_being_typed_brings_the_imported_names_it_starts():
    buffer = "from .money import Price, TAX_RATE\n\nrate = TAX"
    snips = snippets_for("shop/cart.py", buffer)
    assert snips[0].text == "TAX_RATE = 0.2\n"


def test_the_current_file_is_never_read_from_the_workspace():
    stale = {**WORKSPACE, "shop/cart.py": "def secret_answer():\n    return 42\n"}
    buffer = "from .cart import secret_answer\nfrom .money import Price\nx = "
    assert "secret_answer" not in texts(snippets_for("shop/cart.py", buffer, stale))


def test_definitions_outrank_lexical_windows_in_the_prompt_and_share_one_header_per_file():
    buffer = ("from .money import Price, TAX_RATE\n\nbasket_total_cents = 0\n\n\n"
              "def total(basket_total_cents):\n    return Price(basket_total_cents).")
    req = Request("shop/cart.py", buffer, "python", len(buffer), 1,
                  [OpenDoc(p, t, "python", 1) for p, t in WORKSPACE.items()])
    candidates = Gatherer().gather(req, None, set())
    built = build_context(text=buffer, cursor=len(buffer), path="shop/cart.py", language="python", budget=400,
                          count=lambda s: len(s) // 4 + 1, candidates=candidates)
    assert {s.source for s in built.snippets} >= {"definition"}
    assert not any(s.path == "shop/lexical.py" for s in built.snippets)  # shares words, but less needed
    assert built.prefix.count("# Path: shop/money.py\n") == 1
    assert "# class Price:\n" in built.prefix and "# TAX_RATE = 0.2\n" in built.prefix


def test_recently_edited_regions_of_other_open_files_are_candidates():
    other = "\n".join(f"row_{i} = {i}" for i in range(100)) + "\n"
    req = Request("shop/cart.py", "x = ", "python", 4, 1, [OpenDoc("notes.py", other, "python", 3)],
                  edits=[("notes.py", 57)])
    edits = [s for s in Gatherer().gather(req, None, set()) if s.source == "edit"]
    assert len(edits) == 1 and edits[0].start_line <= 57 < edits[0].end_line and "row_57 = 57" in edits[0].text


def test_buffer_scans_tolerate_unfinished_code():
    buffer = ("from .a import (One,\n    Two as Deux,\n" "import pkg.mod as m, os\n"
              "class Child(m.Base, Generic[T], metaclass=Meta):\n    x = (\n    def f(self):\n        self.na")
    imports = buffer_imports(buffer)
    assert imports["One"] == (1, "a", "One") and imports["Deux"] == (1, "a", "Two")
    assert imports["m"] == (0, "pkg.mod", None) and imports["os"] == (0, "os", None)
    cls = enclosing_class(buffer, len(buffer))
    assert cls is not None and cls.name == "Child" and cls.bases == ("m.Base", "Generic")
    assert cursor_chain(buffer, len(buffer)) == ("self", "na")
    assert enclosing_class("class A:\n    pass\n\nx = ", 20) is None


def test_outlines_are_cached_per_text_and_bounded():
    cache = OutlineCache(max_entries=2)
    text = WORKSPACE["shop/money.py"]
    first = cache.get("a.py", text)
    assert cache.get("a.py", text) is first  # same text: no second parse
    assert cache.get("a.py", text + "\nLATE = 1\n") is not first  # changed: parsed again
    cache.get("b.py", "B = 1\n")
    cache.get("c.py", "C = 1\n")
    assert len(cache) == 2
    assert outline_module("def broken(:\n") is None
    assert cache.get("huge.py", "X = 1\n" * 100_000) is None  # too big to parse on a keystroke
