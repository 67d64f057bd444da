"""Attention kernels: the softmax core of attention, one signature, no knowledge of positions.

Shape legend used throughout `zoo.core`:
    B batch, T query length, S key length (cached prefix + T), H heads, D head dim, C model width.

The kernel contract (../shared/DESIGN.md)::

    kernel(q, k, v, *, bias, causal, dropout_p, scale) -> out
    q (B, H, T, D); k, v (B, Hkv, S, D); out (B, H, T, D)
    out = softmax(q kᵀ · scale + bias, causal mask) v,   scale None = 1/sqrt(D)

Grouped-query attention (Ainslie et al. 2023, "GQA"): k and v may have Hkv heads, Hkv dividing H; key/value
head g serves query heads g·H/Hkv .. (g + 1)·H/Hkv - 1 (`repeat_kv`). Hkv = 1 is multi-query attention
(Shazeer 2019). Every kernel accepts it; `math` repeats k and v, `sdpa` passes `enable_gqa`.

`bias` is None, a Tensor broadcastable to (B, H, T, S), or an `AttentionBias`: a lazy bias that a
kernel may materialise whole (`dense`), by query rows (`rows`) or, if it is a `BlockwiseBias`, block
by block with its own backward (`chunked`'s fused CPU path). Position schemes that alter the logits
(zoo.core.positions) reach every kernel this way, so a kernel never knows which scheme it serves.

`causal=True` means query i (the i-th of the T new positions, which sits at absolute position
S - T + i) may attend to keys 0 .. S - T + i. This "bottom-right aligned" convention is what makes
the same call correct for a full sequence (S == T) and for cached decoding (S > T).

Kernels (`KERNELS`, resolved once by `get_kernel` when a module is built, never by name per call):
- `math`: the reference and the oracle in tests; materialises everything, float32 inside.
- `sdpa`: `torch.nn.functional.scaled_dot_product_attention`; a bias becomes its float mask.
- `chunked`: causal attention with a bias by query chunks (memory O(chunk · S), not O(T · S)); on
  CPU in float32/64 a `BlockwiseBias` goes through plain matrix products with a recomputing backward
  (`_ChunkedAttention`), elsewhere each chunk's bias rows go to SDPA. Without a bias, or not causal,
  it is `sdpa`. A kernel may compute faster, never differently: all three equal `math` in tests.
A config may also name `auto` (`KERNEL_NAMES`): the kernel its position bias runs best on, decided once
when the attention module is built (`zoo.core.positions.resolve_kernel`).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.core.bias import (  # noqa: F401 - the bias types are part of the kernel contract, importable here
    AttentionBias,
    Bias,
    BlockwiseBias,
    ExtendedBias,
    ExtendedBlockwiseBias,
    TensorBias,
    extend_bias,
    window_extra,
)


class Kernel(Protocol):
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Bias, causal: bool, dropout_p: float,
                 scale: float | None) -> Tensor: ...


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """Boolean (T, S) mask, True where query i may see key j (bottom-right aligned)."""
    i = torch.arange(t, device=device).unsqueeze(1) + (s - t)
    j = torch.arange(s, device=device).unsqueeze(0)
    return j <= i


def repeat_kv(x: Tensor, n_head: int) -> Tensor:
    """k or v (B, Hkv, S, D) -> (B, H, S, D) for grouped-query attention: key/value head g repeated for its
    H / Hkv query heads (a copy; none when Hkv == H)."""
    b, hkv, s, d = x.shape
    if hkv == n_head:
        return x
    if n_head % hkv:
        raise ValueError(f"grouped-query attention: {hkv} key/value heads do not divide {n_head} query heads")
    return x[:, :, None].expand(b, hkv, n_head // hkv, s, d).reshape(b, n_head, s, d)  # (B, H, S, D)


def dense_bias(bias: Bias) -> Tensor | None:
    """The bias as a tensor broadcastable to (B, H, T, S), or None."""
    return bias.dense() if isinstance(bias, AttentionBias) else bias


def math_attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Bias = None, causal: bool = False,
                   dropout_p: float = 0.0, scale: float | None = None) -> Tensor:
    """Reference kernel: softmax(q kᵀ · scale + bias, masked) v, in float32 at least (float64 stays float64:
    the oracle for float64 tests)."""
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])  # (B, H, S, D)
    dt = torch.promote_types(q.dtype, torch.float32)
    att = (q.to(dt) @ k.to(dt).transpose(-2, -1)) * scale  # (B, H, T, S)
    if bias is not None:
        att = att + dense_bias(bias).to(dt)
    if causal:  # masking again where the bias already holds -inf changes nothing
        att = att.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    att = att.softmax(dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return (att @ v.to(dt)).to(q.dtype)  # (B, H, T, D)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Bias = None, causal: bool = False,
                   dropout_p: float = 0.0, scale: float | None = None) -> Tensor:
    """Fast kernel through PyTorch's fused scaled-dot-product attention."""
    t, s = q.shape[-2], k.shape[-2]
    gqa = k.shape[1] != q.shape[1]  # SDPA's own grouped-query support: k, v are not copied per query head
    if bias is None:
        if not causal or t == s:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale,
                                                  enable_gqa=gqa)
        if t == 1:  # one new token sees the whole cache: no mask at all
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
        mask = causal_mask(t, s, q.device)  # SDPA's is_causal is top-left aligned; ours is bottom-right
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale,
                                              enable_gqa=gqa)
    masked = isinstance(bias, AttentionBias) and bias.masks_future
    bias = dense_bias(bias).to(q.dtype)
    if causal and not masked:  # one more pass over (B, H, T, S), skipped when the bias holds the mask
        bias = bias.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)


# Bytes of bias built at a time by `chunked`, per device type. On CPU a few MiB stay in cache and below
# glibc's mmap threshold (fresh large buffers cost page faults that took as long as the matmul filling
# them); on CUDA fewer, larger chunks win (launch overhead): on an H200 at T=4096, 1024-row chunks ran
# forward+backward 2.5x causal SDPA, 256-row chunks 5.3x. benchmarks/relative_attention.py (--chunk).
CHUNK_BYTES: dict[str, int] = {"cpu": 8 * 2**20, "cuda": 128 * 2**20}
MIN_CHUNK = 64  # query rows; smaller chunks pay more per-call overhead than they save
# The fused path's chunks: past 128 rows the corner of the upper triangle each chunk computes and
# throws away (chunk / 2 rows of keys) cost more than fewer calls save (measured at T = 1024 .. 4096).
MAX_MATMUL_CHUNK = 128
# Bytes of one block's (heads, rows, keys) logits on the fused path: the block's five passes over them
# (product, add, softmax, product; more in backward) stay in a core's L2 cache when they fit.
MATMUL_BLOCK_BYTES = 2**20


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Bias = None, causal: bool = False,
                      dropout_p: float = 0.0, scale: float | None = None, chunk: int | None = None,
                      path: Literal["auto", "matmul", "kernel"] = "auto") -> Tensor:
    """Causal attention with a bias by query chunks; `sdpa` without a bias or when not causal.

    Rows a .. b - 1 sit at positions S - T + a .. S - T + b - 1 and see no key beyond, so each chunk
    only touches keys :S - T + b: together the chunks skip the masked half of the keys, and what is
    alive at any time is (B, H, chunk, S) instead of (B, H, T, S). `chunk` defaults to as many rows as
    fit CHUNK_BYTES of logits (at least MIN_CHUNK; at most MAX_MATMUL_CHUNK on the matmul path).

    - "matmul" (`_ChunkedAttention`): the block's bias (`BlockwiseBias.block`), scale · Q Kᵀ added onto
      it in one `baddbmm`, an in-place softmax and one product with V; backward recomputes each block
      (nothing O(T·S) is saved). Float32/float64 on CPU, dropout 0, a `BlockwiseBias`, eager mode.
    - "kernel": each chunk's `rows` handed to SDPA as its float mask; any device, dtype, dropout, bias.

    "auto" takes "matmul" where it applies (faster and far smaller in backward there:
    benchmarks/relative_attention_rounds-7.md), else "kernel". Results do not depend on `chunk` or `path`
    beyond floating-point rounding. Extra keyword options keep the kernel signature: bind them with
    `functools.partial(chunked_attention, chunk=..., path=...)`.
    """
    b, h, t, d = q.shape
    s = k.shape[-2]
    scale = d**-0.5 if scale is None else scale
    if path not in ("auto", "matmul", "kernel"):
        raise ValueError(f"chunked_attention: path must be 'auto', 'matmul' or 'kernel', got {path!r}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunked_attention: chunk must be a positive number of rows, got {chunk}")
    if bias is None or not causal or (t == 1 and path != "matmul"):
        # t == 1 (decoding): one query row sees every key, nothing to chunk or skip; the bias row goes to SDPA
        # in one call for all rows and heads, where the fused path loops over batch rows (per-call overhead).
        return sdpa_attention(q, k, v, bias=bias, causal=causal, dropout_p=dropout_p, scale=scale)
    bias = bias if isinstance(bias, AttentionBias) else TensorBias(bias, t, s)
    k, v = repeat_kv(k, h), repeat_kv(v, h)  # (B, H, S, D): the block loops index heads of q, k, v alike
    # Not under torch.compile: the matmul path is an eager Python loop over (batch, heads, chunk) blocks
    # that the compiler would unroll into one graph per length; the kernel path compiles as one graph.
    matmul_ok = (q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and dropout_p == 0.0
                 and isinstance(bias, BlockwiseBias) and not torch.compiler.is_compiling())
    if path == "matmul" and not matmul_ok:
        raise ValueError("chunked_attention: path='matmul' needs a CPU float32/float64 input, dropout_p=0, "
                         f"a BlockwiseBias and eager mode; got device {q.device.type}, dtype {q.dtype}, "
                         f"dropout_p={dropout_p}, bias {type(bias).__name__}: use path='auto' or 'kernel'")
    use_matmul = path == "matmul" or (path == "auto" and matmul_ok)
    if chunk is None:
        budget = CHUNK_BYTES.get(q.device.type, CHUNK_BYTES["cpu"])
        per_batch_row = use_matmul  # the matmul path runs one batch row at a time
        chunk = max(MIN_CHUNK, budget // ((1 if per_batch_row else b) * h * s * q.element_size()))
        if use_matmul:
            chunk = min(chunk, MAX_MATMUL_CHUNK)
    if use_matmul:
        return _ChunkedAttention.apply(q, k, v, bias, scale, chunk, *bias.inputs())
    outs = []
    for start in range(0, t, chunk):
        stop = min(t, start + chunk)
        end = s - t + stop  # keys 0 .. end - 1 are visible to this chunk
        rows = bias.rows(start, stop).to(q.dtype)  # (B|1, H|1, chunk, end)
        if not bias.masks_future:
            rows = rows.masked_fill(~causal_mask(stop - start, end, q.device), float("-inf"))
        outs.append(F.scaled_dot_product_attention(q[:, :, start:stop], k[:, :, :end], v[:, :, :end],
                                                   attn_mask=rows, dropout_p=dropout_p, scale=scale))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, H, T, D)


def _work_split(h: int, t: int, s: int, chunk: int, itemsize: int) -> tuple[int, int]:
    """(query rows, heads) per block of the matmul path: `chunk` rows, as many heads as fit MATMUL_BLOCK_BYTES."""
    c = min(chunk, t)
    return c, max(1, min(h, MATMUL_BLOCK_BYTES // (c * s * itemsize)))


def _blocks(b: int, h: int, hg: int, t: int, c: int) -> list[tuple[int, int, int, int, int]]:
    """(batch row, first head, end head, first query row, end query row) of every block."""
    return [(bi, h0, min(h, h0 + hg), a, min(t, a + c))
            for bi in range(b) for h0 in range(0, h, hg) for a in range(0, t, c)]


def _block_probs(qc: Tensor, kb: Tensor, bias_block: Tensor, scale: float, ws: Tensor) -> Tensor:
    """Softmax probabilities (Hg, c, end) of one block, in the flat workspace `ws` (reused by every
    block: fresh multi-MiB buffers cost page faults as long as the products filling them)."""
    g, c, end = bias_block.shape
    # logits = scale · q kᵀ + bias; -inf in the bias stays -inf: the causal mask when it masks the future.
    att = torch.baddbmm(bias_block, qc, kb[:, :end].transpose(1, 2), alpha=scale, out=ws[:g * c * end].view(g, c, end))
    torch._softmax(att, -1, False, out=att)  # aten's out= overload, in place: no second (Hg, c, end) buffer
    return att


class _ChunkedAttention(torch.autograd.Function):
    """softmax(scale · Q Kᵀ + bias) V by blocks with plain matrix products, for float32/64 on CPU.

    Each block asks the bias for its (Hg, c, end) logits, adds scale · Q Kᵀ onto them in one `baddbmm`,
    normalises in place and multiplies by V, on the keys 0 .. end of the block only: the masked upper
    triangle is skipped up to one chunk's corner, and nothing of size T × S is ever alive. Backward
    recomputes each block's probabilities (as FlashAttention does) instead of saving them, so the saved
    state is q, k, v, the output and the bias's own inputs. Blocks are one batch row, `chunk` query rows
    and as many heads as keep a block's logits within MATMUL_BLOCK_BYTES (`_work_split`).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: BlockwiseBias, scale: float, chunk: int,
                *bias_inputs: Tensor) -> Tensor:
        b, h, t, d = q.shape
        s = k.shape[-2]
        c, hg = _work_split(h, t, s, chunk, q.element_size())
        state = bias.prepare(s, hg, c, grad=False)
        ws = q.new_empty(hg * c * s)
        out = torch.empty_like(q)
        for bi, h0, h1, a, z in _blocks(b, h, hg, t, c):
            qc = q[bi, h0:h1, a:z]  # (Hg, c, D)
            att = _block_probs(qc, k[bi, h0:h1], bias.block(state, qc, bi, h0, h1, a, z), scale, ws)
            torch.bmm(att, v[bi, h0:h1, :s - t + z], out=out[bi, h0:h1, a:z])  # (Hg, c, D)
        ctx.save_for_backward(q, k, v, out)
        ctx.bias, ctx.scale, ctx.chunk = bias, scale, chunk
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out = ctx.saved_tensors
        bias, scale, chunk = ctx.bias, ctx.scale, ctx.chunk
        b, h, t, d = q.shape
        s = k.shape[-2]
        c, hg = _work_split(h, t, s, chunk, q.element_size())
        state = bias.prepare(s, hg, c, grad=True)
        ws_a, ws_g = q.new_empty(hg * c * s), q.new_empty(hg * c * s)
        dout = dout.contiguous()
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, T, 1): rowsum(dO ∘ O) = Σ_j A_ij dA_ij
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for bi, h0, h1, a, z in _blocks(b, h, hg, t, c):
            n, end, g = z - a, s - t + z, h1 - h0
            qc, kb, vb = q[bi, h0:h1, a:z], k[bi, h0:h1], v[bi, h0:h1]
            att = _block_probs(qc, kb, bias.block(state, qc, bi, h0, h1, a, z), scale, ws_a)
            doc = dout[bi, h0:h1, a:z]  # (Hg, c, D)
            dv[bi, h0:h1, :end].baddbmm_(att.transpose(1, 2), doc)
            ds = torch.bmm(doc, vb[:, :end].transpose(1, 2), out=ws_g[:g * n * end].view(g, n, end))  # dA
            ds.sub_(delta[bi, h0:h1, a:z]).mul_(att)  # dS = A ∘ (dA - delta): the softmax backward
            dq[bi, h0:h1, a:z].baddbmm_(ds, kb[:, :end], alpha=scale)
            dk[bi, h0:h1, :end].baddbmm_(ds.transpose(1, 2), qc, alpha=scale)
            bias.block_backward(state, ds, qc, dq[bi, h0:h1, a:z], bi, h0, h1, a, z)  # dS is dBias too
        return dq, dk, dv, None, None, None, *bias.input_grads(state)


KERNELS: dict[str, Kernel] = {"math": math_attention, "sdpa": sdpa_attention, "chunked": chunked_attention}
# What a config's `kernel` may name: a kernel, or "auto", the best kernel for the module's position bias
# (`zoo.core.positions.resolve_kernel`: `chunked` for the relative bias, `sdpa` otherwise).
KERNEL_NAMES: tuple[str, ...] = ("auto", *KERNELS)


def get_kernel(kernel: str | Kernel) -> Kernel:
    """Resolve a kernel name to its function, once, when a module is built; a callable passes through."""
    if callable(kernel):
        return kernel
    if kernel not in KERNELS:
        hint = ("; relative attention is a position bias, not a kernel: zoo.core.positions.RelativePositionBias "
                "(a model config's bias='relative')" if kernel == "relative" else
                "; 'auto' is resolved against a position bias by zoo.core.positions.resolve_kernel"
                if kernel == "auto" else "")
        raise ValueError(f"unknown attention kernel {kernel!r}; accepted: {list(KERNELS)}{hint}")
    return KERNELS[kernel]

