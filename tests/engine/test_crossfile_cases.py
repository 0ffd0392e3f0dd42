"""The cross-file benchmark's case builder (engine/evaluate/crossfile_cases.py) on a tiny synthetic package:
each kind of case is found where the code uses another file's name, and nowhere else."""

from __future__ import annotations

from engine.evaluate.crossfile_cases import build_cases, sample_cases

PACKAGE = {
    "shop/__init__.py": "from .money import Price\n",
    "shop/money.py": ("TAX_RATE = 0.2\n\n\nclass Price:\n    def __init__(self, cents):\n        self.cents = cents\n\n"
                      "    def with_tax(self):\n        return Price(self.cents * (1 + TAX_RATE))\n"),
    "shop/base.py": "class Model:\n    def save(self, store):\n        store.append(self)\n",
    "shop/cart.py": (
        "import shop.money as m\n"
        "from shop import Price\n"
        "from .base import Model\n"
        "\n"
        "\n"
        "def local_helper():\n"
        "    return 1\n"
        "\n"
        "\n"
        "class Cart(Model):\n"
        "    def add(self, cents):\n"
        "        total = Price(cents).with_tax()\n"
        "        rate = m.TAX_RATE + local_helper()\n"
        "        self.save([total, rate])\n"
        "        return self.add\n"
    ),
}


def test_each_kind_of_cross_file_use_becomes_one_case_with_the_rest_of_its_line_removed():
    cases = [c for c in build_cases(PACKAGE) if c.path == "shop/cart.py"]
    assert [(c.kind, c.line, c.name) for c in cases] == [
        ("import", 9, "Model"), ("import", 11, "Price"), ("module_attr", 12, "TAX_RATE"), ("self_base", 13, "save")]
    by_kind = {c.kind: c for c in cases}

    imported = by_kind["import"]  # Price, re-exported by shop/__init__.py from shop/money.py
    assert (imported.line, imported.column, imported.name) == (11, 16, "Price")
    assert imported.target == "Price(cents).with_tax()"
    lines = imported.text.split("\n")
    assert lines[11] == "        total = " and lines[12] == "        rate = m.TAX_RATE + local_helper()"
    assert imported.text.replace("        total = \n", "        total = Price(cents).with_tax()\n") == PACKAGE["shop/cart.py"]

    attr = by_kind["module_attr"]  # m.TAX_RATE: the cursor after "m."
    assert (attr.line, attr.column, attr.target) == (12, 17, "TAX_RATE + local_helper()")

    inherited = by_kind["self_base"]  # save() is Model's, in shop/base.py; self.add is Cart's own
    assert (inherited.line, inherited.column, inherited.target) == (13, 13, "save([total, rate])")


def test_names_of_the_same_file_and_files_that_do_not_parse_give_no_cases():
    cases = build_cases({**PACKAGE, "shop/broken.py": "from .money import Price\nx = Price(\n"})
    assert not any(c.path in ("shop/money.py", "shop/broken.py") for c in cases)  # Price is money.py's own
    assert not any("local_helper" == c.name or c.target.startswith("add") for c in cases)


def test_sampling_takes_the_kinds_in_turn_and_is_stable():
    cases = build_cases(PACKAGE)
    picked = sample_cases(cases, 3, seed=1)
    assert sorted(c.kind for c in picked) == ["import", "module_attr", "self_base"]
    assert picked == sample_cases(cases, 3, seed=1)
    assert len(sample_cases(cases, 100)) == len(cases)


def test_the_benchmark_packages_are_kept_out_of_training():
    from engine.evaluate.crossfile_cases import ALL_PACKAGES
    from recipes.default_model.build_corpus import is_benchmark_package

    assert all(is_benchmark_package(p.name) for p in ALL_PACKAGES)
    assert is_benchmark_package("python3-markdown") and is_benchmark_package("WTForms")  # Debian, PyPI spellings
    assert not is_benchmark_package("markdown-it-py")  # in the corpus, and a different project


def test_a_case_typed_into_puts_the_cursor_after_the_typed_start_of_the_name():
    """`crossfile.py --typed N`: completion asked while typing the name; what is expected is the rest."""
    imported = next(c for c in build_cases(PACKAGE) if c.name == "Price" and c.path == "shop/cart.py")
    typed = imported.typed_to(2)
    assert typed is not None and (typed.typed, typed.column, typed.expected) == ("Pr", 18, "ice(cents).with_tax()")
    assert typed.text.split("\n")[11] == "        total = Pr"
    assert typed.text.replace("total = Pr\n", "total = Price(cents).with_tax()\n") == PACKAGE["shop/cart.py"]
    assert imported.typed_to(5) is None  # nothing of the name left to complete
    assert imported.expected == imported.target
