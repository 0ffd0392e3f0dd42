"""CUDA graphs in the served decode path: the local backend's one-token decode steps replay a graph
captured for their KV cache (engine/cuda_graph.py), and fall back to the eager step where none can run.

One graph per cache, not one per length bucket shared by every sequence. A captured graph holds the
addresses of the buffers it was captured on, and the backend's pool keeps each sequence (a file, a
spot in it) in a KVCache of its own. A graph shared by all of them would need one set of static K/V
buffers that each sequence is copied into before it decodes and out of afterwards: twice the KV memory
of the sequence decoding (8 GiB more for a 7B model at 16K tokens) and a copy of it at every switch;
or a paged cache read through device-side block tables, a different cache altogether. So a graph here
belongs to exactly one KVCache object (the dictionary's key) and only ever writes into that cache's
own buffers; DecodeGraph recaptures when those buffers move (the cache grew or shrank), so a replay
never writes into freed memory, and a graph is dropped with its cache when the pool evicts it, so no
graph outlives the storage it writes to. Whatever sequence a cache holds, its graph decodes it: the
token and the position are the graph's inputs, the cache's length says where the sequence ends.

Cache capacities are rounded up to buckets (`capacity_bucket`: 8 a doubling), so a cache that grows
a few tokens a keystroke keeps its graph; a graph is captured lazily, at its cache's first decode step
in a bucket, or in idle time when the backend's warming has filled the cache (`prepare`). A capture
costs a few eager steps (its warm-up) and the capture itself, once per cache and bucket; a failed
capture turns graphs off for the loaded model, with one log line saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch

from engine import generate
from engine.cache import KVCache
from engine.cuda_graph import CaptureError, DecodeGraph
from engine.model import Transformer

log = logging.getLogger(__name__)

MIN_BUCKET = 1024  # positions: the smallest capacity a cache decoding with graphs gets
STEPS_PER_DOUBLING = 8  # capacity buckets between two powers of two (at most 1/8 more than needed)

GraphFactory = Callable[[Transformer, KVCache], DecodeGraph]


def capacity_bucket(positions: int) -> int:
    """The capacity to allocate for `positions`: MIN_BUCKET at least, else rounded up to one of
    STEPS_PER_DOUBLING steps between two powers of two (a multiple of 256, as KVCache grows)."""
    if positions <= MIN_BUCKET:
        return MIN_BUCKET
    top = 1 << (positions - 1).bit_length()  # the power of two at or above
    step = max(top // (2 * STEPS_PER_DOUBLING), 256)
    return -(-positions // step) * step


def graphs_unavailable_reason(device: torch.device, enabled: bool) -> str | None:
    """Why decode steps on `device` run eagerly (None: they replay CUDA graphs)."""
    if not enabled:
        return "turned off (setting cudaGraphs: false)"
    if device.type != "cuda":
        return f"the model runs on the {device.type.upper()}; CUDA graphs need a CUDA GPU"
    try:
        import engine.kernels.triton_ops  # noqa: F401 - the captured step's attention kernel
    except ImportError:
        return "Triton is not installed (the captured step reads the cache length on the GPU in its kernel)"
    return None


class ServedGraphs:
    """The decode step the local backend hands to engine.generate.generate: a graph replay per token
    where graphs run, the eager step elsewhere. Call `keep_only` with the pool's caches after the pool
    evicts, so graphs go with their caches."""

    def __init__(self, model: Transformer, device: torch.device, enabled: bool = True,
                 make_graph: GraphFactory = DecodeGraph, drafts: bool = False) -> None:
        """`drafts`: the backend verifies prompt-lookup drafts (passes of several tokens, always eager)."""
        self.model = model
        self.reason = graphs_unavailable_reason(device, enabled)  # None: graphs are in use
        self._make_graph = make_graph
        self._graphs: dict[KVCache, DecodeGraph] = {}  # by identity: KVCache defines no equality
        self.captures = 0  # graphs captured (recaptures included) since the model loaded
        self.graph_steps = 0  # decode steps that replayed a graph
        self.eager_steps = 0  # decode steps that ran eagerly through this function
        if self.reason is not None:
            log.info("CUDA graphs: not used: %s", self.reason)
        elif drafts:
            log.info("CUDA graphs: one-token decode steps only; passes that verify a draft run eagerly")

    @property
    def active(self) -> bool:
        return self.reason is None

    def capacity(self, positions: int) -> int:
        """The capacity to acquire a cache with: bucketed while graphs run (see capacity_bucket)."""
        return capacity_bucket(positions) if self.active else positions

    def graphs(self) -> int:
        """Graphs held now (one per cache that decoded with one and is still in the pool)."""
        return len(self._graphs)

    def _graph(self, cache: KVCache) -> DecodeGraph:
        graph = self._graphs.get(cache)
        if graph is None:
            graph = self._graphs[cache] = self._make_graph(self.model, cache)
        return graph

    def step(self, cache: KVCache, token: int) -> torch.Tensor:
        """engine.generate.decode_step's contract, through the cache's graph where graphs run."""
        if self.reason is None:
            graph = self._graph(cache)
            before = graph.captures
            try:
                logits = graph.decode(token)
            except CaptureError as exc:
                self.disable(f"capturing the decode step failed ({exc})")
            else:
                self.captures += graph.captures - before
                self.graph_steps += 1
                return logits
        self.eager_steps += 1
        return generate.decode_step(self.model, cache, token)  # looked up per call: tests inject faults there

    def prepare(self, cache: KVCache) -> None:
        """Capture `cache`'s graph now if its next decode step would (the backend's idle warming calls
        this, so the first suggestion after a switch does not pay for the capture)."""
        if self.reason is None:
            graph = self._graph(cache)
            before = graph.captures
            try:
                graph.prepare()
            except CaptureError as exc:
                self.disable(f"capturing the decode step failed ({exc})")
            else:
                self.captures += graph.captures - before

    def disable(self, reason: str) -> None:
        """Decode eagerly from now on, and free the graphs."""
        log.warning("CUDA graphs: decoding eagerly from now on: %s", reason)
        self.reason = reason
        self._graphs.clear()

    def keep_only(self, caches: Iterable[KVCache]) -> None:
        """Drop the graphs of caches that are no longer among `caches` (the pool evicted them)."""
        live = set(caches)
        for cache in [c for c in self._graphs if c not in live]:
            del self._graphs[cache]

    def clear(self) -> None:
        self._graphs.clear()
