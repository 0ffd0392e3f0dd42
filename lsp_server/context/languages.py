"""Language facts the context builder needs: comment syntax and a language name per file."""

from __future__ import annotations

from pathlib import PurePosixPath

# Languages whose comments run to the end of the line, by LSP languageId.
_LINE_COMMENTS = {
    "#": ("python", "shellscript", "ruby", "perl", "r", "yaml", "toml", "dockerfile", "makefile",
          "cmake", "elixir", "julia", "nim", "powershell", "coffeescript", "graphql", "ini",
          "properties", "tcl", "starlark", "bash", "sh", "zsh", "fish", "conf", "gitignore"),
    "//": ("c", "cpp", "csharp", "java", "javascript", "javascriptreact", "typescript",
           "typescriptreact", "go", "rust", "swift", "kotlin", "scala", "dart", "php", "objective-c",
           "objective-cpp", "groovy", "zig", "solidity", "proto", "jsonc", "verilog", "glsl", "hlsl",
           "cuda-cpp", "d", "fsharp", "v"),
    "--": ("lua", "sql", "haskell", "elm", "ada", "vhdl", "purescript"),
    ";": ("clojure", "lisp", "scheme", "racket", "asm", "nasm"),
    "%": ("erlang", "latex", "tex", "matlab", "prolog"),
    "\"": ("vim",),
}
LINE_COMMENT = {lang: mark for mark, langs in _LINE_COMMENTS.items() for lang in langs}
BLOCK_COMMENT = {
    "html": ("<!--", "-->"), "xml": ("<!--", "-->"), "markdown": ("<!--", "-->"),
    "vue": ("<!--", "-->"), "svelte": ("<!--", "-->"), "css": ("/*", "*/"), "scss": ("/*", "*/"),
    "less": ("/*", "*/"), "json": ("/*", "*/"), "ocaml": ("(*", "*)"),
}

EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascriptreact", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "typescriptreact", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp",
    ".hpp": "cpp", ".hh": "cpp", ".cu": "cuda-cpp", ".cs": "csharp", ".java": "java", ".go": "go",
    ".rs": "rust", ".swift": "swift", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala",
    ".dart": "dart", ".php": "php", ".rb": "ruby", ".pl": "perl", ".lua": "lua", ".sql": "sql",
    ".hs": "haskell", ".sh": "shellscript", ".bash": "shellscript", ".zsh": "shellscript",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".r": "r", ".jl": "julia", ".ex": "elixir",
    ".exs": "elixir", ".erl": "erlang", ".clj": "clojure", ".el": "lisp", ".vim": "vim",
    ".html": "html", ".htm": "html", ".xml": "xml", ".md": "markdown", ".vue": "vue",
    ".svelte": "svelte", ".css": "css", ".scss": "scss", ".less": "less", ".json": "json",
    ".ml": "ocaml", ".zig": "zig", ".groovy": "groovy", ".gradle": "groovy", ".proto": "proto",
    ".tex": "latex", ".m": "objective-c", ".ps1": "powershell", ".cmake": "cmake", ".ini": "ini",
    ".cfg": "ini", ".nim": "nim", ".sol": "solidity", ".fs": "fsharp", ".dockerfile": "dockerfile",
}
FILENAMES = {"makefile": "makefile", "dockerfile": "dockerfile", "cmakelists.txt": "cmake",
             "gnumakefile": "makefile"}


def language_of(path: str, language_id: str = "") -> str:
    """The LSP languageId of a file: the client's word when it gave one, else from the name."""
    if language_id:
        return language_id.lower()
    p = PurePosixPath(path)
    return FILENAMES.get(p.name.lower()) or EXTENSIONS.get(p.suffix.lower(), "plaintext")


def comment_block(text: str, language: str) -> str:
    """`text` (ending with a newline) turned into a comment of `language`, line by line where the
    language has line comments, else as one block comment; plain text gets `#`."""
    if not text.endswith("\n"):
        text += "\n"
    if language in BLOCK_COMMENT and language not in LINE_COMMENT:
        start, end = BLOCK_COMMENT[language]
        return f"{start}\n{text.replace(end, end[0] + ' ' + end[1:])}{end}\n"
    mark = LINE_COMMENT.get(language, "#")
    lines = text[:-1].replace("\r\n", "\n").split("\n")
    return "".join(f"{mark} {line}\n" if line.strip() else f"{mark}\n" for line in lines)


def path_header(path: str, language: str) -> str:
    return comment_block(f"Path: {path}\n", language)
