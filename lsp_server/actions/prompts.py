"""Instruct code actions, the text side: which code an action works on, the prompt it sends, and how
the model's answer becomes an edit. Pure functions over strings and code-point offsets; the action
service (action_service.py) runs them against the engine and the editor.

Actions:  explain, ask             -> an answer shown to the user
          fix, simplify            -> the target code replaced by the model's code
          docstring                -> a docstring / doc comment inserted (or replacing the old one)
          tests                    -> test code in a test file beside the source
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..context.languages import LINE_COMMENT

# ---- the actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    kind: str  # LSP CodeActionKind: clients filter on its dotted prefix (`context.only`)
    result: str  # "answer" | "replace" | "docstring" | "tests"


ACTIONS: dict[str, Action] = {a.id: a for a in (
    Action("explain", "Code Llama: Explain this code", "source.codellama.explain", "answer"),
    Action("docstring", "Code Llama: Add docstring", "refactor.rewrite.codellama.docstring", "docstring"),
    Action("fix", "Code Llama: Fix this code", "quickfix.codellama.fix", "replace"),
    Action("tests", "Code Llama: Write tests", "source.codellama.tests", "tests"),
    Action("simplify", "Code Llama: Simplify this code", "refactor.rewrite.codellama.simplify", "replace"),
    Action("ask", "Code Llama: Ask a question…", "source.codellama.ask", "answer"),
)}

SYSTEM_PROMPT = (
    "You are Code Llama, an expert programming assistant working inside the user's code editor. "
    "Be precise and brief. When you write code, write it in a single fenced code block.")


def doc_word(language: str) -> str:
    return "docstring" if language == "python" else "doc comment"


def instruction(action: str, language: str, path: str, question: str = "",
                diagnostics: list[str] | None = None) -> str:
    where = f"the following {language} code from `{path}`"
    if action == "explain":
        return f"Explain what {where} does, step by step. Point out anything surprising or wrong."
    if action == "docstring":
        return (f"Write a {doc_word(language)} for {where}. Reply with the text of the {doc_word(language)} "
                "only: a one-line summary, then the parameters and the return value if there are any. "
                "Do not repeat the code.")
    if action == "fix":
        problems = "".join(f"\n- {d}" for d in diagnostics or [])
        told = f" The editor reports these problems:{problems}\n" if problems else ""
        return (f"Fix the bugs in {where}.{told} Reply with the corrected code only, in one fenced code "
                "block, keeping everything that is not broken.")
    if action == "simplify":
        return (f"Rewrite {where} to be simpler and clearer without changing what it does. Reply with "
                "the rewritten code only, in one fenced code block.")
    if action == "tests":
        module = python_module(path) if language == "python" else ""
        framework = "pytest" if language == "python" else f"the usual test framework for {language}"
        importing = f" Import what you test from the module `{module}`." if module else ""
        return (f"Write unit tests for {where} with {framework}.{importing} Reply with the test code "
                "only, in one fenced code block, including its imports.")
    if action == "ask":
        return f"{question.strip()}\n\nThe question is about {where}."
    raise ValueError(f"unknown action {action!r}")


def user_message(action: str, code: str, language: str, path: str, context: str = "", question: str = "",
                 diagnostics: list[str] | None = None) -> str:
    """The user turn: repository context (already path-headed), the instruction, the code."""
    parts = []
    if context.strip():
        parts.append(f"Related code from the repository:\n```{language}\n{context.rstrip()}\n```\n")
    parts.append(instruction(action, language, path, question, diagnostics))
    parts.append(f"\n```{language}\n{code.rstrip()}\n```")
    return "\n".join(parts)


def python_module(path: str) -> str:
    p = PurePosixPath(path)
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] in ("src", "lib"):
        parts.pop(0)
    return ".".join(parts)


# ---- which code an action works on --------------------------------------------------------------

_DEFINITION = re.compile(
    r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:pub(?:\([a-z]+\))?[ \t]+)?"
    r"(?:(?:public|private|protected|internal|static|final|abstract|override|virtual|inline|const|"
    r"unsafe|extern|local|async)[ \t]+)*"
    r"(?:def|class|function|func|fn|fun|impl|struct|enum|trait|interface|sub|module|object|"
    r"[A-Za-z_][\w<>\[\],: *&]*[ \t]+[A-Za-z_]\w*[ \t]*\()")
# A method without a keyword (JavaScript/TypeScript/Java classes): `name(args) ... {` at the line's end.
_METHOD = re.compile(r"^[ \t]*(?:async[ \t]+|get[ \t]+|set[ \t]+|static[ \t]+)*[A-Za-z_$][\w$]*[ \t]*\([^;]*\)[^;=]*\{[ \t]*$")
_BLOCK_STARTERS = re.compile(r"^[ \t]*(?:if|for|while|switch|return|else|catch|do|try)\b")


def line_bounds(text: str, offset: int) -> tuple[int, int]:
    """Start and end (before the newline) of the line holding `offset`."""
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return start, end


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _width(indent: str) -> int:
    return sum(4 if ch == "\t" else 1 for ch in indent)


def _lines_with_offsets(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line.rstrip("\r")))
        pos += len(line) + 1
    return out


def _block_end(lines: list[tuple[int, str]], first: int) -> int:
    """Index of the last line of the block that starts at line `first`: by brace balance when the
    block opens a brace before it opens an indented body, else by indentation."""
    depth, braces = 0, False
    head = lines[first][1]
    for i in range(first, min(first + 2000, len(lines))):
        line = _strip_strings(lines[i][1])
        if not braces and i == first and line.rstrip().endswith(":"):
            break  # an indentation block (Python and friends)
        for ch in line:
            if ch == "{":
                depth, braces = depth + 1, True
            elif ch == "}":
                depth -= 1
        if braces and depth <= 0:
            return i
        if not braces and i > first + 3:
            break
    base = _width(indent_of(head))
    last = first
    for i in range(first + 1, len(lines)):
        line = lines[i][1]
        if not line.strip():
            continue
        if _width(indent_of(line)) <= base and not line.lstrip().startswith((")", "]", "}")):
            break
        last = i
    return last


def _strip_strings(line: str) -> str:
    return re.sub(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|//.*$|#.*$", "", line)


def enclosing_definition(text: str, offset: int) -> tuple[int, int] | None:
    """Span (start of the definition's first line, end of its last line) of the innermost function or
    class around `offset`, found by definition-looking lines and their blocks; None when there is none."""
    lines = _lines_with_offsets(text)
    here = text.count("\n", 0, offset)
    for i in range(here, max(here - 400, -1), -1):
        line = lines[i][1]
        if not (_DEFINITION.match(line) or _METHOD.match(line)) or _BLOCK_STARTERS.match(line):
            continue
        last = _block_end(lines, i)
        if last >= here:
            return lines[i][0], lines[last][0] + len(lines[last][1])
    return None


def target_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The code an action works on: a non-empty selection as it is (minus surrounding blank lines'
    newlines), else the enclosing definition, else the cursor's line; None on a blank line outside
    any definition."""
    if end < start:
        start, end = end, start
    if text[start:end].strip():
        return start, end
    found = enclosing_definition(text, start)
    if found is not None:
        return found
    line_start, line_end = line_bounds(text, start)
    return (line_start, line_end) if text[line_start:line_end].strip() else None


# ---- from the model's answer to code -----------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\n`]*)\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_TAGGED = re.compile(r"\[([A-Z][A-Z+#]*)\]\n?(.*?)\n?\[/\1\]", re.S)  # Code Llama's [PYTHON]...[/PYTHON]
_LANGUAGE_TAGS = {"python": ("py", "python", "python3"), "javascript": ("js", "javascript", "node"),
                  "typescript": ("ts", "typescript"), "shellscript": ("sh", "bash", "shell", "zsh"),
                  "cpp": ("cpp", "c++", "cc"), "csharp": ("cs", "csharp", "c#"), "rust": ("rs", "rust")}


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_answer(answer: str) -> str:
    """The model's text with one kind of line ending and without control characters (a weak model
    writes some; no editor wants them in code)."""
    return _CONTROL.sub("", answer.replace("\r\n", "\n").replace("\r", "\n"))


def code_blocks(answer: str) -> list[tuple[str, str]]:
    """(info string, code) of each fenced block (``` or ~~~, closed or cut off at the end) and of
    each [LANG]...[/LANG] block, in order."""
    answer = clean_answer(answer)
    blocks = [(m.start(), m.group(2).strip().lower(), textwrap.dedent(m.group(3))) for m in _FENCE.finditer(answer)]
    blocks += [(m.start(), m.group(1).lower(), m.group(2)) for m in _TAGGED.finditer(answer)]
    return [(info, code) for _, info, code in sorted(blocks)]


def extract_code(answer: str, language: str = "") -> str:
    """The code in a model's answer: the first fenced block tagged with the file's language, else the
    first block, else the whole answer (a model that answers with bare code)."""
    blocks = code_blocks(answer)
    tags = _LANGUAGE_TAGS.get(language, (language,))
    for info, code in blocks:
        if info.split()[:1] and info.split()[0] in tags:
            return _trim_blank_lines(code)
    if blocks:
        return _trim_blank_lines(blocks[0][1])
    return _trim_blank_lines(textwrap.dedent(clean_answer(answer)))


def _trim_blank_lines(code: str) -> str:
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(line.rstrip() for line in lines)


def document_eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def uses_tabs(text: str, near: int) -> bool:
    """Whether the document indents with tabs: the indentation of the lines around `near`, else of
    the first indented line."""
    lo = text.rfind("\n", 0, max(0, near - 4000)) + 1
    for line in text[lo : near + 4000].split("\n"):
        if line[:1] in (" ", "\t") and line.strip():
            return line[0] == "\t"
    return False


def _indent_unit(lines: list[str]) -> int:
    widths = [len(indent_of(line)) for line in lines if line.strip() and indent_of(line).strip(" ") == ""]
    widths = [w for w in widths if w > 0]
    return min(widths) if widths else 4


def _convert_indentation(lines: list[str], to_tabs: bool) -> list[str]:
    """Leading spaces to tabs (unit: the smallest indentation in the code) or tabs to 4 spaces."""
    out = []
    unit = _indent_unit(lines) if to_tabs else 4
    for line in lines:
        lead = indent_of(line)
        if to_tabs and "\t" not in lead:
            lead = "\t" * (len(lead) // unit) + " " * (len(lead) % unit)
        elif not to_tabs:
            lead = lead.replace("\t", " " * unit)
        out.append(lead + line.lstrip(" \t"))
    return out


def fit_code(code: str, text: str, start: int, ends_with_newline: bool = False) -> str:
    """`code` (the model's, any indentation) made to replace text starting at offset `start`: dedented,
    then every line indented like the line at `start`, except that the first line gets only what the
    text before `start` on its line does not already provide; the document's tabs-or-spaces and line
    endings; a final newline when the replaced text had one."""
    code = textwrap.dedent(code.replace("\r\n", "\n").replace("\r", "\n"))
    lines = _trim_blank_lines(code).split("\n")
    if not any(line.strip() for line in lines):
        return ""
    line_start, _ = line_bounds(text, start)
    before = text[line_start:start]
    indent = indent_of(text[line_start : line_bounds(text, start)[1]])
    tabs = "\t" in indent or (not indent and uses_tabs(text, start))
    lines = _convert_indentation(lines, tabs)
    first_prefix = indent[len(before):] if indent.startswith(before) else ""
    out = [(first_prefix if i == 0 else indent) + line if line.strip() else ""
           for i, line in enumerate(lines)]
    eol = document_eol(text)
    return eol.join(out) + (eol if ends_with_newline else "")


# ---- docstrings ---------------------------------------------------------------------------------

_TRIPLE = re.compile(r"[rRuU]?(\"\"\"|''')(.*?)(?:\1|\Z)", re.S)
_BLOCK_DOC = re.compile(r"/\*\*?(.*?)(?:\*/|\Z)", re.S)
_COMMENT_MARK = re.compile(r"^[ \t]*(?:///?|#+|--+\|?|\*(?!\*))[ \t]?")


def docstring_text(answer: str, language: str, max_lines: int = 30) -> str:
    """The text of the docstring a model wrote, without quotes or comment markers: a triple-quoted
    string, else a /** */ comment, else comment lines, else the prose outside code blocks, else the
    first code block."""
    answer = clean_answer(answer)
    found = _TRIPLE.search(answer)
    if found is None:
        found = _BLOCK_DOC.search(answer)
    if found is not None:
        body = found.group(found.lastindex or 1)
        lines = [_COMMENT_MARK.sub("", line) if line.lstrip().startswith("*") else line for line in body.split("\n")]
    else:
        outside = _FENCE.sub("", _TAGGED.sub("", answer))
        candidates = outside if outside.strip() else "\n".join(code for _, code in code_blocks(answer)[:1])
        raw = candidates.split("\n")
        marked = [line for line in raw if _COMMENT_MARK.match(line) and line.strip()]
        lines = [_COMMENT_MARK.sub("", line) for line in marked] if marked and len(marked) * 2 >= len(
            [line for line in raw if line.strip()]) else raw
    # cleandoc: the first line sits right after the quotes, the others keep their docstring indent
    body = _trim_blank_lines(inspect.cleandoc("\n".join(line.rstrip() for line in lines)))
    return "\n".join(body.split("\n")[:max_lines]) if body else ""


def _python_signature_end(lines: list[tuple[int, str]], first: int) -> int | None:
    """Line index where the `def`/`class` header that starts at `first` ends with its colon; None when
    the body is on the same line (no room for a docstring)."""
    depth = 0
    for i in range(first, min(first + 50, len(lines))):
        line = _strip_strings(lines[i][1])
        for j, ch in enumerate(line):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == ":" and depth == 0:
                return i if not line[j + 1 :].strip() else None
    return None


@dataclass
class Insertion:
    start: int  # offsets in the document; start == end for a pure insertion
    end: int
    text: str


def docstring_edit(text: str, span: tuple[int, int], language: str, doc: str) -> Insertion | None:
    """Where and what to write so that the definition in `span` gets `doc` as its docstring (Python)
    or doc comment (other languages). An existing docstring / doc comment is replaced."""
    if not doc.strip():
        return None
    eol = document_eol(text)
    lines = _lines_with_offsets(text)
    first = text.count("\n", 0, span[0])
    last = text.count("\n", 0, span[1])
    if language == "python":
        for i in range(first, last + 1):
            if re.match(r"^[ \t]*(?:async[ \t]+)?(?:def|class)\b", lines[i][1]):
                edit = _python_docstring(text, lines, i, doc, eol)
                if edit is not None:
                    return edit
                break
    return _doc_comment(text, lines, first, language, doc, eol)


def _python_docstring(text: str, lines: list[tuple[int, str]], header: int, doc: str, eol: str) -> Insertion | None:
    sig_end = _python_signature_end(lines, header)
    if sig_end is None:
        return None
    header_indent = indent_of(lines[header][1])
    body = next((i for i in range(sig_end + 1, len(lines)) if lines[i][1].strip()), None)
    if body is not None and _width(indent_of(lines[body][1])) > _width(header_indent):
        indent = indent_of(lines[body][1])
    else:
        body = None
        indent = header_indent + ("\t" if "\t" in header_indent or uses_tabs(text, lines[header][0]) else "    ")
    # Never let the text close the string early: escape its triple quotes, keep its backslashes (a
    # raw docstring, as PEP 257 says) and keep a final backslash or quote off the closing quotes.
    doc = doc.replace('"""', '\\"\\"\\"')
    quote = 'r"""' if "\\" in doc.replace('\\"', "") else '"""'
    doc_lines = doc.split("\n")
    if doc_lines[-1].endswith(("\\", '"')):
        doc_lines[-1] += " "
    if len(doc_lines) == 1:
        new = f'{indent}{quote}{doc_lines[0]}"""'
    else:
        new = eol.join([f'{indent}{quote}{doc_lines[0]}'] + [indent + line if line.strip() else ""
                                                             for line in doc_lines[1:]] + [f'{indent}"""'])
    if body is not None and re.match(r"^[ \t]*[rRuU]?(\"\"\"|''')", lines[body][1]):
        quote = re.match(r"^[ \t]*[rRuU]?(\"\"\"|''')", lines[body][1]).group(1)  # type: ignore[union-attr]
        start = lines[body][0]
        close = text.find(quote, start + len(indent_of(lines[body][1])) + len(quote) + 1)
        if close >= 0:
            end = line_bounds(text, close)[1]
            return Insertion(start, end, new)
    after_header = lines[sig_end][0] + len(lines[sig_end][1])
    if sig_end + 1 < len(lines):
        at = lines[sig_end + 1][0]
        return Insertion(at, at, new + eol)
    return Insertion(after_header, after_header, eol + new)


_LINE_DOC = {"rust": "///", "go": "//", "lua": "---", "csharp": "///", "haskell": "-- |"}
_BLOCK_DOC_LANGUAGES = {"c", "cpp", "java", "javascript", "javascriptreact", "typescript", "typescriptreact",
                        "php", "kotlin", "swift", "scala", "dart", "objective-c", "objective-cpp", "groovy",
                        "cuda-cpp"}


def _doc_comment(text: str, lines: list[tuple[int, str]], first: int, language: str, doc: str,
                 eol: str) -> Insertion:
    """A doc comment right above line `first` (over an existing one, if any)."""
    indent = indent_of(lines[first][1])
    doc_lines = doc.split("\n")
    start = lines[first][0]
    if language in _BLOCK_DOC_LANGUAGES:
        body = [f"{indent} * {line}".rstrip() for line in (d.replace("*/", "* /") for d in doc_lines)]
        new = eol.join([f"{indent}/**", *body, f"{indent} */"])
        above = first - 1
        if above >= 0 and lines[above][1].rstrip().endswith("*/"):
            top = next((i for i in range(above, max(above - 200, -1), -1) if "/**" in lines[i][1]), None)
            if top is not None:
                start = lines[top][0]
    else:
        mark = _LINE_DOC.get(language) or LINE_COMMENT.get(language, "#")
        new = eol.join(f"{indent}{mark} {line}".rstrip() for line in doc_lines)
        i = first - 1
        while i >= 0 and lines[i][1].lstrip().startswith(mark) and mark in ("///", "---", "-- |"):
            start = lines[i][0]
            i -= 1
    return Insertion(start, lines[first][0], new + eol)


# ---- tests --------------------------------------------------------------------------------------

def tests_path_for(path: str, language: str, has_tests_dir: bool) -> str:
    """Where tests for the workspace-relative `path` go, by the language's convention."""
    p = PurePosixPath(path)
    if language == "python":
        name = f"test_{p.stem}.py"
        return f"tests/{name}" if has_tests_dir else str(p.with_name(name))
    if language in ("javascript", "typescript", "javascriptreact", "typescriptreact"):
        return str(p.with_name(f"{p.stem}.test{p.suffix}"))
    return str(p.with_name(f"{p.stem}_test{p.suffix}"))


# ---- is the edited code still code? -------------------------------------------------------------

_CONTINUES_BLOCK = re.compile(r"(?:else|elif|except|finally|case)\b|[)\]}]")


def python_syntax_error(source: str) -> tuple[int, str] | None:
    """(1-based line, message) of the first syntax error in `source`; None when it parses. Parsing
    only (the compiler's later checks, such as `return` outside a function, do not apply), with the
    server's Python."""
    try:
        compile(source, "<edit>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return exc.lineno or 1, exc.msg or "invalid syntax"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return 1, str(exc) or type(exc).__name__
    return None


def _top_level_block(text: str, start: int, end: int) -> tuple[int, int]:
    """Offsets of the top-level statements holding text[start:end]: from the last line at or before
    `start` that starts a statement at column 0 to just before the next one after `end`."""
    def starts_statement(at: int) -> bool:
        line = text[at : at + 16]
        return bool(line[:1].strip()) and not line.startswith("#") and not _CONTINUES_BLOCK.match(line)

    lo = text.rfind("\n", 0, start) + 1
    while lo > 0 and not starts_statement(lo):
        lo = text.rfind("\n", 0, lo - 1) + 1
    hi = text.find("\n", end - 1 if end > start else start)
    while hi >= 0:
        if starts_statement(hi + 1):
            return lo, hi + 1
        hi = text.find("\n", hi + 1)
    return lo, len(text)


def python_edit_problem(text: str, start: int, end: int, new: str) -> str | None:
    """Why replacing text[start:end] with `new` would break the Python code in `text`; None when it
    would not. A file that parsed must still parse. In a file that did not (an edit in progress
    elsewhere, a notebook's magics), the top-level statements around the edit must parse after it,
    unless they did not before either and the error is outside the edited lines."""
    edited = text[:start] + new + text[end:]
    error = python_syntax_error(edited)
    if error is None:
        return None
    if python_syntax_error(text) is None:
        return f"line {error[0]}: {error[1]}"
    lo, hi = _top_level_block(text, start, end)
    new_hi = hi + len(new) - (end - start)
    error = python_syntax_error(edited[lo:new_hi])
    if error is None:
        return None
    line = edited.count("\n", 0, lo) + error[0]
    first = edited.count("\n", 0, start) + 1
    last = first + new.count("\n")
    if python_syntax_error(text[lo:hi]) is None or first <= line <= last:
        return f"line {line}: {error[1]}"
    return None


def fenced(code: str, language: str) -> str:
    """`code` in a markdown code block whose fence no line of it can close."""
    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"


# ---- answers that run away ----------------------------------------------------------------------

ANSWER_SOFT_CHARS = 2000  # an answer ends at its first paragraph break after this many characters
ANSWER_HARD_CHARS = 4000  # ... or at its first line break after this many
_REPEAT_MIN_CHARS = 100  # a repetition: a unit of up to 400 characters repeated over 100+ characters
_REPEAT_MAX_UNIT = 400
_FENCE_LINE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})", re.M)


def _in_code_block(text: str, at: int) -> bool:
    return len(_FENCE_LINE.findall(text, 0, at)) % 2 == 1


def _repeating_tail(text: str) -> int | None:
    """Where to cut `text` when it ends in a repetition (one copy kept): the same unit of 1 to 400
    characters, three or more times over at least 100 characters."""
    n = len(text)
    for unit in range(1, min(_REPEAT_MAX_UNIT, n // 3) + 1):
        run = max(3 * unit, _REPEAT_MIN_CHARS)
        if run > n:
            break
        tail = text[n - run :]
        if tail[:-unit] == tail[unit:]:
            begin = n - run
            while begin > 0 and text[begin - 1] == text[begin - 1 + unit]:
                begin -= 1
            return begin + unit
    return None


def _repeated_line(text: str) -> int | None:
    """Where to cut `text` when one line of prose (16+ characters, outside code blocks) came back a
    third time within its last 20 lines: before the line's second occurrence."""
    lines = _lines_with_offsets(text)[:-1]  # the last line may be unfinished
    seen: dict[str, list[int]] = {}
    fenced = False
    for offset, line in lines:
        if _FENCE_LINE.match(line):
            fenced = not fenced
            continue
        key = line.strip()
        if fenced or len(key) < 16:
            continue
        seen.setdefault(key, []).append(offset)
    window = lines[-20:][0][0] if lines else 0
    for offsets in seen.values():
        recent = [o for o in offsets if o >= window]
        if len(recent) >= 3:
            return offsets[1]
    return None


def answer_cut(text: str) -> tuple[int, str] | None:
    """Where a free-running answer (explain, ask) should end, and why: "repetition" when the model
    repeats itself, "length" at the first paragraph break (outside a code block) after
    ANSWER_SOFT_CHARS characters, else the first line break after ANSWER_HARD_CHARS (a space, in one
    endless line). None: go on."""
    cut = _repeating_tail(text)
    if cut is None:
        cut = _repeated_line(text)
    if cut is not None:
        return cut, "repetition"
    if len(text) > ANSWER_SOFT_CHARS:
        at = text.find("\n\n", ANSWER_SOFT_CHARS)
        while at >= 0 and _in_code_block(text, at):
            at = text.find("\n\n", at + 2)
        if at >= 0:
            return at, "length"
    if len(text) > ANSWER_HARD_CHARS:
        at = text.find("\n", ANSWER_HARD_CHARS)
        if at < 0 and len(text) > ANSWER_HARD_CHARS + 500:  # one endless line: end at a space
            at = max(text.find(" ", ANSWER_HARD_CHARS), ANSWER_HARD_CHARS)
        if at >= 0:
            return at, "length"
    return None


def finish_answer(text: str) -> str:
    """A cut answer made whole: trailing blanks off, an open code block closed."""
    text = text.rstrip()
    return text + "\n```" if _in_code_block(text, len(text)) else text
