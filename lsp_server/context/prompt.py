"""The prompt for one cursor, as the language server builds it: gathered candidates packed by the
builder. The completion service calls `build_prompt`; tools that need exactly the server's prompts
without running a server (the recipe's training-data generator, benchmarks) call `server_prompt`
with the workspace's files in memory.

    from engine.tokenizer import Tokenizer
    from lsp_server.context.prompt import server_prompt
    from lsp_server.settings import Settings
    tok = Tokenizer("models/default/tokenizer.model")
    budget = Settings().context_budget(4096, on_gpu=False)  # the CPU default: 2048 tokens
    built = server_prompt({"pkg/a.py": "...", "pkg/b.py": "..."}, "pkg/b.py", text, cursor,
                          budget=budget, count=lambda s: len(tok.encode(s)))
    # the engine then sends infill_prompt(tok, built.prefix, built.suffix, "spm") (engine/prompts.py)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .builder import BuiltContext, Layout, build_context, query_words
from .gather import Gatherer, Request
from .index import WorkspaceIndex


def similar_limit(budget: int) -> int:
    """How many BM25 windows of the repository compete for a prompt of `budget` tokens."""
    return max(8, min(400, budget // 150))


def build_prompt(req: Request, index: WorkspaceIndex | None, gatherer: Gatherer, *, budget: int,
                 count: Callable[[str], int], repository_context: bool = True,
                 previous: Layout | None = None) -> BuiltContext:
    """Prefix and suffix for the cursor of `req`: repository context gathered (unless turned off)
    and packed with the file into `budget` tokens. `previous` is the document's last layout, which
    keeps the prompt stable from one keystroke to the next."""
    candidates = (gatherer.gather(req, index, query_words(req.text, req.cursor), similar_limit(budget))
                  if repository_context else [])
    return build_context(text=req.text, cursor=req.cursor, path=req.path, language=req.language,
                         budget=budget, count=count, candidates=candidates, previous=previous)


def server_prompt(files: Mapping[str, str], path: str, text: str, cursor: int, *, budget: int,
                  count: Callable[[str], int], language: str = "python",
                  index: WorkspaceIndex | None = None) -> BuiltContext:
    """The prompt the server sends for a cursor at code-point offset `cursor` of `text`, the buffer of
    the file at workspace-relative `path`, when `files` ({path: text}, the file itself may be among
    them with any content: the buffer wins) are the workspace on disk and this is the only open
    document, on its first request. Pass `index` (from `in_memory_index(files)`) to reuse one
    across many cursors of the same workspace."""
    index = index if index is not None else in_memory_index(files)
    req = Request(path, text, language, cursor, 1)
    return build_prompt(req, index, Gatherer(), budget=budget, count=count)


def in_memory_index(files: Mapping[str, str]) -> WorkspaceIndex:
    """A workspace index of texts in memory (no disk, no watching). The server's index also leaves
    out secret, ignored, vendored, generated and binary files: filter `files` the same way first
    (engine.train.sources does for a corpus)."""
    index = WorkspaceIndex(".")
    for rel in sorted(files):
        index.put(rel, files[rel])
    return index
