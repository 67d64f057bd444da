"""The shared attention core: one `MultiHeadAttention` module and interchangeable kernels.

Shape legend used throughout this file:
    B batch, T query length, S key length (cached prefix + T), H heads, D head dim, C model width.

Every kernel has the same signature::

    kernel(q, k, v, *, bias, causal, dropout_p, scale) -> out
    q (B, H, T, D); k, v (B, H, S, D); bias broadcastable to (B, H, T, S) or None; out (B, H, T, D)

`causal=True` means query i (the i-th of the T new positions, which sits at absolute position
S - T + i) may attend to keys 0 .. S - T + i. This "bottom-right aligned" convention is what makes
the same call correct for a full sequence (S == T) and for cached decoding (S > T).

`math` is the reference kernel and the oracle in tests; `sdpa` is the fast path through
`torch.nn.functional.scaled_dot_product_attention`. Position schemes that alter the logits (the
Music Transformer's relative attention) supply an additive `bias` computed inside this module from
a config field, so callers never change when a new scheme is added.

Relative attention (`kernel="relative"`; Huang et al. 2018, "Music Transformer: Generating Music with
Long-Term Structure", section 3, relative positional self-attention and its memory-efficient
implementation): `MultiHeadAttention` owns one learned embedding per relative distance and head,
`er` (H, L, D) with L = `max_relative_position`. `relative_self_attention` builds the relative
logits S_rel with the paper's "skew" (`relative_logits`), folds the causal mask into them and either
hands them to the `relative` kernel as the additive bias or, on CPU in float32/64, adds Q Kᵀ onto them
and finishes the attention with plain matrix products per query chunk (`_ChunkedRelativeAttention`,
faster there and with a recomputing backward), so that attention is exactly the paper's
RelativeAttention = softmax((Q Kᵀ + S_rel) / sqrt(D)) V, the 1/sqrt(D) applied to the sum.
Distances r >= L get a zero embedding, as in the paper's reference implementation
(tensor2tensor's `get_relative_embeddings_left` pads the table with zeros), rather than Shaw et
al.'s clipping to the edge embedding: beyond the window a key is weighed by content alone, which
keeps the model the paper measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KernelName = Literal["math", "sdpa", "relative"]


class Kernel(Protocol):
    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        bias: Tensor | None,
        causal: bool,
        dropout_p: float,
        scale: float | None,
    ) -> Tensor: ...


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """Boolean (T, S) mask, True where query i may see key j (bottom-right aligned)."""
    i = torch.arange(t, device=device).unsqueeze(1) + (s - t)
    j = torch.arange(s, device=device).unsqueeze(0)
    return j <= i


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Reference kernel: softmax(q kᵀ · scale + bias, masked) v, computed in float32 for stability."""
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, S)
    if bias is not None:
        att = att + bias.float()
    if causal:
        att = att.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    att = att.softmax(dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return (att @ v.float()).to(q.dtype)  # (B, H, T, D)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Fast kernel through PyTorch's fused scaled-dot-product attention."""
    t, s = q.shape[-2], k.shape[-2]
    if bias is None:
        if not causal or t == s:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
        if t == 1:  # one new token sees the whole cache: no mask at all
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        mask = causal_mask(t, s, q.device)  # SDPA's is_causal is top-left aligned; ours is bottom-right
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    bias = bias.to(q.dtype)
    if causal:
        bias = bias.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


def relative_logits(q: Tensor, er: Tensor, s_len: int) -> Tensor:
    """Music Transformer relative logits S_rel by the skew (Huang et al. 2018, memory-efficient implementation).

    q (B, H, T, D) are the queries at absolute positions p_i = s_len - T + i (the last T of s_len
    positions, as with a KV cache); er (H, L, D) holds er[h, r], the embedding of relative distance
    r = query position - key position, for r = 0 .. L - 1. Returns (B, H, T, s_len) with

        out[b, h, i, j] = q[b, h, i] · er[h, p_i - j]   for 0 <= p_i - j < L
                          0                              for p_i - j >= L  (zero embedding, see module doc)
                          -inf                           for j > p_i       (the causal mask, folded in)

    The paper's skew multiplies Q by the embeddings of the distances only — never Shaw et al.'s
    (T, S, D) tensor of one embedding per pair — pads one column on the left, reshapes and drops the
    first row, which slides every row into place. The upper triangle the skew produces holds entries
    wrapped in from the neighbouring row, which is why the mask must come after the skew; here it is
    written into the padded matrix before the reshape, at the entries that land in that triangle (a
    (T, T) corner), so it costs no pass over the result. The result is a view into one
    (B, H, T, S + 1) buffer — the only O(T·S) memory, and SDPA needs it anyway as its mask.
    """
    b, h, t, d = q.shape
    if s_len < t:
        raise ValueError(f"relative_logits: s_len={s_len} keys for {t} queries; need s_len >= T "
                         "(queries are the last T of s_len positions)")
    if er.dim() != 3 or er.shape[0] != h or er.shape[2] != d:
        raise ValueError(f"relative_logits: er must be (H, L, D) = ({h}, L, {d}), got {tuple(er.shape)}")
    return _skewed_logits(q, _distance_table(er.to(q.dtype), s_len), s_len)


def _distance_table(er: Tensor, s_len: int) -> Tensor:
    """(H, s_len + 1, D): row c holds the embedding of distance s_len - c, zero for distances >= L.

    Row 0 (distance s_len, never a real pair) becomes the skew's pad column. The zero rows let one
    matmul write the whole padded buffer, pad and beyond-window columns included, with no copy; for
    L < S they cost T·(S - L)·D multiply-adds on zeros, never more than Q Kᵀ itself.
    """
    h, n, d = er.shape
    lc = min(n, s_len)  # distances >= s_len never occur
    reversed_rows = torch.arange(lc - 1, -1, -1, device=er.device)  # index_select: flip() ran 10x slower on CPU
    return torch.cat([er.new_zeros(h, s_len + 1 - lc, d), er.index_select(1, reversed_rows)], dim=1)


def _skewed_logits(q: Tensor, table: Tensor, s_len: int) -> Tensor:
    """`relative_logits` for queries at s_len - T .. s_len - 1, from a `_distance_table` of any
    length >= s_len + 1 (its last s_len + 1 rows are the distances s_len .. 0)."""
    b, h, t, _ = q.shape
    rows = table[:, table.shape[1] - 1 - s_len:]  # (H, S + 1, D)
    # Padded layout P (B, H, T, S + 1): column c holds distance S - c for every row. Flattening P and
    # dropping its first T entries leaves a (T, S) view with out[i, j] = P[i, j + T - i], because
    # T + i·S + j = i·(S + 1) + (j + T - i): row i slides left by T - i, which is the skew.
    padded = torch.einsum("bhtd,hcd->bhtc", q, rows)  # (B, H, T, S + 1); batched over H: rows not copied per B
    # P[i, c] with c < T - i is a distance beyond position p_i: after the skew it lands exactly on the
    # future keys j > p_i (the garbage wrapped in from row i + 1); -inf there folds in the causal mask.
    i = torch.arange(t, device=q.device)
    padded[..., :t].masked_fill_(i.unsqueeze(0) < (t - i).unsqueeze(1), float("-inf"))
    return padded.view(b, h, t * (s_len + 1))[:, :, t:].view(b, h, t, s_len)  # (B, H, T, S), a view


def _chunk_probs(qb: Tensor, kb: Tensor, table: Tensor, a: int, z: int, s: int, t: int, scale: float,
                 ws_p: Tensor, ws_a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Softmax probabilities of query rows a .. z - 1 of one batch row, over the keys they can see.

    qb (H, T, D), kb (H, S, D); table: the scaled `_distance_table` (H, S + 1, D). Rows a .. z - 1 sit at
    positions S - T + a .. S - T + z - 1, so keys 0 .. end - 1 (end = S - T + z) are all they see. Returns
    (probabilities (H, c, end), the padded relative logits P (H, c, end + 1), their skewed view (H, c, end),
    the table rows used (H, end + 1, D)); the first two live in the workspaces ws_a, ws_p (flat buffers
    reused by every chunk: fresh multi-MiB buffers cost page faults as long as the products filling them).
    """
    h, c, end = qb.shape[0], z - a, s - t + z
    qc = qb[:, a:z]  # (H, c, D)
    rows = table[:, table.shape[1] - 1 - end:]  # (H, end + 1, D): distances end .. 0
    padded = torch.bmm(qc, rows.transpose(1, 2), out=ws_p[:h * c * (end + 1)].view(h, c, end + 1))
    i = torch.arange(c, device=qb.device)
    padded[..., :c].masked_fill_(i.unsqueeze(0) < (c - i).unsqueeze(1), float("-inf"))  # see _skewed_logits
    rel = padded.view(h, c * (end + 1))[:, c:].view(h, c, end)  # (H, c, end): the skew, a view
    # logits = scale · q kᵀ + S_rel (the table is pre-scaled); -inf in S_rel stays -inf: the causal mask.
    att = torch.baddbmm(rel, qc, kb[:, :end].transpose(1, 2), alpha=scale, out=ws_a[:h * c * end].view(h, c, end))
    torch._softmax(att, -1, False, out=att)  # aten's out= overload, in place: no second (H, c, end) buffer
    return att, padded, rel, rows


# Bytes of one chunk's (heads, rows, keys) logits on the matmul path: the chunk's five passes over them
# (product, add, softmax, product; more in backward) stay in a core's L2 cache when they fit.
MATMUL_BLOCK_BYTES = 2**20


def _work_split(h: int, t: int, s: int, chunk: int, itemsize: int) -> tuple[int, int]:
    """(query rows, heads) per block of the matmul path: `chunk` rows, as many heads as fit MATMUL_BLOCK_BYTES."""
    c = min(chunk, t)
    return c, max(1, min(h, MATMUL_BLOCK_BYTES // (c * s * itemsize)))


def _blocks(b: int, h: int, hg: int, t: int, c: int) -> list[tuple[int, int, int, int, int]]:
    """(batch row, first head, end head, first query row, end query row) of every block."""
    return [(bi, h0, min(h, h0 + hg), a, min(t, a + c))
            for bi in range(b) for h0 in range(0, h, hg) for a in range(0, t, c)]


class _ChunkedRelativeAttention(torch.autograd.Function):
    """softmax(scale · (Q Kᵀ + S_rel)) V by query chunks with plain matrix products, for float32/64 on CPU.

    Each chunk computes its relative logits with the skew, adds scale · Q Kᵀ onto them in one `baddbmm`
    (the -inf the skew leaves on future keys is the causal mask), normalises in place and multiplies by V,
    on the keys 0 .. end of the chunk only: the masked upper triangle is skipped up to one chunk's corner,
    and nothing of size T × S is ever alive. Backward recomputes each chunk's probabilities (as
    FlashAttention does) instead of saving them, so the saved state is q, k, v, er and the output.
    Work goes in blocks of one batch row, `chunk` query rows and as many heads as keep a block's logits
    within MATMUL_BLOCK_BYTES (`_work_split`); the block buffers are allocated once per call.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, er: Tensor, scale: float, chunk: int) -> Tensor:
        b, h, t, d = q.shape
        s = k.shape[-2]
        table = _distance_table(er * scale, s)  # (H, S + 1, D)
        c, hg = _work_split(h, t, s, chunk, q.element_size())
        ws_p, ws_a = q.new_empty(hg * c * (s + 1)), q.new_empty(hg * c * s)
        out = torch.empty_like(q)
        for bi, h0, h1, a, z in _blocks(b, h, hg, t, c):
            att = _chunk_probs(q[bi, h0:h1], k[bi, h0:h1], table[h0:h1], a, z, s, t, scale, ws_p, ws_a)[0]
            torch.bmm(att, v[bi, h0:h1, :s - t + z], out=out[bi, h0:h1, a:z])  # (Hg, c, D)
        ctx.save_for_backward(q, k, v, er, out)
        ctx.scale, ctx.chunk = scale, chunk
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, er, out = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        b, h, t, d = q.shape
        s = k.shape[-2]
        table = _distance_table(er * scale, s)  # (H, S + 1, D)
        c, hg = _work_split(h, t, s, chunk, q.element_size())
        ws_p, ws_a, ws_g = q.new_empty(hg * c * (s + 1)), q.new_empty(hg * c * s), q.new_empty(hg * c * s)
        dout = dout.contiguous()
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, T, 1): rowsum(dO ∘ O) = Σ_j A_ij dA_ij
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dtable = torch.zeros_like(table)
        for bi, h0, h1, a, z in _blocks(b, h, hg, t, c):
            n, end, g = z - a, s - t + z, h1 - h0
            qb, kb, vb = q[bi, h0:h1], k[bi, h0:h1], v[bi, h0:h1]
            att, padded, rel, rows = _chunk_probs(qb, kb, table[h0:h1], a, z, s, t, scale, ws_p, ws_a)
            doc = dout[bi, h0:h1, a:z]  # (Hg, c, D)
            dv[bi, h0:h1, :end].baddbmm_(att.transpose(1, 2), doc)
            ds = torch.bmm(doc, vb[:, :end].transpose(1, 2), out=ws_g[:g * n * end].view(g, n, end))  # dA
            ds.sub_(delta[bi, h0:h1, a:z]).mul_(att)  # dS = A ∘ (dA - delta): the softmax backward
            dq[bi, h0:h1, a:z].baddbmm_(ds, kb[:, :end], alpha=scale)
            dk[bi, h0:h1, :end].baddbmm_(ds.transpose(1, 2), qb[:, a:z], alpha=scale)
            # Undo the skew: dS lands in the padded layout; the entries no view element maps to get 0.
            padded.view(g, -1)[:, :n].zero_()
            rel.copy_(ds)  # the -inf corner maps to future keys, where dS = 0
            dq[bi, h0:h1, a:z].baddbmm_(padded, rows)
            dtable[h0:h1, table.shape[1] - 1 - end:].baddbmm_(padded.transpose(1, 2), qb[:, a:z])
        der = torch.zeros_like(er)
        lc = min(er.shape[1], s)
        rows = torch.arange(s, s - lc, -1, device=er.device)  # table row s - r holds distance r
        der[:, :lc] = dtable.index_select(1, rows) * scale
        return dq, dk, dv, der, None, None

def relative_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """The `relative` kernel: SDPA with the relative logits as its float `attn_mask`.

    `bias` is what `MultiHeadAttention(kernel="relative")` builds: `relative_logits` scaled by
    `scale`, with the causal mask already folded in as -inf. So when `causal` is True this kernel
    does NOT mask again (that would cost one more pass over (B, H, T, S)); a caller passing its own
    bias with causal=True must fold the mask in itself, or use `sdpa`/`math`, which do mask. With no
    bias this is the `sdpa` kernel.
    """
    if bias is None:
        return sdpa_attention(q, k, v, causal=causal, dropout_p=dropout_p, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p,
                                          scale=scale)


KERNELS: dict[str, Kernel] = {"math": math_attention, "sdpa": sdpa_attention, "relative": relative_attention}

# Bytes of relative logits built at a time by `relative_self_attention`, per device type. On CPU a
# few MiB stay in cache and below glibc's mmap threshold (fresh large buffers cost page faults that
# took as long as the matmul filling them); on CUDA fewer, larger chunks win (launch overhead): on an
# H200 at T=4096, 1024-row chunks ran forward+backward 2.5x causal SDPA, 256-row chunks 5.3x.
# benchmarks/relative_attention.py (--chunk) measures the choice.
RELATIVE_CHUNK_BYTES: dict[str, int] = {"cpu": 8 * 2**20, "cuda": 128 * 2**20}
MIN_RELATIVE_CHUNK = 64  # query rows; smaller chunks pay more per-call overhead than they save
# The matmul path's chunks: past 128 rows the corner of the upper triangle each chunk computes and
# throws away (chunk / 2 rows of keys) cost more than fewer calls save (measured at T = 1024 .. 4096).
MAX_MATMUL_CHUNK = 128


def relative_self_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    er: Tensor,
    *,
    kernel: Kernel = relative_attention,
    dropout_p: float = 0.0,
    scale: float | None = None,
    chunk: int | None = None,
    path: Literal["auto", "matmul", "kernel"] = "auto",
) -> Tensor:
    """Causal relative self-attention softmax((Q Kᵀ + S_rel) · scale) V, scale = 1/sqrt(D) by default.

    q (B, H, T, D) at positions S - T .. S - 1; k, v (B, H, S, D); er (H, L, D) unscaled, as in
    `relative_logits`. As in Huang et al. the relative logits are added before the scaling, so they
    reach the kernel as the bias S_rel · scale (the (H, L, D) table is scaled, not the logits).

    Queries are processed in chunks of `chunk` rows (default: as many as fit RELATIVE_CHUNK_BYTES of
    logits, at least MIN_RELATIVE_CHUNK; at most MAX_MATMUL_CHUNK on the matmul path). Rows a .. b - 1
    are the last b - a of S - T + b positions and see no key beyond, so each chunk only touches keys
    :S - T + b: together the chunks skip the masked half of the keys, and what is alive at any time is
    (B, H, chunk, S) instead of (B, H, T, S). Two ways to compute a chunk (`path`):

    - "matmul" (`_ChunkedRelativeAttention`): the skew's logits, Q Kᵀ added onto them in one `baddbmm`,
      an in-place softmax and one product with V; backward recomputes each chunk (nothing O(T·S) is
      saved). Exact up to float rounding; float32/float64 on CPU, no dropout.
    - "kernel": the skew's logits handed to `kernel` (default: SDPA) as its additive bias, with the
      causal mask folded in; any device, dtype and dropout (on CPU, SDPA's backward for a float mask
      materialises the (B, H, chunk, S) probabilities per chunk).

    "auto" takes "matmul" where it applies (CPU, float32/64, dropout 0, the default `kernel`, not inside
    torch.compile; faster and
    far smaller in backward there: benchmarks/relative_attention.md), else "kernel". Results do not
    depend on `chunk` or `path` beyond floating-point rounding.
    """
    b, h, t, d = q.shape
    s = k.shape[-2]
    scale = d**-0.5 if scale is None else scale
    if er.dim() != 3 or er.shape[0] != h or er.shape[2] != d:
        raise ValueError(f"relative_self_attention: er must be (H, L, D) = ({h}, L, {d}), "
                         f"got {tuple(er.shape)}")
    if path not in ("auto", "matmul", "kernel"):
        raise ValueError(f"relative_self_attention: path must be 'auto', 'matmul' or 'kernel', got {path!r}")
    # Not under torch.compile: the matmul path is an eager Python loop over (batch, heads, chunk) blocks
    # that the compiler would unroll into one graph per length; the kernel path compiles as one graph.
    matmul_ok = (q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and dropout_p == 0.0
                 and kernel is relative_attention and not torch.compiler.is_compiling())
    if path == "matmul" and not matmul_ok:
        raise ValueError("relative_self_attention: path='matmul' needs a CPU float32/float64 input, dropout_p=0, "
                         f"the default kernel and eager mode; got device {q.device.type}, dtype {q.dtype}, "
                         f"dropout_p={dropout_p}: use path='auto' or 'kernel'")
    use_matmul = path == "matmul" or (path == "auto" and matmul_ok)
    if chunk is None:
        budget = RELATIVE_CHUNK_BYTES.get(q.device.type, RELATIVE_CHUNK_BYTES["cpu"])
        per_batch_row = use_matmul  # the matmul path runs one batch row at a time
        chunk = max(MIN_RELATIVE_CHUNK, budget // ((1 if per_batch_row else b) * h * s * q.element_size()))
        if use_matmul:
            chunk = min(chunk, MAX_MATMUL_CHUNK)
    if chunk < 1:
        raise ValueError(f"relative_self_attention: chunk must be a positive number of rows, got {chunk}")
    if use_matmul:
        return _ChunkedRelativeAttention.apply(q, k, v, er.to(q.dtype), scale, chunk)
    table = _distance_table((er * scale).to(q.dtype), s)  # (H, S + 1, D), shared by every chunk
    outs = []
    for start in range(0, t, chunk):
        stop = min(t, start + chunk)
        end = s - t + stop  # keys 0 .. end - 1 are visible to this chunk
        qc = q[:, :, start:stop]  # (B, H, chunk, D)
        bias = _skewed_logits(qc, table, end)  # (B, H, chunk, end), causal mask folded in
        outs.append(kernel(qc, k[:, :, :end], v[:, :, :end], bias=bias, causal=True, dropout_p=dropout_p,
                           scale=scale))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, H, T, D)


def get_kernel(name: str) -> Kernel:
    if name not in KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; accepted: {sorted(KERNELS)}")
    return KERNELS[name]


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


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with fused projections, pluggable kernel and an optional KV cache.

    Parameter names follow GPT-2 (`c_attn` fused qkv, `c_proj` output) so that GPT-2 weights
    import key for key. For cross-attention (`cross=True`) the query comes from `x` and keys and
    values from `context`, through separate `q_proj` / `kv_proj` projections.

    `rotary`, if given, is called as `rotary(x, offset)` on q and k (B, H, T, D), `offset` being the
    absolute position of the first new token.

    `kernel="relative"` (causal self-attention only) adds the parameter `er` (H, L, D),
    L = `max_relative_position`: er[h, r] is head h's embedding of distance r = query position - key
    position (natural order; tensor2tensor stores the same table reversed). Its logits enter as the
    additive bias, giving softmax((Q Kᵀ + S_rel) / sqrt(D)) V; see `relative_logits`.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        kernel: str = "sdpa",
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = True,
        cross: bool = False,
        layer_idx: int = 0,
        max_relative_position: int | None = None,
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.causal, self.cross, self.layer_idx = causal, cross, layer_idx
        self.dropout = dropout
        self.kernel_name = kernel
        self.kernel = get_kernel(kernel)
        self.max_relative_position = max_relative_position
        if kernel == "relative":
            if cross or not causal:
                raise ValueError("kernel='relative' is the Music Transformer's causal self-attention (its "
                                 f"embeddings cover distances to the left only); got cross={cross}, "
                                 f"causal={causal}: use cross=False, causal=True or another kernel")
            if not isinstance(max_relative_position, int) or max_relative_position < 1:
                raise ValueError("kernel='relative' needs max_relative_position, a positive int (the number "
                                 f"of distances with a learned embedding), got {max_relative_position!r}")
            # Per-head table, as in the paper; std D^-0.5 as in tensor2tensor's initializer.
            self.er = nn.Parameter(torch.randn(n_head, max_relative_position, self.head_dim)
                                   * self.head_dim**-0.5)  # (H, L, D)
        elif max_relative_position is not None:
            raise ValueError(f"max_relative_position={max_relative_position} only applies to "
                             f"kernel='relative', got kernel={kernel!r}")
        if cross:
            self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
            self.kv_proj = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        else:
            self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        cache: KVCache | None = None,
        rotary: Callable[[Tensor, int | Tensor], Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the T new positions.

        With a static cache (`KVCache.make_static`) keys and values are the whole buffers and the
        keys not written yet are masked; rotary then receives the tensor position as its offset.
        """
        b, t, c = x.shape
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a `context` tensor (B, S, C)")
            q = self._heads(self.q_proj(x))
            k, v = (self._heads(z) for z in self.kv_proj(context).split(self.n_embd, dim=2))
            causal = False
        else:
            # One view + permute instead of split and three transposes: same strides, fewer ops per token.
            q, k, v = self.c_attn(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            causal = self.causal
            if cache is not None:
                static = cache.position is not None
                if rotary is not None:
                    offset = cache.position if static else cache.pos
                    q, k = rotary(q, offset), rotary(k, offset)
                k, v = cache.update(self.layer_idx, k, v)  # (B, H, S, D), S = pos + T (max_len if static)
                if static:
                    return self._static_attention(q, k, v, cache, b, t, c)
            elif rotary is not None:
                q, k = rotary(q, 0), rotary(k, 0)
        dropout_p = self.dropout if self.training else 0.0
        if self.kernel_name == "relative":  # its logits reach self.kernel as the additive bias
            y = relative_self_attention(q, k, v, self.er, kernel=self.kernel, dropout_p=dropout_p)
        else:
            y = self.kernel(q, k, v, bias=None, causal=causal, dropout_p=dropout_p, scale=None)  # (B, H, T, D)
        y = self.c_proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)
        return self.resid_dropout(y) if dropout_p > 0 else y  # the no-op module call costs per decoded token

    def _static_attention(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache, b: int, t: int, c: int) -> Tensor:
        """Attention of T new queries over a static cache's whole buffers k, v (B, H, max_len, D).

        Fixed shapes (see `KVCache`): the unwritten and future keys are masked instead of sliced off.
        The relative kernel gathers its logits by distance (q · er over the L + 1 distances, then one
        gather) instead of the skew, which needs a key count known in Python. Inference only.
        """
        allowed = cache.attention_mask(t)  # (T, max_len)
        if self.kernel_name == "relative":
            scale = self.head_dim**-0.5
            n = self.er.shape[1]
            table = torch.cat([self.er * scale, self.er.new_zeros(self.n_head, 1, self.head_dim)], 1).to(q.dtype)
            logits = torch.einsum("bhtd,hld->bhtl", q, table)  # (B, H, T, L + 1); distance L -> zero row
            dist = cache.positions(t).unsqueeze(1) - torch.arange(cache.max_len, device=q.device)  # (T, S)
            bias = logits.gather(-1, dist.clamp(0, n).expand(b, self.n_head, t, cache.max_len))  # (B, H, T, S)
            bias = bias.masked_fill(~allowed, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        elif self.kernel_name == "math":
            y = math_attention(q, k, v, bias=torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(
                ~allowed, float("-inf")))
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)
