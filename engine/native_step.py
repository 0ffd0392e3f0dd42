"""The CPU decode step of a model with int8, int4 or bfloat16 weights, as one native call
(engine/native/decode_step.c).

Why: PyTorch runs a decode step of the 15 M default model as about two hundred kernels, and on CPU
each costs a few microseconds of dispatch whatever its size: that, not the weights, is most of the
step (benchmarks/RESULTS.md, "CPU decode steps"). The C step does all of it in one call and one OpenMP
team (PyTorch's own: it loads the same libgomp).

It is not bit for bit the eager step: the dot products add in another order, so a logit may differ in
its last bfloat16 bit, and a near tie between two tokens may go the other way. So it serves only where
nothing compares its logits with a forward pass's: the local backend decodes without speculation where
it serves (a verification pass must reproduce one-token steps exactly). `serves` and `applies` say where.

The library is compiled from source at first use with the system's C compiler (about a second) into
a per-user cache directory, keyed by a hash of the source, the flags, the compiler and the CPU (it is
built for this one: -march=native); without a compiler, without AVX-512 (only its vector code beats
PyTorch's kernels), or when the build fails, steps stay eager and one warning says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn

from engine import kernels
from engine.cache import KVCache
from engine.kernels.quant_cpu import int4_supported
from engine.model import Transformer, TransformerBlock
from engine.quant import QuantizedLinear

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "native" / "decode_step.c"
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
ABI_VERSION = 3

DISABLE_ENV = "CODELLAMA_NATIVE_DECODE"  # "0": never (for comparisons and bug reports)


W_INT8, W_BF16, W_INT4 = 0, 1, 2  # the C step's weight kinds
# The widest model (dim) whose steps it serves, per weight kind: past these PyTorch's own kernels do as
# well or better. One step of a random two-layer model at 1K tokens of context, 2 threads, native over
# eager (engine/cpu_step.py): int8 4.1x at dim 1024, 1.5x at 2048, 1.03x at 4096; int4 2.7x, 1.08x, 0.84x;
# bfloat16 2.0x, 1.26x, 1.04x, where the eager step also speculates (1.3x on HumanEval lines, 2.0x on
# copied text, benchmarks/RESULTS.md), which the native step does not.
MAX_DIM = {W_INT8: None, W_INT4: 2048, W_BF16: 1024}


class _QLinear(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("kind", ctypes.c_int), ("group", ctypes.c_int),
                ("group_stride", ctypes.c_long)]


class _Layer(ctypes.Structure):
    _fields_ = [(name, _QLinear) for name in ("wq", "wk", "wv", "wo", "w1", "w3", "w2")] + [
        ("attn_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p)]


class _Model(ctypes.Structure):
    _fields_ = [
        ("dim", ctypes.c_int), ("n_layers", ctypes.c_int), ("n_heads", ctypes.c_int), ("n_kv_heads", ctypes.c_int),
        ("head_dim", ctypes.c_int), ("hidden", ctypes.c_int), ("vocab", ctypes.c_int), ("capacity", ctypes.c_int),
        ("kv_bf16", ctypes.c_int), ("n_threads", ctypes.c_int), ("eps", ctypes.c_float), ("embeddings", ctypes.c_void_p), ("final_norm", ctypes.c_void_p),
        ("output", _QLinear), ("rope_cos", ctypes.c_void_p), ("rope_sin", ctypes.c_void_p),
        ("layers", ctypes.POINTER(_Layer)), ("scratch", ctypes.c_void_p)]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codellama-lsp" / "native"


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None  # why there is no library, once a build failed


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_identity() -> str:
    """What -march=native builds for: the CPU's model and flags where Linux says (a home directory shared
    between machines must not hand one CPU's build to another)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.machine() + platform.processor()
    return "\n".join(sorted({line for line in info.splitlines() if line.startswith(("model name", "flags"))}))


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    identity = SOURCE.read_bytes() + " ".join(CFLAGS).encode() + version.encode() + _cpu_identity().encode()
    key = hashlib.sha256(identity).hexdigest()[:16]
    target = cache_dir() / f"decode_step-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, then renamed: never half-written
        out = Path(tmp) / target.name
        run = subprocess.run([compiler, *CFLAGS, str(SOURCE), "-o", str(out), "-lm"],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {run.stderr.strip()[-500:]}")
        os.replace(out, target)
    return target


def library() -> ctypes.CDLL | None:
    """The compiled step, built at first call; None (with one warning) where it cannot be built."""
    global _library, _failure
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        compiler = _compiler()
        try:
            if compiler is None:
                raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
            lib = ctypes.CDLL(str(_build(compiler)))
            if lib.native_abi_version() != ABI_VERSION:
                raise RuntimeError("the built library has another ABI version")
            if not lib.native_vectorized():
                raise RuntimeError("this CPU has no AVX-512, and without it PyTorch's kernels are faster")
            lib.native_decode_step.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
            lib.native_decode_step.restype = ctypes.c_int
            lib.native_scratch_floats.argtypes = [ctypes.c_int] * 6
            lib.native_scratch_floats.restype = ctypes.c_long
            _library = lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _failure = str(exc)
            log.warning("native decode step unavailable, decoding with PyTorch: %s", _failure)
        return _library


def _weights(layer: nn.Module) -> _QLinear | None:
    """The C step's view of a projection, or None where it cannot read it. It reads int8 (one bfloat16
    scale a row), int4 in PyTorch's CPU layout (built here if the layer has not run yet, as its first
    eager matmul would; bfloat16 scales, no padded input columns) and bias-free bfloat16 weights, all
    without a run-time adapter."""
    if type(layer) is QuantizedLinear and layer.lora is None:
        if layer.spec.bits == 8 and layer._cpu is None:
            if layer.qweight.is_contiguous() and layer.scales.is_contiguous() and layer.scales.dtype == torch.bfloat16:
                return _QLinear(layer.qweight.data_ptr(), layer.scales.data_ptr(), W_INT8, 0, 0)
            return None
        if layer.spec.bits == 4 and int4_supported(layer.spec):
            cpu = layer.cpu_int4(torch.bfloat16)
            pairs = cpu.scales_and_zeros
            if (cpu.packed.is_contiguous() and cpu.packed.shape[1] * 2 == layer.in_features
                    and pairs.stride(2) == 1 and pairs.stride(1) == 2):
                return _QLinear(cpu.packed.data_ptr(), pairs.data_ptr(), W_INT4, layer.spec.group_size, pairs.stride(0))
        return None
    if (type(layer) is nn.Linear and layer.bias is None and layer.weight.dtype == torch.bfloat16
            and layer.weight.is_contiguous()):
        return _QLinear(layer.weight.data_ptr(), 0, W_BF16, 0, 0)
    return None


def _projections(layer: TransformerBlock) -> tuple[nn.Module, ...]:
    """A transformer block's projections, in the order of the C step's Layer struct."""
    attn, ff = layer.attention, layer.feed_forward
    return attn.wq, attn.wk, attn.wv, attn.wo, ff.w1, ff.w3, ff.w2


def _served_weights(model: Transformer) -> tuple[list[tuple[_QLinear, ...]], _QLinear] | None:
    """Every block's projections and the output head as the C step reads them, or None unless each one
    is readable at a width where the C step is the faster one (MAX_DIM) and the rest is bfloat16."""
    a = model.args

    def served(layer: nn.Module) -> _QLinear | None:
        view = _weights(layer)
        widest = MAX_DIM[view.kind] if view is not None else None
        return None if view is None or (widest is not None and a.dim > widest) else view

    norms = [model.norm] + [n for layer in model.layers for n in (layer.attention_norm, layer.ffn_norm)]
    if (model.tok_embeddings.weight.dtype != torch.bfloat16 or any(n.weight.dtype != torch.bfloat16 for n in norms)
            or a.n_heads % (a.n_kv_heads or a.n_heads)):
        return None
    output = served(model.output)
    blocks: list[tuple[_QLinear, ...]] = []
    for layer in model.layers:
        views = [served(p) for p in _projections(layer)]
        if any(view is None for view in views):
            return None
        blocks.append(tuple(v for v in views if v is not None))
    return (blocks, output) if output is not None else None


def model_supported(model: Transformer) -> bool:
    """Whether the C step reads every weight of this model at a width where it is the faster step."""
    return _served_weights(model) is not None


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1") != "0"


def serves(model: Transformer, device: torch.device) -> bool:
    """Whether the C step can serve this model's decode steps on `device` (the library is built on the
    first call that gets this far). CODELLAMA_NATIVE_DECODE=0 says no."""
    return enabled() and device.type == "cpu" and model_supported(model) and library() is not None


class NativeStep:
    """The C step's view of one model and one cache: the weights' pointers, read once, and the cache's and
    rotary tables', checked at every step and refreshed whenever one changed (a cache grown, another cache
    of a pool, the rotary table extended). It holds no cache tensor itself: a cache the pool evicts is
    freed at once.

    For a model that `serves` and whose layers stay as they are (the local backend's: an adapter is
    applied before, by loading another backend)."""

    def __init__(self, model: Transformer) -> None:
        weights = _served_weights(model)
        assert weights is not None, "NativeStep needs a model that native_step.serves"
        lib = library()
        assert lib is not None, "NativeStep needs the built library (native_step.serves)"
        self.model, self._lib = model, lib
        blocks, output = weights
        a = model.args
        self._hidden = model.layers[0].feed_forward.w1.out_features
        self._layers = (_Layer * a.n_layers)()
        for i, (layer, views) in enumerate(zip(model.layers, blocks, strict=True)):
            self._layers[i] = _Layer(*views, layer.attention_norm.weight.data_ptr(), layer.ffn_norm.weight.data_ptr(),
                                     0, 0)  # K/V: per cache, in _pointers
        self._struct = _Model(a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, self._hidden, a.vocab_size,
                              0, 0, 0, a.norm_eps, model.tok_embeddings.weight.data_ptr(), model.norm.weight.data_ptr(),
                              output, 0, 0, self._layers, 0)
        self._key: tuple | None = None
        self._scratch: torch.Tensor | None = None  # the C step's working memory, sized for the capacity

    def _pointers(self, cache: KVCache, rope_cos: torch.Tensor, rope_sin: torch.Tensor) -> _Model:
        key = (cache.capacity, cache.dtype, *(t.data_ptr() for t in cache.k), *(t.data_ptr() for t in cache.v),
               rope_cos.data_ptr(), rope_sin.data_ptr(), torch.get_num_threads())
        if key == self._key:
            return self._struct
        a, st = self.model.args, self._struct
        for i in range(a.n_layers):
            k, v = cache.k[i][0], cache.v[i][0]  # (n_kv, capacity, head_dim), contiguous
            assert k.is_contiguous() and v.is_contiguous()
            self._layers[i].k, self._layers[i].v = k.data_ptr(), v.data_ptr()
        if self._scratch is None or st.capacity != cache.capacity:
            self._scratch = torch.empty(self._lib.native_scratch_floats(a.dim, a.n_heads, a.n_kv_heads, a.head_dim,
                                                                        self._hidden, cache.capacity),
                                        dtype=torch.float32)
        st.capacity, st.kv_bf16, st.n_threads = cache.capacity, int(cache.dtype == torch.bfloat16), torch.get_num_threads()
        st.rope_cos, st.rope_sin, st.scratch = rope_cos.data_ptr(), rope_sin.data_ptr(), self._scratch.data_ptr()
        self._key = key
        return st

    @staticmethod
    def applies(cache: KVCache) -> bool:
        """Whether `step` serves this cache now (a CPU cache of one sequence in float32 or bfloat16, no
        kernel backend forced by a test). The step never records gradients, whatever the mode."""
        return (cache.device.type == "cpu" and cache.batch == 1 and cache.dtype in (torch.float32, torch.bfloat16)
                and kernels.backend_name() == "auto")

    @torch.inference_mode()
    def step(self, cache: KVCache, token: int) -> torch.Tensor:
        """engine.generate.decode_step's contract, to bfloat16 precision (see the module's docstring)."""
        pos = cache.length
        cache.ensure_capacity(pos + 1)
        self.model.rope(pos, pos + 1, cache.device)  # extends the rotary table if pos is past it
        rope_cos, rope_sin = self.model._rope_cos, self.model._rope_sin
        assert rope_cos is not None and rope_sin is not None
        struct = self._pointers(cache, rope_cos, rope_sin)
        logits = torch.empty(self.model.args.vocab_size, dtype=torch.float32)
        if self._lib.native_decode_step(ctypes.byref(struct), int(token), pos, logits.data_ptr()) != 0:
            raise ValueError(f"native decode step refused token {token} at position {pos}")
        cache.tokens.append(token)
        return logits
