import pytest

from lsp_server.postprocess import Cursor, is_finished, pointless, postprocess, wants_multiline


def cur(line_prefix, line_suffix="", next_lines="", prev_line="", multiline=None):
    if multiline is None:
        multiline = wants_multiline(line_prefix, line_suffix)
    return Cursor(line_prefix, line_suffix, next_lines, prev_line, multiline)


def test_pointless_when_code_follows_the_cursor():
    assert not pointless("")
    assert not pointless(")")
    assert not pointless("\");  ")
    assert pointless(" + y)")
    assert pointless("foo")


def test_single_vs_multi_line_decision():
    assert wants_multiline("def f(x):", "")
    assert wants_multiline("    ", "")
    assert wants_multiline("function f() {", "}")
    assert not wants_multiline("    x = compute(", "a)")
    assert not wants_multiline("    total = ", "")
    assert wants_multiline("x = ", "", mode="always") and not wants_multiline("", "", mode="never")


def test_single_line_stops_at_the_newline_and_trims():
    s = postprocess("compute(a, b)   \nprint(x)", cur("    total = "))
    assert s.text == "compute(a, b)" and not s.replaces_line_suffix


def test_closing_bracket_already_in_the_suffix_is_not_repeated():
    s = postprocess("a, b)", cur("foo(", ")"))
    assert s.text == "a, b" and not s.replaces_line_suffix


def test_output_that_rewrites_the_suffix_closer_replaces_the_rest_of_line():
    s = postprocess("a, b) + 1", cur("x = foo(", ")"))
    assert s.text == "a, b) + 1" and s.replaces_line_suffix


def test_closing_a_bracket_from_the_prefix_is_fine_when_the_suffix_does_not_close_it():
    s = postprocess("b)", cur("x = foo(a, ", ""))
    assert s.text == "b)"


def test_a_closer_on_a_less_indented_line_below_closes_an_earlier_line_s_bracket():
    # The `):` below closes the `if (` two lines up; the suggestion's `)` closes the call on its own
    # line, and dropping it would leave the user's code broken.
    s = postprocess("version, node)", cur("            and _any_fstring_error(self._normalizer.", "",
                                            "        ):\n            message = 1\n"))
    assert s.text == "version, node)"


def test_a_suggestion_does_not_close_an_earlier_line_s_bracket_that_a_less_indented_line_below_closes():
    # `raise ValueError(` two lines up is closed by the `) from exc` below: the model's second `)`
    # would close it twice (wtforms, cross-file benchmark). One the cursor's line opened stays.
    below = "            ) from exc\n"
    s = postprocess('gettext("Not a valid integer value."))', cur("                msg or self.", "", below))
    assert s.text == 'gettext("Not a valid integer value.")'
    s = postprocess("b, c))", cur("                msg or self.f(a, ", "", below))
    assert s.text == "b, c)"
    s = postprocess("x)", cur("                msg or self.", "", "            ] from exc\n"))
    assert s.text == "x)"  # another kind of bracket below: not what this closer closes


def test_a_closer_on_the_next_line_at_the_cursor_line_s_indentation_is_the_suffix_s():
    s = postprocess("a, b)", cur("    x = foo(", "", "    )\n"))
    assert s.text == "a, b"


def test_block_ends_by_indentation():
    raw = "\n    y = x * 2\n    return y\n\ndef other():\n    pass"
    s = postprocess(raw, cur("def double(x):"))
    assert s.text == "\n    y = x * 2\n    return y"


def test_braced_block_keeps_its_closing_brace_replacing_the_auto_closed_one():
    raw = "\n  return a + b;\n}\n\nfunction g() {\n}"
    s = postprocess(raw, cur("function add(a, b) {", "}"))
    assert s.text == "\n  return a + b;\n}" and s.replaces_line_suffix


def test_stops_where_the_output_repeats_the_suffix():
    raw = "x = load()\n    y = transform(x)\n    return y"
    s = postprocess(raw, cur("    ", "", "\n    y = transform(x)\n    return y\n", prev_line="def f():"))
    assert s.text == "x = load()"


def test_repeated_lines_are_dropped():
    raw = "log('a')\nlog('a')\nlog('a')"
    s = postprocess(raw, cur("    ", prev_line="def f():"))
    assert s.text == "log('a')"


def test_whitespace_only_output_is_no_suggestion():
    assert not postprocess("   \n  ", cur("x = "))
    assert postprocess("   \n  ", cur("x = ")).text == ""


def test_quote_already_present_is_dropped_from_the_end():
    assert postprocess('world"', cur('s = "hello ', '"')).text == "world"


def test_streaming_stops_once_the_block_is_over():
    c = cur("def f(x):")
    assert not is_finished("\n    return x", c)
    assert not is_finished("\n    return x\n", c)
    assert is_finished("\n    return x\n\ndef g():\n", c)
    assert is_finished("abc\n", cur("x = "))


# ---- a line that repeats itself -------------------------------------------------------------------

def test_a_span_repeating_within_the_line_is_cut_after_its_first_copy():
    # The default model's loops, seen end to end: the dangling `or` / `,` / `-` goes too.
    assert postprocess("n < 0 or n < 0 or n < 0 or n < 0", cur("    return ")).text == "n < 0"
    body = cur("    ", prev_line='    """True when n is negative."""')
    assert postprocess("return n < 0 or n < 0 or n < 0 or n < 0", body).text == "return n < 0"
    # "…": the output went on repeating until the token limit cut it off.
    assert postprocess("return n < 0 or n < 0 or n < 0", body, truncated=True).text == "return n < 0"
    raw = "rectangle_area, fence_area, fence_area, fence_area"
    assert postprocess(raw, cur("from geometry import ")).text == "rectangle_area, fence_area"
    # Cut off by the token limit while writing a third copy: that copy counts.
    raw = "rectangle_area, fence_area, fence_area, fence_"
    assert postprocess(raw, cur("from geometry import "), truncated=True).text == "rectangle_area, fence_area"
    assert postprocess("len(text) - len(text) - len(text) - len(", cur("    return ")).text == "len(text)"


def test_nested_calls_repeating_are_cut_and_left_balanced():
    # Inside brackets (the `(` before the cursor) a loop needs 6 copies; the call cut off goes too.
    raw = "x, " + "b.encode(" * 6 + "b"
    assert postprocess(raw, cur("    return x.encode(")).text == "x"
    assert postprocess("x, " + "b.encode(" * 5 + "b", cur("    return x.encode(")).text != "x"


def test_legitimate_repeats_within_a_line_are_kept():
    for prefix, raw in [
        ("    return ", "a, b, c"),
        ("    return ", "x[i][j] + x[i][i]"),
        ("origin = ", "(0, 0, 0)"),
        ("zeros = ", "[0, 0, 0, 0, 0, 0, 0, 0]"),  # a span under 4 characters
        ("weights = ", "(0.0, 0.0, 0.0, 0.0)"),  # literals only: data, not a loop
        ("row = ", "[None, None, None, None]"),
        ("    return ", "f(x) + f(x)"),  # two copies are not a loop
        ("root = ", "os.path.dirname(os.path.dirname(os.path.dirname(__file__)))"),
        ("query = ", '"INSERT INTO t VALUES (%s, %s, %s, %s)"'),  # inside a string literal
        ("    ", 'print("=" * 40)  # ========================================'),
        ("    ", "# ----------------------------------------------------------------"),
    ]:
        assert postprocess(raw, cur(prefix)).text == raw, raw


def test_a_loop_on_a_later_line_is_cut_there():
    raw = "\n    total = 0\n    return total + total + total + total\n    x = 1"
    assert postprocess(raw, cur("def f(x):")).text == "\n    total = 0\n    return total"


def test_streaming_stops_once_a_line_loops():
    assert not is_finished("n < 0 or n < 0", cur("    return "))
    # A third copy being written may yet differ (`f(x) + f(x) + f(y)`): streaming waits for it.
    assert not is_finished("n < 0 or n < 0 or n < ", cur("    return "))
    assert is_finished("n < 0 or n < 0 or n < 0 or ", cur("    return "))
    c = cur("def f(x):")
    assert not is_finished("\n    return x + x", c)
    assert is_finished("\n    return x.y + x.y + x.y + x.", c)
    assert postprocess("\n    return x.y + x.y + x.y + x.", c, truncated=True).text == "\n    return x.y"


# ---- output cut by the token limit -----------------------------------------------------------------

def test_a_line_cut_by_the_token_limit_is_trimmed_back_to_balanced_brackets_and_quotes():
    # The name of a call cut off goes with it, and so does the operator before it.
    assert postprocess("len(text) - len(", cur("    return "), truncated=True).text == "len(text)"
    assert postprocess("foo(a, b) + bar(c", cur("x = "), truncated=True).text == "foo(a, b)"
    assert postprocess('total + self.items[i].encode(b, "utf', cur("x = "), truncated=True).text == "total + self.items[i]"
    assert postprocess('y = x.encode(b, "utf', cur("    "), truncated=True).text == "y"


def test_a_natural_stop_is_not_trimmed():
    assert postprocess('x.encode(b, "utf', cur("    return ")).text == 'x.encode(b, "utf'


def test_trimming_is_relative_to_the_cursor_line():
    # Closing a bracket or a string opened before the cursor is fine; a string it opens is not.
    assert postprocess("a, b)", cur("x = foo("), truncated=True).text == "a, b)"
    s = postprocess('world" + name + "', cur('s = "hello '), truncated=True)
    assert s.text == 'world" + name'


def test_nothing_sensible_left_after_trimming_is_no_suggestion():
    assert not postprocess('x.encode(b, "utf', cur("    return "), truncated=True)
    assert not postprocess("foo(", cur("x = "), truncated=True)
    assert not postprocess('"unclosed', cur("x = "), truncated=True)
    body = cur("    ", prev_line='    """Return the mean."""')
    assert not postprocess("return sum(abs(i) for i", body, truncated=True)  # not a lone `return`


def test_a_multi_line_suggestion_cut_by_the_token_limit_keeps_its_complete_lines():
    raw = "\n    y = x * 2\n    return compute(y,"
    assert postprocess(raw, cur("def f(x):"), truncated=True).text == "\n    y = x * 2"
    # A complete line that left a bracket or a docstring open is not a place to stop either.
    raw = "\n    z = 1\n    y = foo(\n        x,\n        1"
    assert postprocess(raw, cur("def f(x):"), truncated=True).text == "\n    z = 1"
    raw = '\n    """Return the mean\n    of the numbers'
    assert not postprocess(raw, cur("def f(x):"), truncated=True)


def test_a_single_line_in_a_multi_line_position_is_trimmed_within_the_line():
    c = cur("    ", prev_line='    """Return the mean."""')
    assert postprocess("return sum(numbers) / len(", c, truncated=True).text == "return sum(numbers)"


# ---- a multi-line suggestion running past its definition ---------------------------------------------

def test_a_suggestion_at_column_0_after_a_docstring_stops_at_the_next_definition():
    # The exact case seen end to end: an empty line at column 0 after a docstring.
    c = cur("", next_lines="\n", prev_line='    """Return the number of words in text."""')
    raw = '    return len(text.split())\n\ndef average(numbers):\n    """Return the mean of the numbers."""\n'
    assert postprocess(raw, c).text == "    return len(text.split())"
    assert is_finished(raw, c)


def test_definitions_at_the_suggestion_level_end_it_but_nested_ones_do_not():
    top = cur("", prev_line="import os")
    raw = "def outer():\n    def inner():\n        return 1\n    return inner\n\ndef other():\n    pass"
    assert postprocess(raw, top).text == "def outer():\n    def inner():\n        return 1\n    return inner"
    raw = '@app.route("/")\ndef index():\n    return "hi"\n\n@app.route("/about")\ndef about():\n'
    assert postprocess(raw, top).text == '@app.route("/")\ndef index():\n    return "hi"'
    raw = "def main():\n    run()\n\nif __name__ == \"__main__\":\n    main()"
    assert postprocess(raw, top).text == "def main():\n    run()"
    method = cur("    ", prev_line="        self.items = []")
    raw = "def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return 1"
    assert postprocess(raw, method).text == "def push(self, item):\n        self.items.append(item)"


def test_a_suggestion_never_repeats_a_definition_that_follows_the_cursor():
    below = "\n    x = 2\n    def helper(y):\n        return y\n"
    c = cur("    ", next_lines=below, prev_line="def outer():")
    raw = "if x:\n        def helper(y):\n            return y"
    assert postprocess(raw, c).text == "if x:"
    # The first line already a definition below: nothing new to suggest.
    c = cur("", next_lines="\ndef average(numbers):\n    return 0\n", prev_line="    return 1")
    assert not postprocess("def average(numbers):\n    return sum(numbers)", c)


def test_a_suggestion_never_repeats_two_lines_that_follow_the_cursor():
    below = "\n    total = 0\n    for n in numbers:\n        total += n\n    return total\n"
    c = cur("    ", next_lines=below, prev_line="def f(numbers):")
    raw = "count = len(numbers)\n    for n in numbers:\n        total += n\n    return total / count"
    assert postprocess(raw, c).text == "count = len(numbers)"
    # One common line alone is not a repeat.
    raw = "count = len(numbers)\n    for n in numbers:\n        count -= 1"
    assert postprocess(raw, c).text == raw


# ---- which brackets are open: strings, comments, stray closers, nesting ------------------------------

# Text in which a `(` is no bracket: a string of each kind of quote, and a comment.
NOT_CODE = ["'('", '"("', '"""("""', "# ("]
# The same with a `)`, which closes nothing there.
NOT_CODE_CLOSERS = [text.replace("(", ")") for text in NOT_CODE]
# `foo(|)`: a multi-line suggestion in a call whose `)` already follows the cursor.
IN_CALL = ("    x = foo(", ")")


@pytest.mark.parametrize("text", NOT_CODE + NOT_CODE_CLOSERS)
def test_a_bracket_in_a_string_or_comment_does_not_hide_the_closer_of_one_before_the_cursor(text):
    # The last `)` is foo's, and the suffix closes foo: the suggestion ends before it.
    raw = f"\n        a, {text}\n        b)"
    assert postprocess(raw, cur(*IN_CALL)).text == f"\n        a, {text}\n        b"


@pytest.mark.parametrize("text", NOT_CODE + NOT_CODE_CLOSERS)
def test_a_closing_line_that_closes_a_bracket_from_before_the_cursor_replaces_the_suffix(text):
    raw = f"\n        a, {text}\n    )"
    s = postprocess(raw, cur(*IN_CALL))
    assert s.text == raw and s.replaces_line_suffix


def test_a_closing_line_that_closes_what_the_suggestion_opened_is_kept_as_its_own():
    raw = "\n        a, {\n            'k': [1, (2)],\n    }"
    s = postprocess(raw, cur(*IN_CALL))
    assert s.text == raw and not s.replaces_line_suffix


def test_a_closing_line_never_closes_the_bracket_the_suffix_closes_a_second_time():
    # `})` closes the suggestion's `{` and foo's `(`, which the `)` after the cursor closes too.
    raw = "\n        a, {\n            'k': 1,\n    })"
    s = postprocess(raw, cur(*IN_CALL))
    assert s.text == "\n        a, {\n            'k': 1," and not s.replaces_line_suffix


def test_brackets_in_a_triple_quoted_string_spanning_lines_are_text():
    raw = '\n        """a\n        (b""",\n    )'
    s = postprocess(raw, cur(*IN_CALL))
    assert s.text == raw and s.replaces_line_suffix


@pytest.mark.parametrize("text", NOT_CODE)
def test_a_bracket_in_a_string_or_comment_does_not_count_as_open_for_loops(text):
    # Outside brackets three copies are a loop; inside them (a `(` counted open) it would take six.
    raw = f"\n    s = f(a, {text}\n          b)\n    return total + total + total + total"
    assert postprocess(raw, cur("def f(x):")).text == f"\n    s = f(a, {text}\n          b)\n    return total"


@pytest.mark.parametrize("text", NOT_CODE[:3])
def test_trimming_ignores_brackets_in_strings(text):
    assert postprocess(f"f({text}) + g(", cur("x = "), truncated=True).text == f"f({text})"


def test_trimming_ignores_brackets_in_comments():
    assert postprocess("y = 1  # see f(", cur("    "), truncated=True).text == "y = 1  # see f("


def test_a_stray_closer_closes_nothing():
    # `]` does not close the `(` the suggestion opened: that one is still open after it.
    assert postprocess("x + foo(a] + b", cur("y = "), truncated=True).text == "x"
    # So the `)` closes the suggestion's own `(`, not foo's: nothing of the line is replaced.
    s = postprocess("(a] + b), c", cur("x = foo(", ")"))
    assert s.text == "(a] + b), c" and not s.replaces_line_suffix
    # Nor the `(` before the cursor: inside it four copies are not yet a loop.
    raw = "a] + total + total + total + total"
    assert postprocess(raw, cur("    return f(")).text == raw
    # A `)` does close it: after that, four copies are a loop.
    assert postprocess("a) + total + total + total + total", cur("    return f(")).text == "a) + total"


def test_a_line_cut_where_it_loops_ignores_the_closers_after_the_cut():
    assert postprocess("total + " * 7 + "total)", cur("x = foo(", ")")).text == "total"


def test_nested_brackets_of_mixed_kinds():
    s = postprocess("[a, (b)], {c: d}) + 1", cur("x = foo(", ")"))
    assert s.text == "[a, (b)], {c: d}) + 1" and s.replaces_line_suffix
    assert postprocess("d[{'k': (1, 2)}] + f([", cur("x = "), truncated=True).text == "d[{'k': (1, 2)}]"
