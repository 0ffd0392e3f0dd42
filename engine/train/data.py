"""Token streams for training: documents -> FIM transform -> one long token array, cached on disk.

Files of one repository are kept together, in path order, each preceded by a path header, so a long
training window sees a repository the way a long-context prompt does. Long files are cut at line ends
into documents that fit one context (so the FIM transform, which applies only to documents that fit,
reaches them). The whole stream is tokenised once and saved as a memory-mapped array keyed by a hash
of everything that determines it; a second run with the same inputs starts at once.

Training windows are `seq_len + 1` consecutive tokens of the stream (inputs and shifted targets),
visited in a seeded random order per epoch; the order depends only on (seed, step), which is what
makes `--resume` exact.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_file
from engine.tokenizer import Tokenizer
from engine.train.fim import transform
from engine.train.sources import SourceFile

DATA_FORMAT_VERSION = 1
CHARS_PER_TOKEN_GUESS = 2.7  # a little under what code tokenises to, so most cut documents fit
HASH_COMMENT_EXTS = (".py", ".pyi", ".sh", ".bash", ".rb", ".r", ".pl", ".toml", ".yaml", ".yml", ".cfg",
                     ".ini", ".mk", ".jl", ".ex", ".exs", ".cmake", ".txt", ".md", ".rst")


def path_header(path: str) -> str:
    """A one-line comment naming the file, in the file's own comment syntax where we know it."""
    if path.endswith(HASH_COMMENT_EXTS) or path.rsplit("/", 1)[-1] in ("Makefile", "Dockerfile"):
        return f"# {path}\n"
    if path.endswith((".sql", ".lua", ".hs")):
        return f"-- {path}\n"
    return f"// {path}\n"


def split_lines(text: str, max_chars: int) -> list[str]:
    """Cut text at line ends into pieces of at most max_chars (a longer single line is cut too)."""
    out: list[str] = []
    buf = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if buf:
                out.append(buf)
                buf = ""
            out.append(line[:max_chars])
            line = line[max_chars:]
        if len(buf) + len(line) > max_chars and buf:
            out.append(buf)
            buf = ""
        buf += line
    if buf:
        out.append(buf)
    return out


def documents(files: Iterable[SourceFile], max_doc_chars: int) -> Iterator[str]:
    """Documents in repository order: each file (header + text), cut to fit one context."""
    for f in files:
        yield from split_lines(path_header(f.path) + f.text, max_doc_chars)


@dataclass
class DataConfig:
    seq_len: int
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    seed: int = 0

    @property
    def max_doc_chars(self) -> int:
        return int(self.seq_len * CHARS_PER_TOKEN_GUESS)


def data_hash(files: Sequence[SourceFile], tokenizer_path: str | Path, cfg: DataConfig) -> str:
    h = hashlib.sha256()
    h.update(f"v{DATA_FORMAT_VERSION}:{cfg.seq_len}:{cfg.fim_rate}:{cfg.spm_rate}:{cfg.seed}\n".encode())
    h.update(hashlib.sha256(Path(tokenizer_path).read_bytes()).digest())
    for f in files:
        h.update(f"{f.repo}\0{f.path}\0".encode())
        h.update(hashlib.sha1(f.text.encode()).digest())
    return h.hexdigest()[:16]


def build_stream(
    files: Sequence[SourceFile], tok: Tokenizer, cfg: DataConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """The whole token stream (uint16 when the vocabulary allows) and counts per document kind."""
    rng = random.Random(cfg.seed)
    dtype = np.uint16 if tok.vocab_size <= 65535 else np.int32
    parts: list[np.ndarray] = []
    counts = {"psm": 0, "spm": 0, "plain": 0}
    for doc in documents(files, cfg.max_doc_chars):
        ids, kind = transform(tok, doc, rng, cfg.fim_rate, cfg.spm_rate, max_tokens=cfg.seq_len)
        counts[kind] += 1
        parts.append(np.asarray(ids, dtype=dtype))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return stream, counts


def cached_stream(
    files: Sequence[SourceFile], tokenizer_path: str | Path, cfg: DataConfig, cache_dir: str | Path,
    log: bool = True,
) -> tuple[np.ndarray, dict]:
    """The token stream for these files, from the cache if it is there (memory-mapped), else built and
    saved (atomically: a half-written cache file is never used)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = data_hash(files, tokenizer_path, cfg)
    meta_path, bin_path = cache_dir / f"{key}.json", cache_dir / f"{key}.bin"
    if meta_path.is_file() and bin_path.is_file():
        return load_stream(bin_path, json.loads(meta_path.read_text()))
    tok = Tokenizer(tokenizer_path)
    if log:
        print(f"tokenising {len(files)} files (cache {key}) ...", flush=True)
    stream, counts = build_stream(files, tok, cfg)
    meta = {"data_hash": key, "n_tokens": int(stream.size), "dtype": str(stream.dtype), "files": len(files),
            "docs": counts, "chars": sum(len(f.text) for f in files), **cfg.__dict__}
    save_stream(stream, meta, bin_path, meta_path)
    return load_stream(bin_path, meta)


def save_stream(stream: np.ndarray, meta: dict, bin_path: Path, meta_path: Path) -> None:
    """Tokens and their metadata, each written in full before either is renamed into place: a
    half-written stream is never taken for a good one (the metadata, which readers look for, comes
    last)."""
    with atomic_file(meta_path) as meta_tmp, atomic_file(bin_path) as bin_tmp:
        stream.tofile(bin_tmp)
        meta_tmp.write_text(json.dumps(meta, indent=1))


def load_stream(bin_path: Path, meta: dict) -> tuple[np.ndarray, dict]:
    """A saved stream, memory-mapped."""
    return np.memmap(bin_path, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],)), meta


class WindowSampler:
    """Batches of (seq_len + 1)-token windows of a stream, in an order fixed by (seed, step).

    `loss_weights`, when given, is a stream as long as `stream`: how much predicting each token
    counts in the loss (1.0 everywhere is the plain mean)."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, seed: int,
                 loss_weights: np.ndarray | None = None) -> None:
        if loss_weights is not None and len(loss_weights) != len(stream):
            raise ValueError(f"{len(loss_weights)} loss weights for {len(stream)} tokens")
        self.stream = stream
        self.loss_weights = loss_weights
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.n_windows = (len(stream) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"only {len(stream)} tokens of data: not one window of {seq_len + 1}")
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def _starts(self, index: int) -> list[int]:
        starts = []
        for j in range(self.batch_size):
            i = index * self.batch_size + j
            starts.append(int(self._order(i // self.n_windows)[i % self.n_windows]) * self.seq_len)
        return starts

    def batch(self, index: int) -> torch.Tensor:
        """The `index`-th batch: (batch_size, seq_len + 1) int64."""
        rows = [np.asarray(self.stream[s : s + self.seq_len + 1], dtype=np.int64) for s in self._starts(index)]
        return torch.from_numpy(np.stack(rows))

    def batch_weights(self, index: int) -> torch.Tensor | None:
        """The loss weights of `batch(index)`'s targets, (batch_size, seq_len) float32; None without weights."""
        if self.loss_weights is None:
            return None
        rows = [np.asarray(self.loss_weights[s + 1 : s + self.seq_len + 1], dtype=np.float32)
                for s in self._starts(index)]
        return torch.from_numpy(np.stack(rows))

    def epochs(self, batches: int) -> float:
        return batches * self.batch_size / self.n_windows


def read_jsonl_files(path: str | Path) -> list[SourceFile]:
    """{"repo", "path", "text"} lines, from a plain or an xz-compressed (`.xz`) file."""
    with (lzma.open(path, "rt") if str(path).endswith(".xz") else open(path)) as fh:
        return [SourceFile(d["repo"], d["path"], d["text"]) for d in map(json.loads, fh)]
