"""Repository examples laid out exactly as the language server sends them ("train as you serve").

The files of one workspace are indexed by the server's own `WorkspaceIndex`; a cursor is placed in
one file where users ask for completions, the rest of that line (or a short block) is the middle, and
the prompt is what the server's context builder (`lsp_server.context`) makes of it at the server's
CPU budget: repository snippets as commented blocks under `Path:` headers, then the file's path and
its text up to the cursor. Used by on-device adaptation (`lsp_server.adapt`) and by the default
model's recipe (recipes/default_model/served.py).

Laid out as tokens the way the engine serves them, token healing included:
    SPM: BOS <PRE> <SUF> encode_infill(suffix) <MID> encode(prefix + middle) <EOT>
         (the server holds the prefix's last token back and the model spells it again, so the tokens
         from the cursor on are those of the joined text)
    PSM: BOS <PRE> encode(prefix)[:-1] <SUF> encode_infill(suffix) <MID> encode_infill(healed + middle) <EOT>
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.evaluate.crossfile_cases import build_cases
from engine.generate import common_prefix_length
from engine.healing import TokenHealer
from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile
from lsp_server.context.budget import TokenCounter
from lsp_server.context.builder import render_snippets
from lsp_server.context.gather import Gatherer, Request
from lsp_server.context.prompt import build_prompt, in_memory_index

SERVER_CPU_BUDGET = 2048  # lsp_server.settings.Settings.context_budget on CPU
KINDS = ("cross", "line", "punct", "ident", "block", "linestart", "inherited")
# Off by default; the default model's recipe asks for them: "linestart" (the cursor at column 0, the
# whole line with its indentation the middle: HumanEval's single-line layout) and "inherited" (the
# cursor after `self.` where the attribute comes from a base class defined in another file).
KIND_WEIGHTS = (0.35, 0.2, 0.2, 0.15, 0.1, 0.0, 0.0)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FROM_IMPORT = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+import\s+\(?([^)#\n]*)", re.M)
_IMPORT_AS = re.compile(r"^\s*import\s+([\w.]+)(?:\s+as\s+(\w+))?", re.M)
_DEFINED = re.compile(r"^[ \t]*(?:(?:async[ \t]+)?def|class)[ \t]+([A-Za-z_]\w*)|^([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)", re.M)


@dataclass(frozen=True)
class Target:
    """Where the user asks (offset into the file) and what they would have typed next."""

    offset: int
    end: int  # the middle is text[offset:end]
    kind: str


@dataclass(frozen=True)
class LossWeights:
    """How much predicting each part of a served example counts in the training loss, against 1.0 for
    the file's own text: the repository snippets (copies of other training files, which a plain loss
    would learn again in every prompt that quotes them) and the middle (what the user gets)."""

    snippets: float = 1.0
    middle: float = 1.0
    names: float = 1.0  # a factor on the tokens that spell a name the workspace defines (`def`, `class`, `X =`)
    # A factor on the middle's first tokens, where the model must find where the middle begins (in PSM,
    # right after a prefix that ended before the suffix; with token healing, the prefix's held-back token).
    boundary: float = 1.0
    boundary_tokens: int = 4

    @property
    def plain(self) -> bool:
        return self.snippets == 1.0 and self.middle == 1.0 and self.names == 1.0 and self.boundary == 1.0


@dataclass
class ServedExample:
    tokens: list[int]
    package: str
    kind: str
    spm: bool
    with_context: bool
    prompt_tokens: int
    snippets: int
    loss_weights: np.ndarray | None = None  # one per token (the weight of predicting it); None: all 1.0


def sibling_names(text: str, package_modules: set[str]) -> tuple[set[str], set[str]]:
    """Names this file imports from modules of its own package, and aliases of those modules.

    `from .x import A`, `from pkg.x import A, B` give names; `import pkg.x as m`, `from . import x`
    give module aliases (a use `m.Name` then refers to another file)."""
    names: set[str] = set()
    modules: set[str] = set()
    for mod, what in _FROM_IMPORT.findall(text):
        local = mod.startswith(".") or mod.split(".")[0] in package_modules
        if not local:
            continue
        for part in what.split(","):
            name = part.split(" as ")[-1].strip()
            if name.isidentifier():
                (modules if mod.strip(".") == "" else names).add(name)
    for mod, alias in _IMPORT_AS.findall(text):
        if mod.split(".")[0] in package_modules:
            modules.add(alias or mod.split(".")[0])
    return names, modules


def cross_file_cursors(text: str, names: set[str], modules: set[str]) -> list[int]:
    """Offsets right before a use of an imported sibling name, or before `Name` in `module.Name`,
    outside the import lines themselves."""
    out = []
    body_start = _body_start(text)
    for m in IDENT.finditer(text, body_start):
        word, at = m.group(), m.start()
        if at > 0 and text[at - 1] == "." and _word_before(text, at - 1) in modules:
            out.append(at)
        elif word in names and (at == 0 or text[at - 1] != "."):
            out.append(at)
    return out


def _body_start(text: str) -> int:
    """Offset after the last top-level import line (uses before it are the imports themselves)."""
    last = 0
    for m in re.finditer(r"^(?:from|import)\s[^\n]*\n", text, re.M):
        last = m.end()
    return last


def _word_before(text: str, dot: int) -> str:
    start = dot
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return text[start:dot]


def pick_cursor(text: str, kind: str, cross: list[int], rng: random.Random) -> Target | None:
    """A cursor of the given kind, the middle running to the end of its line (a block for 'block')."""
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    code = [i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")]
    if not code:
        return None
    if kind == "cross":
        if not cross:
            return None
        at = rng.choice(cross)
        return Target(at, _line_end(text, at), kind)
    if kind == "block":
        heads = [i for i in code if lines[i].rstrip().endswith(":") and i + 1 < len(lines) and lines[i + 1].strip()]
        if not heads:
            return None
        i = rng.choice(heads) + 1
        indent = len(lines[i]) - len(lines[i].lstrip())
        last = i
        while last + 1 < len(lines) and last - i < 5 and (
                not lines[last + 1].strip() or len(lines[last + 1]) - len(lines[last + 1].lstrip()) >= indent):
            last += 1
        return Target(starts[i] + indent, starts[last] + len(lines[last]), kind)
    i = rng.choice(code)
    line, base = lines[i], starts[i]
    indent = len(line) - len(line.lstrip())
    if kind == "line":
        return Target(base + indent, base + len(line), kind)
    if kind == "linestart":
        return Target(base, base + len(line), kind)
    if kind == "punct":
        spots = [j + 1 for j, c in enumerate(line) if c in ".(=," and j >= indent and j + 1 < len(line)]
        if not spots:
            return None
        at = base + rng.choice(spots)
        if text[at] == " ":  # `x = |value`: the cursor after the space, as users type it
            at += 1
        return Target(at, base + len(line), kind) if at < base + len(line) else None
    words = [m for m in IDENT.finditer(line, indent) if len(m.group()) >= 4]
    if not words:
        return None
    m = rng.choice(words)
    at = base + m.start() + rng.randint(1, min(3, len(m.group()) - 1))
    return Target(at, base + len(line), kind)


def _line_end(text: str, at: int) -> int:
    end = text.find("\n", at)
    return len(text) if end < 0 else end


class ServedExamples:
    """Examples for the files of one package, with the server's index over that package."""

    def __init__(self, tok: Tokenizer, files: Sequence[SourceFile], seed: int,
                 spm_rate: float = 0.7, context_rate: float = 0.9,
                 kind_weights: Sequence[float] = KIND_WEIGHTS, loss_weights: LossWeights = LossWeights()) -> None:
        self.tok = tok
        self.loss_weights = loss_weights
        self.files = list(files)
        self.rng = random.Random(seed)
        self.spm_rate = spm_rate
        self.context_rate = context_rate
        self.kind_weights = kind_weights
        self.healer = TokenHealer(tok.piece_texts())
        self.count = TokenCounter(lambda s: len(tok.encode_infill(s)))
        self.index = in_memory_index({f.path: f.text for f in self.files})
        self.gatherer = Gatherer()
        self.modules = {f.path.split("/")[0].removesuffix(".py") for f in self.files}
        names = (m.group(1) or m.group(2) for f in self.files for m in _DEFINED.finditer(f.text))
        self.defined = {n for n in names if len(n) >= 4}  # shorter ones are mostly `self`-like noise
        self._version = 0
        self._inherited: dict[str, list[int]] | None = None

    def inherited_cursors(self) -> dict[str, list[int]]:
        """Per file, offsets right after `self.` where the attribute is inherited from a base class
        that another file of the package defines (the cross-file benchmark's `self_base` cases).
        Parses every file of the package, once, on first use."""
        if self._inherited is None:
            self._inherited = {}
            texts = {f.path: f.text for f in self.files}
            line_starts: dict[str, list[int]] = {}
            for case in build_cases(texts):
                if case.kind == "self_base":
                    if case.path not in line_starts:  # a file's line offsets, once per file
                        lines = texts[case.path].split("\n")
                        line_starts[case.path] = [0, *itertools.accumulate(len(line) + 1 for line in lines)]
                    offset = line_starts[case.path][case.line] + case.column
                    self._inherited.setdefault(case.path, []).append(offset)
        return self._inherited

    def example(self, f: SourceFile, budget: int, kind: str | None = None) -> ServedExample | None:
        """An example for a cursor in file f, of the given kind (drawn by kind_weights when None)."""
        r = self.rng
        kind = kind or r.choices(KINDS, self.kind_weights)[0]
        if kind == "inherited":
            offsets = self.inherited_cursors().get(f.path)
            at = r.choice(offsets) if offsets else None
            cur = None if at is None else Target(at, _line_end(f.text, at), kind)
        else:
            names, modules = sibling_names(f.text, self.modules)
            cur = pick_cursor(f.text, kind, cross_file_cursors(f.text, names, modules) if kind == "cross" else [], r)
        if cur is None or cur.end <= cur.offset or cur.end - cur.offset > 600:
            return None
        middle = f.text[cur.offset : cur.end]
        text = f.text[: cur.offset] + f.text[cur.end :]
        with_context = r.random() < self.context_rate
        self._version += 1  # a new buffer version for the gatherer's per-version caches
        req = Request(f.path, text, "python", cur.offset, self._version)
        built = build_prompt(req, self.index, self.gatherer, budget=budget, count=self.count,
                             repository_context=with_context)
        spm = r.random() < self.spm_rate
        tokens = self._layout(built.prefix, built.suffix, middle, spm)
        if tokens is None:
            return None
        weights = None
        if not self.loss_weights.plain:
            snippet_chars = len(render_snippets(built.snippets, "python"))
            weights = self._weights(tokens, built.prefix, snippet_chars, spm)
        return ServedExample(tokens, f.repo, cur.kind, spm, with_context, built.tokens, len(built.snippets), weights)

    def _weights(self, tokens: list[int], prefix: str, snippet_chars: int, spm: bool) -> np.ndarray:
        """The loss weight of each token of a laid-out example: the snippets' tokens (the prefix's
        first `snippet_chars` characters), the middle's tokens and the closing EOT (its first ones
        times `boundary`), 1.0 elsewhere."""
        tok = self.tok
        assert tok.middle_id is not None
        after_mid = tokens.index(tok.middle_id) + 1
        snippet_tokens = len(tok.encode(prefix[:snippet_chars])) if snippet_chars else 0
        if spm:  # <MID> encode(prefix + middle): the middle starts where the prefix's own tokens stop matching
            prefix_ids = tok.encode(prefix)
            body = tokens[after_mid:]
            snippets_at, middle_at = after_mid, after_mid + common_prefix_length(prefix_ids, body)
        else:  # BOS <PRE> prefix... <SUF> suffix <MID> middle
            snippets_at, middle_at = 2, after_mid
        weights = np.ones(len(tokens), dtype=np.float32)
        weights[snippets_at : snippets_at + snippet_tokens] = self.loss_weights.snippets
        weights[middle_at:] = self.loss_weights.middle
        weights[middle_at : middle_at + self.loss_weights.boundary_tokens] *= self.loss_weights.boundary
        if self.loss_weights.names != 1.0:
            weights[self._defined_name_tokens(tokens)] *= self.loss_weights.names
        return weights

    def _defined_name_tokens(self, tokens: list[int]) -> np.ndarray:
        """Indices of the tokens that spell (part of) a name the workspace defines."""
        pieces = [self.healer.texts[t] for t in tokens]
        ends = np.cumsum([len(p) for p in pieces])
        text = "".join(pieces)
        marked = np.zeros(len(tokens), dtype=bool)
        for m in IDENT.finditer(text):
            if m.group() in self.defined:
                # tokens whose text overlaps the name: they end after its start and start before its end
                first = int(np.searchsorted(ends, m.start(), side="right"))
                last = int(np.searchsorted(ends, m.end() - 1, side="right"))
                marked[first : last + 1] = True
        return np.flatnonzero(marked)

    def _layout(self, prefix: str, suffix: str, middle: str, spm: bool) -> list[int] | None:
        tok = self.tok
        assert tok.prefix_id is not None and tok.eot_id is not None and tok.suffix_id is not None and tok.middle_id is not None
        head = [tok.bos_id, tok.prefix_id]
        if spm:
            return (head + [tok.suffix_id] + tok.encode_infill(suffix) + [tok.middle_id]
                    + tok.encode(prefix + middle) + [tok.eot_id])
        ids = tok.encode(prefix)
        if not ids:
            return None
        healed = self.healer.heal_text(ids[-1])
        if not healed or not prefix.endswith(healed):
            healed, kept = "", ids
        else:
            kept = ids[:-1]
        return (head + kept + [tok.suffix_id] + tok.encode_infill(suffix) + [tok.middle_id]
                + tok.encode_infill(healed + middle) + [tok.eot_id])


def pack_windows(examples: Iterator[ServedExample], seq_len: int, n_windows: int, filler: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, int]]:
    """n_windows windows of seq_len tokens, each opening with a served example; further examples
    follow while they fit whole, and the rest of the window is a slice of ordinary training tokens
    (`filler`). No example is cut by a window's edge: a cut one would teach a middle without its prompt.
    Returns the tokens, their loss weights (None when no example carries any; filler weighs 1.0) and
    counts of what went in."""
    rng = random.Random(seed)
    out = np.empty(n_windows * seq_len, dtype=filler.dtype)
    weights: np.ndarray | None = None
    counts: dict[str, int] = {"served_windows": 0, "served_examples": 0, "served_spm": 0, "served_psm": 0,
                              "served_with_context": 0}
    pending = next(examples, None)
    for w in range(n_windows):
        window = out[w * seq_len : (w + 1) * seq_len]
        filled = 0
        while pending is not None and filled + len(pending.tokens) <= seq_len:
            window[filled : filled + len(pending.tokens)] = pending.tokens
            if pending.loss_weights is not None:
                if weights is None:
                    weights = np.ones(len(out), dtype=np.float32)
                at = w * seq_len + filled
                weights[at : at + len(pending.tokens)] = pending.loss_weights
            filled += len(pending.tokens)
            counts["served_examples"] += 1
            counts["served_spm" if pending.spm else "served_psm"] += 1
            counts["served_with_context"] += pending.with_context
            counts[f"served_{pending.kind}"] = counts.get(f"served_{pending.kind}", 0) + 1
            pending = next(examples, None)
        if filled < seq_len:
            start = rng.randrange(max(1, len(filler) - seq_len))
            window[filled:] = filler[start : start + seq_len - filled]
        counts["served_windows"] += 1
    return out, weights, counts
