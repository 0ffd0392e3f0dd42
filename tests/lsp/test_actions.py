"""The text side of the instruct code actions: which code an action works on, code out of the model's
answer, re-indentation to the selection, docstring placement. Tricky inputs: tabs, CRLF, selections
that start mid-line, non-ASCII."""

from __future__ import annotations

from lsp_server.actions import prompts as A


def apply(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


# ---- target spans -------------------------------------------------------------------------------

PY = (
    "import os\n"
    "\n"
    "def outer(a):\n"
    "    def inner(b):\n"
    "        return b * 2\n"
    "\n"
    "    return inner(a) + 1\n"
    "\n"
    "\n"
    "x = outer(3)\n"
)


def test_empty_selection_takes_the_innermost_enclosing_function():
    cursor = PY.index("b * 2")
    start, end = A.target_span(PY, cursor, cursor)
    assert PY[start:end] == "    def inner(b):\n        return b * 2"


def test_empty_selection_in_the_outer_body_takes_the_outer_function_with_blank_lines_inside():
    cursor = PY.index("return inner")
    start, end = A.target_span(PY, cursor, cursor)
    assert PY[start:end].startswith("def outer(a):") and PY[start:end].endswith("return inner(a) + 1")


def test_empty_selection_outside_any_function_takes_the_line_and_nothing_on_a_blank_line():
    cursor = PY.index("x = outer")
    assert A.target_span(PY, cursor + 2, cursor + 2) == (cursor, cursor + len("x = outer(3)"))
    blank = PY.index("\n\nx =") + 1
    assert A.target_span(PY, blank, blank) is None


def test_brace_languages_use_brace_balance_and_ignore_braces_in_strings():
    js = "const a = 1;\nfunction f(x) {\n  if (x) {\n    return \"}\";\n  }\n  return 2;\n}\nf(1);\n"
    cursor = js.index("return 2")
    start, end = A.target_span(js, cursor, cursor)
    assert js[start:end] == "function f(x) {\n  if (x) {\n    return \"}\";\n  }\n  return 2;\n}"


def test_a_selection_is_taken_exactly_even_mid_line_and_reversed():
    text = "total = price * (1 + tax)  # café\n"
    start, end = text.index("price"), text.index("  #")
    assert A.target_span(text, end, start) == (start, end)


def test_crlf_definition_span_excludes_the_carriage_return():
    text = "def f(x):\r\n    return x\r\n\r\ny = 1\r\n"
    start, end = A.target_span(text, text.index("return"), text.index("return"))
    assert text[start:end] == "def f(x):\r\n    return x"


# ---- code out of the answer ---------------------------------------------------------------------

def test_extract_prefers_the_block_tagged_with_the_files_language():
    answer = "Here:\n```bash\npip install x\n```\nand\n```python\ndef f():\n    return 1\n```\nDone."
    assert A.extract_code(answer, "python") == "def f():\n    return 1"


def test_extract_takes_an_unterminated_fence_and_indented_fences():
    assert A.extract_code("Sure!\n```\nx = 1\ny = 2\n", "python") == "x = 1\ny = 2"
    assert A.extract_code("1. Fixed:\n   ```js\n   let a = 1;\n     b();\n   ```\n", "javascript") == \
        "let a = 1;\n  b();"


def test_extract_understands_code_llama_tags_crlf_tilde_fences_and_bare_code():
    assert A.extract_code("[PYTHON]\ndef g():\n    pass\n[/PYTHON]", "python") == "def g():\n    pass"
    assert A.extract_code("~~~\r\nprint('é')\r\n~~~\r\n") == "print('é')"
    assert A.extract_code("\n\n    return x + 1\n\n") == "return x + 1"


# ---- re-indentation -----------------------------------------------------------------------------

def test_fit_code_indents_to_a_full_line_selection():
    text = "class A:\n    def f(self):\n        return 1\n"
    start = text.index("    def f")
    new = A.fit_code("def f(self):\n    return 2\n", text, start)
    assert apply(text, start, len(text) - 1, new) == "class A:\n    def f(self):\n        return 2\n"


def test_fit_code_mid_line_selection_leaves_the_first_line_where_it_is():
    text = "    value = compute(a,\n                    b)\n"
    start = text.index("compute")
    new = A.fit_code("compute_fast(\n    a, b)", text, start)
    assert new == "compute_fast(\n        a, b)"


def test_fit_code_selection_starting_inside_the_indentation_gets_the_rest_of_it():
    text = "        x = 1\n"
    new = A.fit_code("x = 2", text, 4)
    assert apply(text, 4, len("        x = 1"), new) == "        x = 2\n"


def test_fit_code_keeps_tabs_crlf_and_non_ascii():
    text = "func main() {\r\n\tfmt.Println(\"héllo\")\r\n}\r\n"
    start = text.index("\tfmt") + 1
    end = text.index("\r\n}")
    new = A.fit_code("if ok {\n    fmt.Println(\"héllo wörld\")\n}", text, start)
    assert apply(text, start, end, new) == (
        "func main() {\r\n\tif ok {\r\n\t\tfmt.Println(\"héllo wörld\")\r\n\t}\r\n}\r\n")


def test_fit_code_turns_model_tabs_into_the_documents_spaces():
    text = "def f():\n    pass\n"
    start = text.index("    pass")
    assert A.fit_code("if x:\n\treturn 1", text, start) == "    if x:\n        return 1"


def test_fit_code_of_an_empty_answer_is_empty():
    assert A.fit_code("\n  \n", "x = 1\n", 0) == ""


# ---- docstrings ---------------------------------------------------------------------------------

def test_docstring_text_from_quotes_comments_or_prose():
    assert A.docstring_text('```python\ndef f(x):\n    """Double x.\n\n    Returns 2x."""\n```', "python") == \
        "Double x.\n\nReturns 2x."
    assert A.docstring_text("/**\n * Adds two numbers.\n * @param a first\n */", "javascript") == \
        "Adds two numbers.\n@param a first"
    assert A.docstring_text("/// Parses the input.\n/// Fails on empty strings.", "rust") == \
        "Parses the input.\nFails on empty strings."
    assert A.docstring_text("Computes the area of a rectangle.\n", "python") == "Computes the area of a rectangle."


def test_python_docstring_goes_after_a_multiline_signature_at_body_indentation():
    text = "def area(\n    width: int,\n    height: int,\n) -> int:\n    return width * height\n"
    span = A.target_span(text, text.index("return"), text.index("return"))
    ins = A.docstring_edit(text, span, "python", "Area of a rectangle.\n\nBoth sides in metres.")
    out = apply(text, ins.start, ins.end, ins.text)
    assert out == ('def area(\n    width: int,\n    height: int,\n) -> int:\n    """Area of a rectangle.\n\n'
                   '    Both sides in metres.\n    """\n    return width * height\n')
    compile(out, "area.py", "exec")


def test_python_docstring_replaces_an_existing_one_with_tabs_and_crlf():
    text = 'class K:\r\n\tdef f(self):\r\n\t\t"""Old\r\n\t\tdocs."""\r\n\t\treturn "ü"\r\n'
    cursor = text.index("return")
    ins = A.docstring_edit(text, A.target_span(text, cursor, cursor), "python", 'New """docs""".')
    out = apply(text, ins.start, ins.end, ins.text)
    assert out == 'class K:\r\n\tdef f(self):\r\n\t\t"""New \\"\\"\\"docs\\"\\"\\"."""\r\n\t\treturn "ü"\r\n'
    compile(out.replace("\r\n", "\n"), "k.py", "exec")


def test_any_model_text_makes_a_docstring_that_compiles():
    text = "def f(x):\n    return x\n"
    junk = ['Returns "x"', "ends with \\", 'a\\"""b', "\\n and \\t", "'''", '"""', "x\n\ny\\", '"', "\\"]
    for doc in junk:
        ins = A.docstring_edit(text, (0, len(text) - 1), "python", doc)
        out = apply(text, ins.start, ins.end, ins.text)
        compile(out, "f.py", "exec")
        assert out.endswith("    return x\n")


def test_python_docstring_for_a_function_at_the_end_of_a_file_without_newline():
    text = "def f():\n    pass"
    ins = A.docstring_edit(text, (0, len(text)), "python", "Nothing.")
    assert apply(text, ins.start, ins.end, ins.text) == 'def f():\n    """Nothing."""\n    pass'


def test_doc_comments_above_the_definition_in_other_languages():
    ts = "class A {\n  run(x: number): number {\n    return x;\n  }\n}\n"
    cursor = ts.index("return")
    ins = A.docstring_edit(ts, A.target_span(ts, cursor, cursor), "typescript", "Runs it. Ends */ here.")
    assert apply(ts, ins.start, ins.end, ins.text) == (
        "class A {\n  /**\n   * Runs it. Ends * / here.\n   */\n  run(x: number): number {\n    return x;\n  }\n}\n")
    rs = "/// old\nfn go() {}\n"
    ins = A.docstring_edit(rs, (rs.index("fn"), len(rs) - 1), "rust", "Goes.")
    assert apply(rs, ins.start, ins.end, ins.text) == "/// Goes.\nfn go() {}\n"


def test_empty_docstring_gives_no_edit():
    assert A.docstring_edit("def f():\n    pass\n", (0, 17), "python", "  ") is None


# ---- prompts and test files ---------------------------------------------------------------------

def test_prompt_holds_instruction_context_diagnostics_and_the_code_once():
    msg = A.user_message("fix", "x = 1/0", "python", "pkg/mod.py", context="# Path: pkg/util.py\n# def h(): ...\n",
                         diagnostics=["ZeroDivisionError: division by zero"])
    assert "pkg/util.py" in msg and "ZeroDivisionError" in msg and "pkg/mod.py" in msg
    assert msg.count("x = 1/0") == 1 and msg.rstrip().endswith("```")
    assert "Import what you test from the module `pkg.mod`" in A.instruction("tests", "python", "src/pkg/mod.py")


def test_tests_go_where_the_language_expects_them():
    assert A.tests_path_for("pkg/mod.py", "python", has_tests_dir=True) == "tests/test_mod.py"
    assert A.tests_path_for("pkg/mod.py", "python", has_tests_dir=False) == "pkg/test_mod.py"
    assert A.tests_path_for("src/a.ts", "typescript", False) == "src/a.test.ts"
    assert A.tests_path_for("cmd/main.go", "go", False) == "cmd/main_test.go"


def test_control_characters_from_a_weak_model_never_reach_the_code():
    assert A.extract_code("x\x00 = \x1c1\x0c\n\x7f") == "x = 1"
    text = "def f():\n    pass\n"
    ins = A.docstring_edit(text, (0, len(text) - 1), "python", A.docstring_text("Do\x1cne\x00.", "python"))
    assert ins.text == '    """Done."""\n'


# ---- edits that would break Python --------------------------------------------------------------

MOD = "import math\n\n\ndef half(x):\n    return x / 0\n\n\nclass K:\n    pass\n"


def test_an_edit_that_breaks_a_parsing_file_is_named_by_line():
    at = MOD.index("x / 0")
    assert A.python_edit_problem(MOD, at, at + 5, "x / 2") is None
    assert A.python_edit_problem(MOD, at, at + 5, "<https://github.com/x") == "line 5: invalid syntax"
    assert "line 5" in A.python_edit_problem(MOD, at, at + 5, "x / (2")
    # A docstring inserted under the signature, and one that would close its own quotes early.
    body = MOD.index("    return")
    assert A.python_edit_problem(MOD, body, body, '    """Half of x."""\n') is None
    assert A.python_edit_problem(MOD, body, body, '    """Half of x.""" ""\n  oops\n') is not None


def test_a_file_broken_elsewhere_judges_the_statement_around_the_edit():
    text = "%matplotlib inline\n" + MOD  # a notebook cell's magic: the file never parses
    at = text.index("x / 0")
    assert A.python_edit_problem(text, at, at + 5, "x / 2") is None
    assert A.python_edit_problem(text, at, at + 5, "x /") == "line 6: invalid syntax"
    # A fix of the broken statement itself must parse; one that leaves it broken is refused.
    broken = "def f(x):\n    return x +\n\n\ny = 1\n"
    at = broken.index("x +")
    assert A.python_edit_problem(broken, at, at + 3, "x + 1") is None
    assert A.python_edit_problem(broken, at, at + 3, "x ++") == "line 2: invalid syntax"
    # The statement still broken by an error outside the edit: the edit is not to blame.
    two = "def g(:\n    a = 1\n    return a\n"
    at = two.index("a = 1")
    assert A.python_edit_problem(two, at, at + 5, "a = 2") is None


def test_an_else_branch_is_judged_with_its_if():
    text = "if x:\n    a = 1\nelse:\n    b = 2\n%magic\n"
    at = text.index("b = 2")
    assert A._top_level_block(text, at, at + 5) == (0, text.index("%magic"))
    assert A.python_edit_problem(text, at, at + 5, "b = (") is not None
    assert A.python_edit_problem(text, at, at + 5, "b = 3") is None


# ---- answers that run away ----------------------------------------------------------------------

EXPLANATION = """This function computes the area of a circle.

1. `scaled = radius * radius` squares the radius.
2. `math.pi * scaled` multiplies it by pi.

| input | output |
| ----- | ------ |
| 1     | 3.14   |
| 2     | 12.57  |

```python
assert circle_area(0) == 0
assert circle_area(0) == 0.0
assert circle_area(0) == 0
assert circle_area(0) == 0
```

Note that a negative radius gives a positive area.
"""


def test_an_ordinary_answer_is_never_cut():
    for end in range(1, len(EXPLANATION) + 1):
        assert A.answer_cut(EXPLANATION[:end]) is None, EXPLANATION[:end]


def test_repetitions_are_cut_after_their_first_copy():
    assert A.answer_cut("Intro.\n" + "It halves x. " * 20) == (len("Intro.\nIt halves x. "), "repetition")
    assert A.answer_cut("ok " + "=" * 120) == (4, "repetition")
    lines = "Intro.\n" + "".join(f"The value of x is returned here.\nstep {i}\n" for i in range(3)) + "more"
    assert A.answer_cut(lines) == (lines.index("The value", 10), "repetition")


def test_a_long_answer_ends_at_a_paragraph_break_outside_code_or_after_the_hard_limit():
    para = " ".join(f"word{i}" for i in range(60))  # ~470 characters, no repetition
    text = "\n\n".join(f"{i}: {para}" for i in range(8))
    cut, why = A.answer_cut(text)
    assert why == "length" and cut > A.ANSWER_SOFT_CHARS and text[cut : cut + 2] == "\n\n"
    line = " ".join(f"w{i}" for i in range(1500))  # one endless line
    cut, why = A.answer_cut(line)
    assert why == "length" and A.ANSWER_HARD_CHARS <= cut < A.ANSWER_HARD_CHARS + 10 and line[cut] == " "
    assert A.finish_answer("see:\n```python\nx = 1\n") == "see:\n```python\nx = 1\n```"
    assert A.fenced("a = '```'", "python") == "````python\na = '```'\n````"
