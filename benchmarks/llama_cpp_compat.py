"""Opening a GGUF with llama-cpp-python, around a llama.cpp crash seen on this machine.

llama-cpp-python 0.3.36 (built from source here, an AMX CPU) segfaults on the first decode of every
Q8_0 and Q4_0 model, its own `llama_model_quantize` output included, while its extra CPU buffer types
(AMX and repacked weights) are on; float models run. `open_llama` first decodes a few tokens in a
subprocess, and turns those buffer types off only where that crashed, so llama.cpp keeps its fastest
kernels wherever they work. The benchmarks print which way it ran.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_PROBE = (
    "import sys, llama_cpp\n"
    "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)\n"
    "llm.eval([1, 2, 3])\n"
)


def extra_buffers_crash(gguf: Path) -> bool:
    """Whether llama.cpp dies decoding `gguf` with its default (extra) CPU buffer types."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(gguf)], env=env, capture_output=True, timeout=600)
    return proc.returncode != 0


@contextlib.contextmanager
def _without_extra_buffers() -> Iterator[None]:
    import llama_cpp.llama_cpp as capi

    default = capi.llama_model_default_params

    def params():  # noqa: ANN202 - a ctypes struct
        p = default()
        p.use_extra_bufts = False
        return p

    capi.llama_model_default_params = params
    try:
        yield
    finally:
        capi.llama_model_default_params = default


def open_llama(gguf: Path, **kwargs: Any) -> tuple[Any, str]:
    """A llama_cpp.Llama for `gguf`, and a note: "" or why its extra buffer types are off."""
    import llama_cpp

    if not extra_buffers_crash(gguf):
        return llama_cpp.Llama(model_path=str(gguf), **kwargs), ""
    with _without_extra_buffers():
        llm = llama_cpp.Llama(model_path=str(gguf), **kwargs)
    return llm, "extra CPU buffer types (AMX/repack) off: they crash llama.cpp on this file"
