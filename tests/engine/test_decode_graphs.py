"""CUDA graphs in the served decode path (engine/decode_graphs.py), the parts a CPU can check: the
capacity buckets, when graphs are not used and why, that a backend on the CPU never tries to capture,
the cudaGraphs setting, and the per-cache bookkeeping of the local backend's pool (graphs held by a CPU
stand-in that, like a captured graph, is bound to one cache's buffers). The same bookkeeping with real
graphs, tokens compared with eager decoding, is tests/engine/kernels/test_served_cuda_graphs.py (CUDA).
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from engine.backends.base import CompletionRequest
from engine.backends.local import LocalBackend, load_local_backend
from engine.cache import KVCache
from engine.cuda_graph import CaptureError
from engine.cuda_graph import decode_step as static_decode_step
from engine.decode_graphs import MIN_BUCKET, ServedGraphs, capacity_bucket, graphs_unavailable_reason
from engine.model import Transformer
from lsp_server.engine_manager import load_backend
from lsp_server.settings import Settings, parse_settings

FILE_A = "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        data = fh.read()\n    "
FILE_B = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        "
SUFFIX = "\n\n\ndef main():\n    pass\n"


def test_capacity_buckets_round_up_by_at_most_an_eighth_and_keep_a_growing_cache_in_one():
    assert capacity_bucket(1) == capacity_bucket(MIN_BUCKET) == MIN_BUCKET
    previous = MIN_BUCKET
    for positions in range(MIN_BUCKET + 1, 140_000, 97):
        bucket = capacity_bucket(positions)
        assert bucket >= positions and bucket % 256 == 0, positions  # KVCache grows in steps of 256
        assert bucket <= positions * 1.125 + 256, positions
        assert bucket >= previous  # monotonic: more positions never get a smaller cache
        previous = bucket
    # Typing at 16K tokens adds a few tokens a keystroke: hundreds of keystrokes share a bucket (a graph).
    assert capacity_bucket(16_400) == capacity_bucket(18_000) == 18_432
    assert len({capacity_bucket(n) for n in range(8_193, 16_385)}) == 8  # 8 buckets a doubling


def test_graphs_are_used_only_on_cuda_with_triton_and_the_setting_on(monkeypatch: pytest.MonkeyPatch):
    cuda = torch.device("cuda")
    assert "cudaGraphs" in (graphs_unavailable_reason(cuda, enabled=False) or "")
    assert "CPU" in (graphs_unavailable_reason(torch.device("cpu"), enabled=True) or "")
    pytest.importorskip("engine.kernels.triton_ops", reason="triton is not installed")
    assert graphs_unavailable_reason(cuda, enabled=True) is None
    monkeypatch.setitem(sys.modules, "engine.kernels.triton_ops", None)  # as if triton were missing
    assert "Triton" in (graphs_unavailable_reason(cuda, enabled=True) or "")


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return load_local_backend(device="cpu", dtype="float32")


def request(prefix: str, max_new: int = 12) -> CompletionRequest:
    return CompletionRequest(prefix=prefix, suffix=SUFFIX, max_new_tokens=max_new)


def test_a_backend_on_the_cpu_never_captures_and_keeps_its_caches_unbucketed(backend: LocalBackend):
    def no_capture(model: Transformer, cache: KVCache):
        raise AssertionError("a graph was made on the CPU")

    backend.graphs._make_graph = no_capture  # type: ignore[assignment]
    eager_before = backend.graphs.eager_steps
    result = backend.complete(request(FILE_A))
    assert result.tokens and result.timings is not None and result.timings.decode_passes > 0
    assert backend.graphs.eager_steps - eager_before == result.timings.decode_passes
    assert backend.graphs.graph_steps == backend.graphs.captures == backend.graphs.graphs() == 0
    assert not backend.graphs.active and "CPU" in (backend.graphs.reason or "")
    # No bucket on the CPU: a short prompt's cache is as small as it was before graphs existed.
    assert max(c.capacity for c in backend.pool.caches) < MIN_BUCKET


def test_the_setting_turns_graphs_off_and_reloads_the_model():
    settings, problems = parse_settings({"cudaGraphs": False})
    assert settings.cuda_graphs is False and problems == []
    assert settings.engine_key() != Settings().engine_key()  # a change reloads the model
    bad, problems = parse_settings({"cudaGraphs": "no"})
    assert bad.cuda_graphs is True and len(problems) == 1 and "codellama.cudaGraphs" in problems[0]
    off = load_backend(Settings(device="cpu", dtype="float32", cuda_graphs=False))
    assert isinstance(off, LocalBackend) and "cudaGraphs" in (off.graphs.reason or "")
    off.close()


class BoundStep:
    """A CPU stand-in for DecodeGraph with its contract: made for one cache, it decodes into that cache's
    buffers only (a captured graph holds their addresses), and "recaptures" when they move. It runs the
    static-layout step a real graph records (engine.cuda_graph.decode_step), eagerly."""

    fail_capture = False

    def __init__(self, model: Transformer, cache: KVCache) -> None:
        self.model, self.cache, self.captures = model, cache, 0
        self._layout: tuple[int, int] | None = None

    def prepare(self) -> None:
        layout = (self.cache.k[0].data_ptr(), self.cache.capacity)
        if layout != self._layout:
            if self.fail_capture:
                raise CaptureError("RuntimeError: operation not permitted when stream is capturing")
            self._layout, self.captures = layout, self.captures + 1

    def decode(self, token: int) -> torch.Tensor:
        cache = self.cache
        self.prepare()
        rope = self.model.rope(0, cache.capacity, cache.device)
        logits = static_decode_step(self.model, cache, torch.tensor([[token]]), torch.tensor([cache.length]), rope)
        cache.tokens.append(token)
        return logits[0].float()


def graphs_as_on_cuda(backend: LocalBackend, make_graph=BoundStep) -> ServedGraphs:
    """The backend's ServedGraphs as on a CUDA device, with `make_graph` in place of the capture."""
    graphs = ServedGraphs(backend.model, backend.device, make_graph=make_graph)
    graphs.reason = None
    return graphs


SESSION = [  # a file, a keystroke there, another file, a jump in the first, back to the keystroke's spot
    FILE_A, FILE_A + "c", FILE_B, "import os\n\n\ndef write_config(path, data):\n    ", FILE_A + "c",
]


def completions(backend: LocalBackend) -> list[list[int]]:
    return [backend.complete(request(prefix)).tokens for prefix in SESSION]


def test_each_cache_of_the_pool_decodes_through_its_own_graph_with_eager_tokens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the static step's CPU attention, not the interpreter
    eager = load_local_backend(device="cpu", dtype="float32")
    expected = completions(eager)
    graphed = load_local_backend(device="cpu", dtype="float32")
    graphed.graphs = graphs = graphs_as_on_cuda(graphed)
    assert completions(graphed) == expected
    assert graphs.eager_steps == 0 and graphs.graph_steps > 0
    assert {c.capacity for c in graphed.pool.caches} == {MIN_BUCKET}  # bucketed while graphs run
    held = graphs._graphs
    assert set(held) == set(graphed.pool.caches)  # one graph per cache that decoded, bound to it
    assert all(graph.cache is cache for cache, graph in held.items())
    # The keystroke and the return decoded in the first file's cache, through its graph, captured once.
    assert graphs.captures == graphs.graphs() == len(graphed.pool.caches) >= 2
    # A warm keystroke recomputes one token (token healing holds the last one back): a graph step too.
    before = graphs.graph_steps
    timings = graphed.complete(request(FILE_A + "co")).timings
    assert timings is not None and timings.prompt_tokens - timings.cached_tokens == 1
    assert graphs.graph_steps - before == timings.decode_passes + 1
    # Evicted caches take their graphs with them.
    graphed.pool.MAX_CACHES = 1
    graphed.complete(request(FILE_B + "x"))
    assert len(graphed.pool.caches) == 1 and set(held) == set(graphed.pool.caches)
    graphed.close()
    assert graphs.graphs() == 0


def test_a_failed_capture_falls_back_to_eager_for_good_with_one_log_line(monkeypatch, caplog):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    eager = load_local_backend(device="cpu", dtype="float32")
    expected = completions(eager)

    class FailingCapture(BoundStep):
        fail_capture = True

    graphed = load_local_backend(device="cpu", dtype="float32")
    graphed.graphs = graphs = graphs_as_on_cuda(graphed, FailingCapture)
    with caplog.at_level(logging.WARNING, logger="engine.decode_graphs"):
        assert completions(graphed) == expected
    assert not graphs.active and "capturing the decode step failed" in (graphs.reason or "")
    assert graphs.graph_steps == 0 and graphs.graphs() == 0 and graphs.eager_steps > 0
    assert len([r for r in caplog.records if "CUDA graphs" in r.getMessage()]) == 1


def test_idle_warming_captures_the_graph_so_the_next_completion_does_not(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backend = load_local_backend(device="cpu", dtype="float32")
    backend.graphs = graphs = graphs_as_on_cuda(backend)
    backend.warm(request(FILE_B))
    assert graphs.captures == graphs.graphs() == 1 and graphs.graph_steps == 0
    assert backend.warm(request(FILE_B)) is None and graphs.captures == 1  # warm already: nothing to do
    eager = load_local_backend(device="cpu", dtype="float32")
    assert backend.complete(request(FILE_B)).tokens == eager.complete(request(FILE_B)).tokens
    assert graphs.captures == 1 and graphs.graph_steps > 0  # the completion replayed the warmed graph
    cancelled = load_local_backend(device="cpu", dtype="float32")
    cancelled.graphs = idle = graphs_as_on_cuda(cancelled)
    cancelled.warm(request(FILE_B), should_stop=lambda: True)  # a request came: no capture
    assert idle.captures == 0
