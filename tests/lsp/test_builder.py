import re

from lsp_server.context.budget import TokenCounter, take_backward, take_forward
from lsp_server.context.builder import SUFFIX_SHARE, SpotLayouts, build_context, line_of, query_words
from lsp_server.context.snippets import Snippet, windows

_TOKEN = re.compile(r"\w+|\s|[^\w\s]")


def count(text: str) -> int:
    return len(_TOKEN.findall(text))


def python_file(n: int) -> str:
    return "".join(f"def function_{i}(value_{i}):\n    return value_{i} + {i}\n\n" for i in range(n))


def test_prefix_and_suffix_are_cut_at_line_boundaries_within_budget():
    text = python_file(200)
    cursor = text.index("def function_100")
    for budget in (64, 256, 1000, 5000):
        built = build_context(text=text, cursor=cursor, path="m.py", language="python", budget=budget, count=count)
        assert count(built.prefix) + count(built.suffix) <= budget
        file_part = built.prefix.split("# Path: m.py\n", 1)[1]
        assert text[:cursor].endswith(file_part)
        start = cursor - len(file_part)
        assert start == 0 or text[:start].endswith("\n")  # whole lines
        assert text[cursor:].startswith(built.suffix) and built.suffix.endswith("\n")
        assert count(built.suffix) <= budget * SUFFIX_SHARE


def test_whole_file_when_it_fits():
    text = python_file(5)
    cursor = len(text) // 2
    built = build_context(text=text, cursor=cursor, path="m.py", language="python", budget=10_000, count=count)
    assert built.prefix == "# Path: m.py\n" + text[:cursor] and built.suffix == text[cursor:]


def test_snippets_are_packed_as_comments_with_path_headers_in_the_files_language():
    other = "export function formatPrice(cents) {\n  return (cents / 100).toFixed(2);\n}\n"
    cands = windows("src/price.js", other, "open")
    text = "import { formatPrice } from './price';\nconst label = formatPrice("
    built = build_context(text=text, cursor=len(text), path="src/cart.js", language="javascript",
                          budget=2000, count=count, candidates=cands)
    assert built.prefix.startswith("// Path: src/price.js\n// export function formatPrice(cents) {\n")
    assert "// Path: src/cart.js\nimport { formatPrice }" in built.prefix
    assert built.prefix.endswith("formatPrice(")
    assert [s.path for s in built.snippets] == ["src/price.js"]


def test_snippet_packing_respects_the_budget_and_prefers_relevant_ones():
    relevant = Snippet("tax.py", "def apply_tax_rate(amount, tax_rate):\n    return amount * tax_rate\n", 0, 2, "similar")
    noise = [Snippet(f"n{i}.py", f"def unrelated_{i}(foo_{i}):\n    pass\n" * 5, 0, 10, "similar") for i in range(50)]
    text = "def invoice(amount):\n    total = apply_tax_rate(amount, "
    for budget in (150, 400, 3000):
        built = build_context(text=text, cursor=len(text), path="inv.py", language="python", budget=budget,
                              count=count, candidates=noise + [relevant])
        assert count(built.prefix) + count(built.suffix) <= budget + 2
        assert "tax.py" in [s.path for s in built.snippets]
        assert [s.key for s in built.snippets] == sorted(s.key for s in built.snippets)  # stable order


def test_layout_stays_the_same_while_typing():
    """Typing at the cursor must not move the prefix's cut or change the snippets, so the engine
    can reuse the KV cache of everything before the cursor."""
    text = python_file(300)
    cands = [Snippet(f"lib{i}.py", f"def function_{i}_helper(value):\n    return value\n", 0, 2, "similar")
             for i in range(20)]
    cursor = text.index("def function_250")
    layout = None
    prefixes = []
    typed = "def compute_something(value_1, value_2):"
    for ch in typed:
        text = text[:cursor] + ch + text[cursor:]
        cursor += 1
        built = build_context(text=text, cursor=cursor, path="m.py", language="python", budget=1500,
                              count=TokenCounter(count), candidates=cands, previous=layout)
        layout = built.layout
        prefixes.append(built.prefix)
    stable = sum(1 for a, b in zip(prefixes, prefixes[1:], strict=False) if b.startswith(a))
    assert stable >= len(typed) - 3  # each prompt extends the previous one, nearly always


def test_coming_back_to_a_spot_builds_the_prompt_it_built_there():
    """A jump elsewhere in the file (which types a line above the spot left) and back: the prompt at the
    spot left has the same cut and snippets as before, so its KV cache serves everything up to the
    jump's edit. With only the last layout kept, the jump's own cut and snippets replaced them."""
    text = python_file(400)
    cands = [Snippet(f"lib{i}.py", f"def function_{i}_helper(value):\n    return value\n", 0, 2, "similar")
             for i in range(300)]
    spots = SpotLayouts()

    def build(text: str, cursor: int):  # noqa: ANN202 - the builder's result
        built = build_context(text=text, cursor=cursor, path="m.py", language="python", budget=1500,
                              count=TokenCounter(count), candidates=cands, previous=spots.nearest(line_of(text, cursor)))
        spots.remember(built.layout)
        return built

    here = text.index("def function_300")
    for i in range(12):  # a few lines typed at the spot: its prefix grows from its cut, which stays
        text = text[:here] + f"    y_{i} = {i}\n" + text[here:]
        here += len(f"    y_{i} = {i}\n")
        before = build(text, here)
    there = text.index("def function_250")  # 50 functions up: a line typed there lies above the cut
    text = text[:there] + "    x = 1\n" + text[there:]
    build(text, there + 9)
    back = build(text, here + 10)
    assert [s.key for s in back.snippets] == [s.key for s in before.snippets]
    assert back.prefix == before.prefix and back.suffix == before.suffix


def test_the_word_being_typed_is_not_a_query_word_until_it_is_finished():
    """Snippets are ranked against the words around the cursor; half a name there (a new word per
    letter typed) would re-rank them at every keystroke and re-pick the selection mid-word."""
    text = "result = compute(total)\nvalue = helper_fun"
    assert query_words(text, len(text)) == {"result", "compute", "total", "value"}
    text += "ction(result)\n"
    assert "helper_function" in query_words(text, len(text))
    assert "helper_function" in query_words(text, text.index("helper_function"))  # before it: a whole word


def test_a_better_snippet_that_appears_replaces_the_kept_selection():
    """The kept selection (for the KV cache) gives way when a new, best match shows up: a file the
    user just wrote must reach the prompt."""
    text = "speed = compute_walrus_velocity(fish_count)\nx = "
    weak = Snippet("physics.py", "def momentum(mass, speed):\n    return mass * speed\n", 0, 2, "similar")
    walrus = Snippet("walrus.py", "def compute_walrus_velocity(fish_count):\n    return fish_count * 3\n", 0, 2,
                     "similar")
    first = build_context(text=text, cursor=len(text), path="user.py", language="python", budget=400,
                          count=count, candidates=[weak])
    assert [s.path for s in first.snippets] == ["physics.py"]
    again = build_context(text=text, cursor=len(text), path="user.py", language="python", budget=400,
                          count=count, candidates=[weak], previous=first.layout)
    assert again.prefix == first.prefix
    later = build_context(text=text, cursor=len(text), path="user.py", language="python", budget=400,
                          count=count, candidates=[weak, walrus], previous=again.layout)
    assert "walrus.py" in [s.path for s in later.snippets]
    assert "return fish_count * 3" in later.prefix


def test_a_ten_megabyte_single_line_costs_only_the_budget():
    calls = []

    def counting(text: str) -> int:
        calls.append(len(text))
        return count(text)

    text = "x = [" + "1, " * 3_500_000 + "]"
    cursor = len(text) // 2
    built = build_context(text=text, cursor=cursor, path="big.py", language="python", budget=2000, count=counting)
    assert count(built.prefix) + count(built.suffix) <= 2000
    assert sum(calls) < 200_000  # never tokenizes the whole line


def test_take_forward_and_backward_on_empty_and_tiny_budgets():
    assert take_backward("", 0, 10, count) == (0, 0)
    assert take_forward("abc", 3, 10, count) == (3, 0)
    start, n = take_backward("one two three", 13, 1, count)
    assert n <= 1 and start > 0
