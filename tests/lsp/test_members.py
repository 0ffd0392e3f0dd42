"""The attribute names known at the cursor (lsp_server/context/members.py): one small workspace, a test
per kind of owner. The buffer never parses at the cursor (the line is unfinished), as while typing."""

from __future__ import annotations

from lsp_server.completion import name_guidance
from lsp_server.context.definitions import OutlineCache, Resolver
from lsp_server.context.gather import Gatherer, Request
from lsp_server.context.members import KnownNames, known_names
from lsp_server.context.refs import buffer_imports, own_package_names, starts_expression
from lsp_server.settings import Settings

WORKSPACE = {
    "shop/__init__.py": "from .money import Price\nfrom .units import *\n",
    "shop/units.py": (
        "GRAMS_PER_POUND = 453.59237\n"
        "try:\n    from fast_units import to_ounces\nexcept ImportError:\n    def to_ounces(grams):\n        return grams / 28.35\n"
        "if GRAMS_PER_POUND > 1:\n    KILO, MILLI = 1000, 0.001\n\n\n"
        "def to_grams(pounds):\n    return pounds * GRAMS_PER_POUND\n"
    ),
    "shop/money.py": (
        "TAX_RATE = 0.2\n\n\n"
        "class Price:\n"
        "    currency = 'EUR'\n\n"
        "    def __init__(self, cents: int) -> None:\n"
        "        self.cents = cents\n\n"
        "    def with_tax(self, rate: float = TAX_RATE) -> 'Price':\n"
        "        return Price(round(self.cents * (1 + rate)))\n"
    ),
    "shop/storage/base.py": (
        "class Record:\n"
        "    def serialise_fields(self) -> dict:\n        return dict(self.__dict__)\n\n"
        "    def mark_dirty(self):\n        self.dirty_since = 0\n"
    ),
    "shop/storage/model.py": (
        "from .base import Record\n\n\n"
        "class Model(Record):\n"
        "    table_name = 'models'\n\n"
        "    def persist_to(self, store):\n        store.append(self)\n"
    ),
    "shop/lazy.py": "def __getattr__(name):\n    return name.upper()\n",
}


def names_at(path: str, text: str, files: dict[str, str] = WORKSPACE) -> KnownNames | None:
    """The names known for a cursor at the end of `text` (the buffer of `path`)."""
    resolver = Resolver(set(files) | {path}, files.get, OutlineCache(), path)
    return known_names(path, text, len(text), resolver, buffer_imports(text))


SUBCLASS = (
    "from shop.storage.model import Model\n\n\n"
    "class Order(Model):\n"
    "    __slots__ = ('lines', 'owner')\n\n"
    "    def add_line(self, line):\n"
    "        self.total_cents = line.cents\n\n"
    "    def save(self, store):\n"
    "        self."
)


def test_self_in_a_class_gets_its_own_members_and_its_bases_across_files():
    known = names_at("shop/order.py", SUBCLASS)
    assert known is not None and known.typed == ""
    own = {"add_line", "save", "total_cents", "lines", "owner", "__slots__"}
    bases = {"table_name", "persist_to", "serialise_fields", "mark_dirty", "dirty_since"}  # Model, then Record
    assert own | bases <= known.names
    assert "__class__" in known.names and "to_grams" not in known.names


def test_what_is_typed_narrows_the_choices_to_the_rest_of_each_name():
    known = names_at("shop/order.py", SUBCLASS + "per")
    assert known is not None and known.typed == "per" and known.choices() == ("sist_to",)
    assert names_at("shop/order.py", SUBCLASS + "brand_new").choices() is None  # a new attribute: no rule


def test_a_base_from_outside_the_workspace_or_a_chain_gives_no_names():
    assert names_at("shop/errors.py", "class OrderError(Exception):\n    def explain(self):\n        return self.") is None
    assert names_at("shop/order.py", SUBCLASS + "owner.") is None  # self.owner.: its type is unknown
    assert names_at("shop/io.py", "import os\n\n\ndef where():\n    return os.") is None  # not a workspace module


def test_a_string_whose_lines_start_at_column_zero_does_not_end_the_class():
    text = ("class Query:\n    def sql(self):\n        return \"\"\"\nSELECT *\nFROM t\n\"\"\"\n\n"
            "    def run(self):\n        self.rows = []\n        return self.")
    known = names_at("shop/query.py", text)
    assert known is not None and {"sql", "run", "rows"} <= known.names


def test_a_class_defined_above_in_the_same_buffer_counts_as_a_base():
    text = ("class Base:\n    def ping(self):\n        pass\n\n\n"
            "class Child(Base):\n    def run(self):\n        return self.")
    known = names_at("shop/local.py", text)
    assert known is not None and {"ping", "run"} <= known.names


def test_module_alias_gets_the_modules_top_level_names_including_conditional_ones():
    known = names_at("shop/report.py", "import shop.units as units\n\n\ndef weigh(p):\n    return units.")
    assert known is not None
    assert {"GRAMS_PER_POUND", "to_ounces", "KILO", "MILLI", "to_grams"} <= known.names
    assert "Price" not in known.names


def test_a_package_offers_its_reexports_star_imports_and_submodules():
    known = names_at("app.py", "import shop\n\n\ntotal = shop.")
    assert known is not None
    assert {"Price", "GRAMS_PER_POUND", "to_grams", "money", "units", "storage"} <= known.names


def test_an_imported_class_gets_its_members_and_its_bases():
    known = names_at("shop/admin.py", "from shop.storage.model import Model\n\n\nname = Model.")
    assert known is not None and {"table_name", "persist_to", "serialise_fields"} <= known.names


def test_a_module_or_a_class_that_makes_names_up_gives_none():
    assert names_at("shop/use.py", "from shop import lazy\n\n\nx = lazy.") is None
    proxy = ("from shop.storage.model import Model\n\n\nclass Proxy(Model):\n"
             "    def __getattr__(self, name):\n        return name\n\n    def run(self):\n        return self.")
    assert names_at("shop/proxy.py", proxy) is None
    files = {**WORKSPACE, "shop/storage/base.py": WORKSPACE["shop/storage/base.py"]
             + "\n    def __getattribute__(self, name):\n        return 1\n"}
    assert names_at("shop/order.py", SUBCLASS, files) is None  # a base, in another file, does it


def test_the_gatherer_reads_the_workspace_only_with_repository_context():
    class Index:
        generation = 1

        def paths(self) -> set[str]:
            return set(WORKSPACE)

        def text(self, path: str) -> str | None:
            return WORKSPACE.get(path)

    req = Request("shop/order.py", SUBCLASS, "python", len(SUBCLASS), 1)
    with_index = Gatherer().known_names(req, Index())  # type: ignore[arg-type]
    assert with_index is not None and "persist_to" in with_index.names
    assert Gatherer().known_names(req, None) is None  # the buffer alone: Model cannot be followed


# ---- names favored at the start of an expression (refs.own_package_names, Gatherer.favored_names) ----

IMPORTS = (
    "import os\n"
    "from typing import Any\n"
    "from . import units\n"
    "from .money import Price as Amount, TAX_RATE\n"
    "from shop.storage.model import Model\n"
    "from elsewhere.thing import Widget\n"
    "import shop.lazy as lazy\n\n\n"
)


def test_own_package_names_are_what_the_file_imports_from_its_package_by_their_local_names():
    names = own_package_names("shop/order.py", buffer_imports(IMPORTS))
    # Relative imports and the file's own top-level package; not the standard library, another
    # package, or modules bound by `import` (a name after them follows a dot).
    assert names == ["Amount", "Model", "TAX_RATE", "units"]
    assert own_package_names("order.py", buffer_imports(IMPORTS)) == ["Amount", "TAX_RATE", "units"]


def test_a_name_may_start_after_a_space_a_bracket_or_an_operator_not_inside_a_word_a_comment_or_a_string():
    for line in ("", "        raise ", "    x = ", "    f(a, ", "    return [", "    if not "):
        assert starts_expression(line), line
    for line in ("    self.", "    val", "    x = 1  # a ", '    print("a ', "    s = 'it ", "    n = 3"):
        assert not starts_expression(line), line


def test_the_gatherer_favors_own_package_names_at_an_expression_start_only():
    text = IMPORTS + "def check(order):\n    if not order:\n        raise "
    gatherer = Gatherer()
    assert gatherer.favored_names(Request("shop/order.py", text, "python", len(text), 1)) == (
        "Amount", "Model", "TAX_RATE", "units")
    dotted = text + "order."
    assert gatherer.favored_names(Request("shop/order.py", dotted, "python", len(dotted), 2)) is None
    assert gatherer.favored_names(Request("shop/order.js", text, "javascript", len(text), 1)) is None
    alone = "def check(order):\n    raise "
    assert gatherer.favored_names(Request("shop/order.py", alone, "python", len(alone), 1)) is None


def test_inside_a_name_typed_at_an_expression_start_the_rest_of_the_names_it_begins_is_favored():
    def favored(typed: str) -> tuple[str, ...] | None:
        text = IMPORTS + "def check(order):\n    total = " + typed
        return Gatherer().favored_names(Request("shop/order.py", text, "python", len(text), 1))

    assert favored("T") == ("AX_RATE",)  # relative to the cursor, as name choices are
    assert favored("A") == ("mount",)
    assert favored("Amo") == ("unt",)
    assert favored("Z") is None  # no name goes on from it
    assert favored("Amount") is None  # a whole name: it may be complete
    assert favored("order.T") is None  # after a dot the known-names rule decides
    assert favored("3") is None


def test_name_guidance_gives_choices_after_a_dot_favored_names_elsewhere_and_nothing_when_turned_off():
    start = IMPORTS + "class Order(Model):\n    def save(self, store):\n        store.append("
    dotted = start + "self."
    on, off = Settings(), Settings(known_names=False)
    assert name_guidance(Gatherer(), Request("shop/order.py", start, "python", len(start), 1), None, on) == {
        "name_choices": None, "favored_names": ("Amount", "Model", "TAX_RATE", "units")}
    guided = name_guidance(Gatherer(), Request("shop/order.py", dotted, "python", len(dotted), 1), None, on)
    assert guided["favored_names"] is None
    assert name_guidance(Gatherer(), Request("shop/order.py", start, "python", len(start), 1), None, off) == {
        "name_choices": None, "favored_names": None}
