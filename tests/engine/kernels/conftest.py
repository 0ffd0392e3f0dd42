"""Kernel tests run the Triton kernels on CPU through Triton's interpreter when there is no GPU.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when engine.kernels.triton_ops is first
imported, so it is set here, at collection time, and the module imported at once: a test that unsets
the variable for its own run (to take the CPU fallback) must not be the first to import it.
"""

import contextlib
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    with contextlib.suppress(ImportError):  # triton missing: the tests that need it skip
        import engine.kernels.triton_ops  # noqa: F401
