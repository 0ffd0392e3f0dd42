"""Kernel tests run the Triton kernels on CPU through Triton's interpreter when there is no GPU.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when engine.kernels.triton_ops is first
imported, so it is set here, at collection time, before any test imports it.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
