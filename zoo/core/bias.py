"""What a kernel's `bias` argument may be: a tensor, or a lazy `AttentionBias` that builds the additive
logits for all query rows (`dense`) or for rows a..b at a time (`rows`), so a chunked kernel never holds
(B, H, T, S) at once. Position schemes (zoo.core.positions) hand kernels these; `ExtendedBias` adds a
window mask or a second bias (ALiBi over the relative term) on top of another one."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class AttentionBias:
    """A lazily built additive bias on the scaled logits, for T queries at positions S - T .. S - 1.

    `dense()` is the whole (B|1, H|1, T, S) bias; `rows(a, b)` the bias of query rows a .. b - 1 over
    the keys a causal row there may see, 0 .. S - T + b - 1, so a chunking kernel never builds more
    than one chunk. `masks_future=True` promises -inf on every key j > S - T + i already (the skew of
    relative attention produces it for free), so a causal kernel need not mask a second time.
    """

    masks_future: bool = False

    def dense(self) -> Tensor:
        raise NotImplementedError

    def rows(self, a: int, b: int) -> Tensor:
        t, s = self.shape
        return self.dense()[..., a:b, :s - t + b]

    @property
    def shape(self) -> tuple[int, int]:
        """(T, S): query rows and keys this bias is for."""
        raise NotImplementedError


class BlockwiseBias(AttentionBias):
    """An `AttentionBias` the fused CPU path of `chunked` can build and differentiate block by block.

    A block is one batch row `bi`, heads h0 .. h1 - 1 and query rows a .. z - 1 over their visible keys
    0 .. S - T + z - 1. The kernel calls `prepare` once per pass, then `block` for each block and, in
    backward, `block_backward` right after the same block's `block` (so a bias may keep that block's
    intermediates in its state); `input_grads` returns the gradients of `inputs()`, the tensors the
    bias is built from other than the kernel's q (a query-dependent bias adds its q gradient into `dqb`).
    """

    def inputs(self) -> tuple[Tensor, ...]:
        return ()

    def prepare(self, s: int, heads: int, rows: int, *, grad: bool) -> Any:
        raise NotImplementedError

    def block(self, state: Any, qb: Tensor, bi: int, h0: int, h1: int, a: int, z: int) -> Tensor:
        """(h1 - h0, z - a, S - T + z) bias of the block; qb (h1 - h0, z - a, D) its queries."""
        raise NotImplementedError

    def block_backward(self, state: Any, ds: Tensor, qb: Tensor, dqb: Tensor, bi: int, h0: int, h1: int,
                       a: int, z: int) -> None:
        raise NotImplementedError

    def input_grads(self, state: Any) -> tuple[Tensor | None, ...]:
        return ()


class ExtendedBias(AttentionBias):
    """`inner` (an `AttentionBias` or None) plus an additive term `extra(a, z)`: the (B|1, H|1, z - a, S - T + z)
    term of query rows a .. z - 1 over the keys they may see. What the sliding window (`window_extra`: 0 or
    -inf) and a second position bias (ALiBi on top of the relative term) add onto a bias, built by rows so that
    a chunking kernel still builds one chunk at a time. `masks_future` if either part already masks the future.
    """

    def __init__(self, inner: AttentionBias | None, extra: Any, shape: tuple[int, int], *,
                 extra_masks_future: bool) -> None:
        self.inner, self.extra, self._shape = inner, extra, shape
        self.masks_future = extra_masks_future or (inner is not None and inner.masks_future)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def dense(self) -> Tensor:
        t = self._shape[0]
        return self.extra(0, t) if self.inner is None else self.inner.dense() + self.extra(0, t)

    def rows(self, a: int, b: int) -> Tensor:
        return self.extra(a, b) if self.inner is None else self.inner.rows(a, b) + self.extra(a, b)


class ExtendedBlockwiseBias(ExtendedBias, BlockwiseBias):
    """`ExtendedBias` over a `BlockwiseBias`: the fused path adds the extra term onto each block in place (the
    term holds no parameter: the inner bias's backward is unchanged, dS is its gradient too)."""

    inner: BlockwiseBias

    def inputs(self) -> tuple[Tensor, ...]:
        return self.inner.inputs()

    def prepare(self, s: int, heads: int, rows: int, *, grad: bool) -> Any:
        return self.inner.prepare(s, heads, rows, grad=grad)

    def block(self, state: Any, qb: Tensor, bi: int, h0: int, h1: int, a: int, z: int) -> Tensor:
        extra = self.extra(a, z)  # (B|1, H|1, z - a, end), or fewer leading dims
        extra = extra.view((1,) * (4 - extra.dim()) + tuple(extra.shape))  # (B|1, H|1, z - a, end)
        extra = extra[bi if extra.shape[0] > 1 else 0]  # (H|1, z - a, end)
        return self.inner.block(state, qb, bi, h0, h1, a, z).add_(extra[h0:h1] if extra.shape[0] > 1 else extra)

    def block_backward(self, state: Any, ds: Tensor, qb: Tensor, dqb: Tensor, bi: int, h0: int, h1: int,
                       a: int, z: int) -> None:
        self.inner.block_backward(state, ds, qb, dqb, bi, h0, h1, a, z)

    def input_grads(self, state: Any) -> tuple[Tensor | None, ...]:
        return self.inner.input_grads(state)


def extend_bias(inner: Bias, extra: Any, t: int, s: int, *, extra_masks_future: bool = False) -> ExtendedBias:
    """`inner` (None, a tensor or an `AttentionBias`) plus `extra` (see `ExtendedBias`)."""
    if isinstance(inner, Tensor):
        inner = TensorBias(inner, t, s)
    cls = ExtendedBlockwiseBias if isinstance(inner, BlockwiseBias) else ExtendedBias
    return cls(inner, extra, (t, s), extra_masks_future=extra_masks_future)


def window_extra(t: int, s: int, window: int, device: torch.device, dtype: torch.dtype) -> Any:
    """The sliding window (Beltagy et al. 2020, Longformer; Mistral 7B) as an `ExtendedBias` term: query i, at
    position S - T + i, sees keys S - T + i - window + 1 .. S - T + i; -inf on the others (the future too)."""
    def extra(a: int, z: int) -> Tensor:
        end = s - t + z
        dist = (torch.arange(a, z, device=device) + (s - t)).unsqueeze(1) - torch.arange(end, device=device)
        allowed = (dist >= 0) & (dist < window)  # (z - a, end)
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    return extra


class TensorBias(AttentionBias):
    """A dense bias tensor (broadcastable to (B, H, T, S)) seen through the `AttentionBias` interface."""

    def __init__(self, tensor: Tensor, t: int, s: int) -> None:
        self.tensor, self._shape = tensor, (t, s)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def dense(self) -> Tensor:
        return self.tensor

    def rows(self, a: int, b: int) -> Tensor:
        t, s = self._shape
        x = self.tensor
        x = x if x.shape[-2] == 1 else x[..., a:b, :]  # a broadcast dimension stays broadcast
        return x if x.shape[-1] == 1 else x[..., :s - t + b]


Bias = Tensor | AttentionBias | None
