"""Key/value cache for incremental decoding: one preallocated buffer pair per layer, filled in place."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer key/value cache for incremental decoding.

    Preallocates (B, Hkv, max_len, D) buffers once and fills them in place, so decoding a token costs
    no reallocation. `pos` is the number of positions already seen (shared by all layers). Hkv is the
    model's key/value heads (`n_kv_head`): grouped-query attention stores H / Hkv times less.

    Rolling mode (`window=W`, sliding-window attention, and max_len > 2W): the buffers hold 2W positions
    whatever the length generated, and keep the last W - 1 positions the next query can see. Keys stay in
    chronological order: when the next write would overflow, the kept W - 1 are moved to the front (one
    copy of W - 1 positions every W + 1 tokens decoded, amortised O(1)) rather than wrapping around as a ring
    would, so `update` always returns a contiguous (B, Hkv, S, D) run of the last S positions and every
    kernel and position bias sees an ordinary prefix: the biases depend on distances only, which local
    coordinates give exactly. A prompt longer than the buffer attends over a temporary concatenation.

    Static mode (`make_static`, used by compiled decoding): the position is also kept as a 0-d int64
    tensor `position`, `update` writes at that tensor position and returns the WHOLE buffers, and
    attention masks the keys not written yet (`attention_mask`). Every step then has the same shapes
    and no Python int that changes, so a `torch.compile`d step compiles once, not once per position.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype, *, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"KVCache window must be a positive number of positions or None, got {window}")
        self.window = window if window is not None and max_len > 2 * window else None  # rolling mode
        size = max_len if self.window is None else 2 * window
        shape = (batch, n_head, size, head_dim)  # n_head: the key/value heads
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len, self.device = max_len, torch.device(device)
        self.pos = 0
        self.begin = self.fill = 0  # rolling mode: buffer slots begin .. fill - 1 hold the kept positions
        self.position: Tensor | None = None  # 0-d int64 copy of `pos`, in static mode only

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the key and value buffers of all layers."""
        return sum(x.untyped_storage().nbytes() for x in self.k + self.v)

    def _roll_plan(self, t: int) -> tuple[str, int, int]:
        """Rolling mode: how T new positions are stored ("append", "shift" or "long") and the (begin, fill)
        the buffers hold afterwards, before dropping what no later query sees (the same for every layer)."""
        size, n = self.k[0].shape[2], self.fill - self.begin
        if self.fill + t <= size:
            return "append", self.begin, self.fill + t
        if n + t <= size:
            return "shift", 0, n + t
        keep = min(self.window - 1, n + t)
        return "long", 0, keep

    @property
    def static(self) -> bool:
        return self.position is not None

    def make_static(self) -> None:
        """Switch to static mode (idempotent). Zeroes the unwritten positions once: masked keys still
        enter the products (0 · v must not be NaN, which uninitialised memory may hold)."""
        if self.position is not None:
            return
        if self.window is not None:
            raise ValueError("a rolling (sliding-window) KV cache has no fixed-shape mode; decode with "
                             "compile=False, or allocate a cache of at most 2 * window positions")
        for buf in self.k + self.v:
            buf[:, :, self.pos:].zero_()
        self.position = torch.tensor(self.pos, dtype=torch.long, device=self.device)  # n_layer may be 0

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
        if self.window is not None:
            return self._update_rolling(layer, k, v)
        end = self.pos + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions requested, cache holds {self.max_len}")
        kb, vb = self.k[layer], self.v[layer]
        kb[:, :, self.pos:end] = k
        vb[:, :, self.pos:end] = v
        return kb[:, :, :end], vb[:, :, :end]

    def _update_rolling(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        t, begin, fill = k.shape[-2], self.begin, self.fill
        kb, vb = self.k[layer], self.v[layer]
        how, _, end = self._roll_plan(t)
        if how == "append":
            kb[:, :, fill:end], vb[:, :, fill:end] = k, v
            return kb[:, :, begin:end], vb[:, :, begin:end]  # (B, Hkv, S, D), S = kept + T
        if how == "shift":  # kept positions to the front (clone: the two ranges may overlap)
            n = fill - begin
            kb[:, :, :n], vb[:, :, :n] = kb[:, :, begin:fill].clone(), vb[:, :, begin:fill].clone()
            kb[:, :, n:end], vb[:, :, n:end] = k, v
            return kb[:, :, :end], vb[:, :, :end]
        ks = torch.cat([kb[:, :, begin:fill], k], 2)  # (B, Hkv, kept + T, D): a temporary, this call only
        vs = torch.cat([vb[:, :, begin:fill], v], 2)
        kb[:, :, :end], vb[:, :, :end] = ks[:, :, ks.shape[2] - end:], vs[:, :, vs.shape[2] - end:]
        return ks, vs

    def restart(self) -> None:
        """Start again at position 0 (ImageGPT's local cache at every patch): the old entries stay and are overwritten
        or, in static mode, masked."""
        self.pos = self.begin = self.fill = 0
        if self.position is not None:
            self.position.zero_()

    def advance(self, t: int) -> None:
        """Called once per forward pass after every layer has written its `t` new positions."""
        if self.window is not None:
            _, begin, fill = self._roll_plan(t)
            self.begin, self.fill = max(begin, fill - (self.window - 1)), fill  # what the next query can see
        self.pos += t
        if self.position is not None:
            self.position.add_(t)

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (speculative decoding's rollback of rejected draft tokens):
        the next `update` writes at `length`. The stale keys and values past it stay in the buffers but are
        never returned (a plain `update` returns the prefix up to `pos`; static mode masks keys past
        `position`). A rolling cache has dropped positions it cannot get back, so it refuses."""
        if not 0 <= length <= self.pos:
            raise ValueError(f"KVCache.truncate: length must be in 0..{self.pos} (the positions held), got {length}")
        if self.window is not None:
            raise ValueError("a rolling (sliding-window) KV cache cannot be truncated: it has dropped the "
                             "positions a rollback would return to")
        self.pos = length
        if self.position is not None:
            self.position.fill_(length)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (e.g. after duplicating rows for guidance)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]
