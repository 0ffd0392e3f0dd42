"""The KV cache: preallocated per-layer buffers, written in place at explicit positions.

Stored as the model's dtype (bf16/float32), or as int8 with one float32 scale per (head, position)
(`dtype=torch.int8`: about half the bytes of bf16). An int8 cache hands attention `Int8KV` views
(engine/kernels/int8_kv.py), which the attention kernels read without dequantizing the whole cache.
"""

from __future__ import annotations

import torch

from engine.config import ModelArgs
from engine.kernels.int8_kv import Int8KV, quantize_rows

_GROWTH = 256  # capacity grows in steps of this many positions, so growing is rare

KVView = torch.Tensor | Int8KV


def _rounded(positions: int) -> int:
    return -(-positions // _GROWTH) * _GROWTH


class KVCache:
    """K and V for every layer, shaped (batch, n_kv_heads, capacity, head_dim).

    `tokens` lists the ids whose keys and values are stored in positions [0, len(tokens)); the
    generator trims it to reuse a shared prefix between requests. `dtype` is the storage type:
    torch.int8 keeps `k_scale`/`v_scale` (batch, n_kv_heads, capacity) float32 beside `k`/`v`.
    """

    def __init__(
        self, args: ModelArgs, capacity: int, device: torch.device | str, dtype: torch.dtype, batch: int = 1
    ) -> None:
        self.args = args
        self.device = torch.device(device)
        self.dtype = dtype
        self.quantized = dtype == torch.int8
        self.batch = batch
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.k_scale: list[torch.Tensor] = []  # int8 only
        self.v_scale: list[torch.Tensor] = []
        self.tokens: list[int] = []
        self.ensure_capacity(capacity)

    @property
    def length(self) -> int:
        return len(self.tokens)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v + self.k_scale + self.v_scale)

    def ensure_capacity(self, needed: int) -> None:
        """Grow the buffers (keeping their contents) so positions [0, needed) fit."""
        if needed <= self.capacity:
            return
        self._reallocate(_rounded(needed))

    def shrink_to(self, needed: int) -> None:
        """Give back the room past `needed` positions (rounded up to the growth step); tokens stored
        past it are forgotten. A no-op when the buffers are no bigger than that."""
        new_cap = _rounded(max(needed, 1))
        if new_cap >= self.capacity:
            return
        self.truncate(min(self.length, new_cap))
        self._reallocate(new_cap)

    def _reallocate(self, new_cap: int) -> None:
        a = self.args
        shape = (self.batch, a.kv_dim // a.head_dim, new_cap, a.head_dim)
        keep = self.length

        def grown(old: list[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
            new = []
            for layer in range(a.n_layers):
                t = torch.empty(shape, device=self.device, dtype=dtype)
                if keep:
                    t[:, :, :keep] = old[layer][:, :, :keep]
                new.append(t)
            return new

        self.k, self.v = grown(self.k, shape, self.dtype), grown(self.v, shape, self.dtype)
        if self.quantized:
            self.k_scale = grown(self.k_scale, shape[:3], torch.float32)
            self.v_scale = grown(self.v_scale, shape[:3], torch.float32)
        self.capacity = new_cap

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[KVView, KVView]:
        """Store k/v (B, Hk, T, D) at positions [start, start+T); return views of [0, start+T)."""
        end = start + k.shape[2]
        assert end <= self.capacity, f"cache write to {end} past capacity {self.capacity}"
        if not self.quantized:
            self.k[layer][:, :, start:end] = k
            self.v[layer][:, :, start:end] = v
        else:
            for values, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
                values[layer][:, :, start:end], scales[layer][:, :, start:end] = quantize_rows(x)
        return self.view(layer, end)

    def write_at(self, layer: int, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v (B, Hk, 1, D) at the position held by the (1,) device tensor `pos` (no host sync:
        what a captured CUDA graph needs)."""
        if not self.quantized:
            self.k[layer].index_copy_(2, pos, k)
            self.v[layer].index_copy_(2, pos, v)
            return
        for values, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            q, s = quantize_rows(x)
            values[layer].index_copy_(2, pos, q)
            scales[layer].index_copy_(2, pos, s)

    def view(self, layer: int, end: int | None = None) -> tuple[KVView, KVView]:
        """K and V of positions [0, end) (all the capacity when None), as stored."""
        end = self.capacity if end is None else end
        if not self.quantized:
            return self.k[layer][:, :, :end], self.v[layer][:, :, :end]
        return (
            Int8KV(self.k[layer][:, :, :end], self.k_scale[layer][:, :, :end]),
            Int8KV(self.v[layer][:, :, :end], self.v_scale[layer][:, :, :end]),
        )

    def copy_prefix(self, other: KVCache, length: int) -> None:
        """Hold `other`'s first `length` positions (same model and storage dtype), and nothing else."""
        assert other.dtype == self.dtype and other.args == self.args, "caches of different models or dtypes"
        self.truncate(0)
        self.ensure_capacity(length)
        pairs = [(self.k, other.k), (self.v, other.v), (self.k_scale, other.k_scale), (self.v_scale, other.v_scale)]
        for mine, theirs in pairs:
            for layer in range(len(mine)):
                mine[layer][:, :, :length] = theirs[layer][:, :, :length]
        self.tokens = list(other.tokens[:length])

    def truncate(self, length: int) -> None:
        """Forget everything from position `length` on (the buffers are simply overwritten later)."""
        del self.tokens[length:]
