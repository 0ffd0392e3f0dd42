"""On CUDA: the local backend's completions with CUDA graphs (engine/decode_graphs.py) are token for
token those of eager decoding, through LocalBackend.complete with the real default model, over an
editing session that uses the KV cache pool: a file, a keystroke (its cache reused), a jump within the
file, another file (warmed in idle time before), the return to the keystroke's spot; greedy with and without prompt-lookup drafts,
seeded sampling, the int8 KV cache and int8 weights. Runs in `benchmarks/gpu_check.sh tests`.
"""

from __future__ import annotations

import pytest
import torch

from engine.backends.base import CompletionRequest
from engine.backends.local import LocalBackend, load_local_backend
from engine.lookup import Speculation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

# Two files of code that repeats itself (about 2K and 1K tokens), so drafts copied from above are accepted.
FILE_A = "".join(
    f"def scale_{i}(values, factor={i}):\n    result = []\n    for value in values:\n"
    f"        result.append(value * factor + {i})\n    return result\n\n\n"
    for i in range(40)
)
FILE_B = "class Registry:\n" + "".join(
    f"    def get_{name}(self):\n        return self.items.get({name!r})\n\n"
    f"    def set_{name}(self, value):\n        self.items[{name!r}] = value\n\n"
    for name in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")
)


def at(text: str, marker: str, extra: str = "") -> tuple[str, str]:
    """(prefix, suffix) of `text` split just after `marker`, with `extra` typed there."""
    cut = text.index(marker) + len(marker)
    return text[:cut] + extra, text[cut:]


TYPING = "def scale_31(values, factor=31):\n    result = []\n    for value in values:\n        "
SESSION = [
    at(FILE_A, TYPING),  # a file
    at(FILE_A, TYPING, "r"),  # a keystroke: its cache is reused
    at(FILE_A, "def scale_12(values, factor=12):\n    "),  # a jump within the file
    at(FILE_B, "    def set_theta(self, value):\n        "),  # another file
    at(FILE_A, TYPING, "r"),  # back to the keystroke's spot
]


def session(backend: LocalBackend, temperature: float = 0.0) -> list[list[int]]:
    def request(prefix: str, suffix: str) -> CompletionRequest:
        return CompletionRequest(prefix=prefix, suffix=suffix, max_new_tokens=40, temperature=temperature, seed=7)

    backend.warm(request(*SESSION[3]))  # the other file, warmed in idle time: its graph captured then
    return [backend.complete(request(prefix, suffix)).tokens for prefix, suffix in SESSION]


@pytest.mark.parametrize(
    "options",
    [{}, {"kv_cache_dtype": "int8"}, {"quantization": "int8"}],
    ids=["bf16", "int8-kv-cache", "int8-weights"],
)
@pytest.mark.parametrize("drafts", [False, True], ids=["plain", "prompt-lookup"])
def test_completions_with_cuda_graphs_are_the_eager_ones(options: dict, drafts: bool) -> None:
    eager = load_local_backend(device="cuda", cuda_graphs=False, **options)
    graphed = load_local_backend(device="cuda", **options)
    for backend in (eager, graphed):
        backend.speculation = Speculation() if drafts else None
    try:
        assert graphed.graphs.active, graphed.graphs.reason
        expected = session(eager)
        assert session(graphed) == expected
        assert sum(map(len, expected)) >= 40 and eager.graphs.graph_steps == 0
        assert graphed.graphs.graph_steps > 0 and graphed.graphs.active, graphed.graphs.reason
        # One graph per cache that decoded; the keystroke and the return reused the first file's.
        assert 1 <= graphed.graphs.captures == graphed.graphs.graphs() <= len(graphed.pool.caches)
        if not drafts:
            assert graphed.graphs.eager_steps == 0
    finally:
        eager.close()
        graphed.close()


def test_seeded_sampling_with_cuda_graphs_draws_the_eager_tokens() -> None:
    eager = load_local_backend(device="cuda", cuda_graphs=False)
    graphed = load_local_backend(device="cuda")
    try:
        expected = session(eager, temperature=0.8)
        assert session(graphed, temperature=0.8) == expected and sum(map(len, expected)) >= 40
        assert graphed.graphs.graph_steps > 0
    finally:
        eager.close()
        graphed.close()
