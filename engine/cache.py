"""The KV cache: preallocated per-layer buffers, written in place at explicit positions."""

from __future__ import annotations

import torch

from engine.config import ModelArgs

_GROWTH = 256  # capacity grows in steps of this many positions, so growing is rare


def _rounded(positions: int) -> int:
    return -(-positions // _GROWTH) * _GROWTH


class KVCache:
    """K and V for every layer, shaped (batch, n_kv_heads, capacity, head_dim).

    `tokens` lists the ids whose keys and values are stored in positions [0, len(tokens)); the
    generator trims it to reuse a shared prefix between requests.
    """

    def __init__(
        self, args: ModelArgs, capacity: int, device: torch.device | str, dtype: torch.dtype, batch: int = 1
    ) -> None:
        self.args = args
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch = batch
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.tokens: list[int] = []
        self.ensure_capacity(capacity)

    @property
    def length(self) -> int:
        return len(self.tokens)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

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
        shape = (self.batch, a.n_kv_heads, new_cap, a.head_dim)
        keep = self.length
        new_k, new_v = [], []
        for layer in range(a.n_layers):
            k = torch.empty(shape, device=self.device, dtype=self.dtype)
            v = torch.empty(shape, device=self.device, dtype=self.dtype)
            if keep:
                k[:, :, :keep] = self.k[layer][:, :, :keep]
                v[:, :, :keep] = self.v[layer][:, :, :keep]
            new_k.append(k)
            new_v.append(v)
        self.k, self.v, self.capacity = new_k, new_v, new_cap

    def write(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, Hk, T, D) at positions [start, start+T); return views of [0, start+T)."""
        end = start + k.shape[2]
        assert end <= self.capacity, f"cache write to {end} past capacity {self.capacity}"
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def truncate(self, length: int) -> None:
        """Forget everything from position `length` on (the buffers are simply overwritten later)."""
        del self.tokens[length:]
