"""Which workspace files does a file import? Python and JavaScript/TypeScript, resolved against the
set of files the workspace index knows (paths relative to the workspace root, "/"-separated)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection

_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w., \t]+)", re.M)
# The names are optional: `from geometry import |` is the line being typed, and the module it names is
# the context that completes it.
_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import\b[ \t]*\(?([\w, \t*]*)", re.M)
_JS_SPEC = re.compile(
    r"""(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*|^\s*import\s+)["']([^"'\n]+)["']""", re.M)
JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts", ".d.ts", ".vue", ".svelte")
PY_LANGS = {"python"}
JS_LANGS = {"javascript", "javascriptreact", "typescript", "typescriptreact", "vue", "svelte"}


def _by_suffix(files: Collection[str], wanted: list[str]) -> str | None:
    """The shortest known path equal to or ending in one of `wanted` (e.g. "src/pkg/mod.py" for
    "pkg/mod.py", for projects with a src/ layout)."""
    for want in wanted:
        if want in files:
            return want
    hits = [f for f in files for want in wanted if f.endswith("/" + want)]
    return min(hits, key=lambda f: (len(f), f)) if hits else None


def python_module_file(module: str, files: Collection[str]) -> str | None:
    """The workspace file of a dotted module name (a module or a package's __init__)."""
    base = module.replace(".", "/")
    return _by_suffix(files, [base + ".py", base + "/__init__.py", base + ".pyi"])


def relative_stem(from_path: str, level: int, module: str) -> str:
    """The path, without extension, of a relative import (`level` dots, then `module`) in `from_path`:
    one dot is this package, each further dot one level up."""
    base = posixpath.dirname(from_path)
    for _ in range(level - 1):
        base = posixpath.dirname(base)
    stem = posixpath.join(base, module.replace(".", "/")) if module else base
    return stem.lstrip("/")


def python_imports(path: str, text: str, files: Collection[str]) -> list[str]:
    out: list[str] = []
    for m in _PY_IMPORT.finditer(text):
        for part in m.group(1).split(","):
            name = part.strip().split(" ")[0]
            if name and (hit := python_module_file(name, files)):
                out.append(hit)
    for m in _PY_FROM.finditer(text):
        dots, module, names = m.group(1), m.group(2), m.group(3)
        if dots:
            stem = relative_stem(path, len(dots), module)
            candidates = [f"{stem}/{n.strip()}.py" for n in names.split(",") if n.strip().isidentifier()]
            candidates += [stem + ".py", stem + "/__init__.py"]
            hit = next((c for c in candidates if c in files), None)
            if hit:
                out.append(hit)
            continue
        # `from pkg import mod` may name a module or a name inside pkg.
        subs = [f"{module}.{n.strip()}" for n in names.split(",") if n.strip().isidentifier()]
        for name in subs + [module]:
            if hit := python_module_file(name, files):
                out.append(hit)
                break
    return out


def js_imports(path: str, text: str, files: Collection[str]) -> list[str]:
    out: list[str] = []
    here = posixpath.dirname(path)
    for m in _JS_SPEC.finditer(text):
        spec = m.group(1)
        if not spec.startswith("."):
            continue  # a package: node_modules is never indexed
        stem = posixpath.normpath(posixpath.join(here, spec))
        candidates = [stem] + [stem + ext for ext in JS_EXTENSIONS]
        candidates += [f"{stem}/index{ext}" for ext in JS_EXTENSIONS]
        # TypeScript sources import "./x.js" that is compiled from "./x.ts".
        root, ext = posixpath.splitext(stem)
        if ext in (".js", ".jsx", ".mjs", ".cjs"):
            candidates += [root + e for e in (".ts", ".tsx", ".mts", ".cts")]
        hit = next((c for c in candidates if c in files), None)
        if hit:
            out.append(hit)
    return out


def resolve_imports(path: str, text: str, language: str, files: Collection[str]) -> list[str]:
    """Workspace files imported by `text` (the file at `path`), in order, without duplicates."""
    if language in PY_LANGS or path.endswith((".py", ".pyi")):
        found = python_imports(path, text, files)
    elif language in JS_LANGS or path.endswith(JS_EXTENSIONS):
        found = js_imports(path, text, files)
    else:
        return []
    return [f for f in dict.fromkeys(found) if f != path]  # first occurrences, in order


_OUTLINE = {
    "python": re.compile(r"^(?:[ ]{0,4})(?:@|def |async def |class |[A-Z_][A-Z0-9_]*\s*=)"),
    "js": re.compile(r"^(?:[ ]{0,2})(?:export |function |async function |class |interface |type |"
                     r"const |let |var |enum |abstract |public |private |protected |static |"
                     r"[A-Za-z_$][\w$]*\s*\([^)]*\)\s*[:{])"),
}


def outline(text: str, language: str, max_lines: int = 80) -> str:
    """The definition lines of a file (signatures, not bodies): a compact view of what an imported
    module offers. Falls back to the file's head."""
    pattern = _OUTLINE["python"] if language in PY_LANGS else _OUTLINE["js"] if language in JS_LANGS else None
    lines = text.split("\n")
    if pattern is None:
        return "\n".join(lines[:max_lines]) + "\n"
    picked = [line.rstrip() for line in lines if pattern.match(line)]
    return "\n".join(picked[:max_lines]) + "\n"
