"""Key/value cache for incremental decoding: one preallocated buffer pair per layer, filled in place."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer key/value cache for incremental decoding.

    Preallocates (B, H, max_len, D) buffers once and fills them in place, so decoding a token costs
    no reallocation. `pos` is the number of positions already stored (shared by all layers).

    Static mode (`make_static`, used by compiled decoding): the position is also kept as a 0-d int64
    tensor `position`, `update` writes at that tensor position and returns the WHOLE buffers, and
    attention masks the keys not written yet (`attention_mask`). Every step then has the same shapes
    and no Python int that changes, so a `torch.compile`d step compiles once, not once per position.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.pos = 0
        self.position: Tensor | None = None  # 0-d int64 copy of `pos`, in static mode only

    @property
    def static(self) -> bool:
        return self.position is not None

    def make_static(self) -> None:
        """Switch to static mode (idempotent). Zeroes the unwritten positions once: masked keys still
        enter the products (0 · v must not be NaN, which uninitialised memory may hold)."""
        if self.position is not None:
            return
        for buf in self.k + self.v:
            buf[:, :, self.pos:].zero_()
        self.position = torch.tensor(self.pos, dtype=torch.long, device=self.k[0].device)

    def positions(self, t: int) -> Tensor:
        """Static mode: (T,) absolute positions of the T new tokens, position .. position + T - 1."""
        if t == 1:
            return self.position.view(1)
        return self.position + torch.arange(t, device=self.position.device)

    def attention_mask(self, t: int) -> Tensor:
        """Static mode: (T, max_len) bool, True where new token i (at position + i) may see key j."""
        keys = torch.arange(self.max_len, device=self.position.device)
        return keys <= self.positions(t).unsqueeze(1)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, H, T, D) for `layer`; return the whole stored prefix (B, H, pos + T, D).

        In static mode return the whole buffers (B, H, max_len, D) instead (mask with `attention_mask`);
        the caller checks that pos + T <= max_len (a tensor position cannot be checked without a sync).
        """
        if self.position is not None:
            at = self.positions(k.shape[-2])
            self.k[layer].index_copy_(2, at, k)
            self.v[layer].index_copy_(2, at, v)
            return self.k[layer], self.v[layer]
        end = self.pos + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions requested, cache holds {self.max_len}")
        kb, vb = self.k[layer], self.v[layer]
        kb[:, :, self.pos:end] = k
        vb[:, :, self.pos:end] = v
        return kb[:, :, :end], vb[:, :, :end]

    def advance(self, t: int) -> None:
        """Called once per forward pass after every layer has written its `t` new positions."""
        self.pos += t
        if self.position is not None:
            self.position.add_(t)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (e.g. after duplicating rows for guidance)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]
