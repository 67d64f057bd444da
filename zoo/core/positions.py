"""Position schemes: how attention learns where tokens are. Shapes as in `zoo.core.kernels`.

Three ways a scheme can reach attention, and which schemes use them:
- an input embedding added before the blocks: learned absolute positions, owned by each model as
  `wpe` (GPT-2's key, so weights import key for key); nothing here.
- a rotation of q and k (`RotaryEmbedding`, RoFormer), called by `MultiHeadAttention` with the offset.
- an additive bias on the logits (`PositionBias`): a provider builds, per call, the bias the kernel
  receives (`zoo.core.kernels.AttentionBias`), so kernels never know the scheme. The Music Transformer's
  relative attention (`RelativePositionBias`) is one, ALiBi (`AlibiPositionBias`, `bias_at` only) another;
  `SumPositionBias` adds several (ALiBi on top of the relative term).
"none" is no scheme at all.

Relative attention (Huang et al. 2018, "Music Transformer: Generating Music with Long-Term Structure",
section 3, relative positional self-attention and its memory-efficient implementation): every attention
module learns one embedding per relative distance and head, `er` (H, L, D), L = `max_distance`.
`RelativeBias` builds the relative logits S_rel with the paper's "skew" (`relative_logits`), the causal
mask folded in, so that attention is exactly RelativeAttention = softmax((Q Kᵀ + S_rel) / sqrt(D)) V:
the bias handed to the kernel is S_rel / sqrt(D) (the (H, L, D) table is scaled, not the logits).
Distances r >= L get a zero embedding, as in the paper's reference implementation (tensor2tensor's
`get_relative_embeddings_left` pads the table with zeros), rather than Shaw et al.'s clipping to the
edge embedding: beyond the window a key is weighed by content alone, which keeps the model the paper
measured.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.core.kernels import AttentionBias, BlockwiseBias, Kernel, TensorBias, chunked_attention, extend_bias


class PositionBias:
    """A position scheme that reaches attention as an additive bias on the scaled logits.

    Stateless and shareable between layers: the tensors a scheme learns are registered on each attention
    module by `attach` (their names are checkpoint keys, e.g. `attn.er`), and every call receives that
    module. Biases are in units of the scaled logits with scale 1/sqrt(D), the kernels' default.
    `best_kernel` is the kernel a config's `kernel: auto` picks for it (`resolve_kernel`).
    """

    best_kernel: str = "sdpa"

    def attach(self, attn: nn.Module) -> None:
        """Check that `attn` (a MultiHeadAttention) suits the scheme; register what it learns on it."""

    def bias(self, attn: nn.Module, q: Tensor, s: int) -> AttentionBias:
        """The bias of queries q (B, H, T, D), the last T of s positions, over keys 0 .. s - 1."""
        t = q.shape[-2]
        positions = torch.arange(s - t, s, device=q.device)
        return TensorBias(self.bias_at(attn, q, positions, s), t, s)

    def bias_at(self, attn: nn.Module, q: Tensor, positions: Tensor, n_keys: int) -> Tensor:
        """(B|1, H|1, T, n_keys) bias of queries q at the absolute `positions` (T,), a tensor (static-cache
        decoding: no Python int that changes), over keys 0 .. n_keys - 1. Future keys may hold anything
        finite: the caller masks them."""
        raise NotImplementedError


class RelativePositionBias(PositionBias):
    """Music Transformer relative attention: `attn.er` (H, L, D), er[h, r] = head h's embedding of
    distance r = query position - key position (natural order; tensor2tensor stores it reversed).
    Causal self-attention only: the embeddings cover distances to the left. Best on `chunked`: its fused
    CPU path builds the bias block by block (`RelativeBias` is a `BlockwiseBias`), and by query chunks
    elsewhere, never (B, H, T, S) at once."""

    best_kernel = "chunked"

    def __init__(self, max_distance: int) -> None:
        if not isinstance(max_distance, int) or isinstance(max_distance, bool) or max_distance < 1:
            raise ValueError("RelativePositionBias needs max_distance (the model's max_relative_position: the "
                             f"number of distances with a learned embedding), a positive int, got {max_distance!r}")
        self.max_distance = max_distance

    def __repr__(self) -> str:
        return f"RelativePositionBias(max_distance={self.max_distance})"

    def attach(self, attn: nn.Module) -> None:
        if attn.cross or not attn.causal:
            raise ValueError("relative positions are the Music Transformer's causal self-attention (its embeddings "
                             f"cover distances to the left only); got cross={attn.cross}, causal={attn.causal}: "
                             "use cross=False, causal=True or no position bias")
        # Per-head table, as in the paper; std D^-0.5 as in tensor2tensor's initializer.
        attn.er = nn.Parameter(torch.randn(attn.n_head, self.max_distance, attn.head_dim) * attn.head_dim**-0.5)

    def bias(self, attn: nn.Module, q: Tensor, s: int) -> RelativeBias:
        inference = not (torch.is_grad_enabled() and attn.er.requires_grad)
        return RelativeBias(q, attn.er, s, table=_kept_table(attn, q.dtype, s) if inference else None)

    def bias_at(self, attn: nn.Module, q: Tensor, positions: Tensor, n_keys: int) -> Tensor:
        # Gathered by distance (q · er over the L + 1 distances, then one gather) instead of the skew,
        # which needs a key count known in Python; distance L indexes an appended zero row.
        er, (b, h, t, d) = attn.er, q.shape
        n = er.shape[1]
        table = torch.cat([er * d**-0.5, er.new_zeros(h, 1, d)], 1).to(q.dtype)  # (H, L + 1, D)
        logits = torch.einsum("bhtd,hld->bhtl", q, table)  # (B, H, T, L + 1)
        dist = positions.unsqueeze(1) - torch.arange(n_keys, device=q.device)  # (T, S); < 0 for future keys
        return logits.gather(-1, dist.clamp(0, n).expand(b, h, t, n_keys))  # (B, H, T, S)


def alibi_slopes(n_head: int) -> Tensor:
    """ALiBi's per-head slopes (Press et al. 2022, "Train Short, Test Long", section 3): for n heads a power of
    2, the geometric sequence 2^(-8/n), 2^(-16/n), .. 2^(-8); otherwise those of the closest lower power of 2,
    m, then every other slope of 2m (the authors' reference code, used for their non-power-of-2 models)."""
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    m = 2 ** int(math.floor(math.log2(n_head)))
    slopes = geometric(m) + geometric(2 * m)[0::2][:n_head - m]
    return torch.tensor(slopes, dtype=torch.float64)  # (H,)


class AlibiPositionBias(PositionBias):
    """ALiBi (Press et al. 2022): bias -slope_h · (query position - key position) on the scaled logits,
    nothing learned. The slopes are a non-persistent buffer `attn.alibi_slopes` (H,): no checkpoint key.
    Causal self-attention only (the paper's; the distance to a future key has no defined sign here)."""

    def __repr__(self) -> str:
        return "AlibiPositionBias()"

    def attach(self, attn: nn.Module) -> None:
        if attn.cross or not attn.causal:
            raise ValueError("ALiBi biases causal self-attention by the distance to earlier keys; got "
                             f"cross={attn.cross}, causal={attn.causal}: use cross=False, causal=True")
        attn.register_buffer("alibi_slopes", alibi_slopes(attn.n_head).float(), persistent=False)

    def bias_at(self, attn: nn.Module, q: Tensor, positions: Tensor, n_keys: int) -> Tensor:
        dist = positions.unsqueeze(1) - torch.arange(n_keys, device=q.device)  # (T, S); < 0 for future keys
        slopes = attn.alibi_slopes.to(q.dtype).view(1, -1, 1, 1)  # (1, H, 1, 1)
        return -slopes * dist.clamp(min=0).to(q.dtype)  # (1, H, T, S); future keys 0, the caller masks them


class SumPositionBias(PositionBias):
    """Several bias schemes at once (e.g. the relative term and ALiBi): their biases add. The first one's
    bias keeps its lazy form (the relative term's fused chunked path); the others are added by query rows."""

    def __init__(self, *parts: PositionBias) -> None:
        self.parts = parts

    def __repr__(self) -> str:
        return f"SumPositionBias{self.parts!r}"

    @property
    def best_kernel(self) -> str:  # the first part's bias keeps its lazy form: its kernel serves the sum
        return self.parts[0].best_kernel

    def attach(self, attn: nn.Module) -> None:
        for part in self.parts:
            part.attach(attn)

    def bias(self, attn: nn.Module, q: Tensor, s: int) -> AttentionBias:
        t = q.shape[-2]
        positions = torch.arange(s - t, s, device=q.device)

        def extra(a: int, z: int) -> Tensor:
            end = s - t + z
            return sum(p.bias_at(attn, q[:, :, a:z], positions[a:z], end) for p in self.parts[1:])
        return extend_bias(self.parts[0].bias(attn, q, s), extra, t, s)

    def bias_at(self, attn: nn.Module, q: Tensor, positions: Tensor, n_keys: int) -> Tensor:
        return sum(p.bias_at(attn, q, positions, n_keys) for p in self.parts)


def resolve_kernel(kernel: str | Kernel, position_bias: PositionBias | None) -> str | Kernel:
    """The kernel an attention module runs: `kernel` itself, or for "auto" the position bias's `best_kernel`
    (`sdpa` without a bias). Every kernel computes every bias (the math kernel is the oracle): "auto" only
    chooses the fastest and smallest, so it never changes results beyond floating-point rounding."""
    if kernel != "auto":
        return kernel
    return "sdpa" if position_bias is None else position_bias.best_kernel


@dataclass
class _RelativeState:
    """One pass of the fused path: the scaled distance table, the padded-logits workspace, the last
    block's intermediates (for its backward) and the table's gradient."""

    s: int
    table: Tensor  # (H, S + 1, D)
    ws: Tensor
    dtable: Tensor | None
    padded: Tensor | None = None
    rel: Tensor | None = None
    rows: Tensor | None = None


class RelativeBias(BlockwiseBias):
    """S_rel / sqrt(D) (or · `scale`) for queries q (B, H, T, D) at positions s - T .. s - 1, from er (H, L, D).

    Holds -inf on future keys (`masks_future`). `dense` is one (B, H, T, S) skew; `rows` skews only the
    chunk's queries over the keys they see; the block methods are the fused CPU path's version of the
    same, with the skew undone in backward.
    """

    masks_future = True

    def __init__(self, q: Tensor, er: Tensor, s: int, scale: float | None = None, *,
                 table: Tensor | None = None) -> None:
        """`table`: a ready `_distance_table` of er · scale in q's dtype, of any length >= s + 1 (inference only:
        no gradient reaches er through it); None builds one per call."""
        b, h, t, d = q.shape
        if s < t:
            raise ValueError(f"relative_logits: s_len={s} keys for {t} queries; need s_len >= T "
                             "(queries are the last T of s_len positions)")
        if er.dim() != 3 or er.shape[0] != h or er.shape[2] != d:
            raise ValueError(f"relative_logits: er must be (H, L, D) = ({h}, L, {d}), got {tuple(er.shape)}")
        self.q, self.er, self.s = q, er, s
        self.scale = d**-0.5 if scale is None else scale
        self._er_q = er.to(q.dtype)  # the fused path's input: its gradient flows back through the cast
        self._table = table

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[-2], self.s

    def _scaled_table(self) -> Tensor:  # (H, S + 1, D), shared by every chunk of a call
        if self._table is None:
            self._table = _distance_table((self.er * self.scale).to(self.q.dtype), self.s)
        return self._table

    def dense(self) -> Tensor:
        b, h, t, d = self.q.shape
        if t == 1:  # decoding: the one query, at position S - 1, sees every key j at distance S - 1 - j: no skew
            rows = self._scaled_table()[:, -self.s:]  # (H, S, D): distances S - 1 .. 0
            rel = torch.bmm(self.q[:, :, 0].transpose(0, 1), rows.transpose(1, 2))  # (H, B, S): batched over H
            return rel.transpose(0, 1).unsqueeze(2)  # (B, H, 1, S), a view
        return _skewed_logits(self.q, self._scaled_table(), self.s)  # (B, H, T, S)

    def rows(self, a: int, b: int) -> Tensor:
        end = self.s - self.q.shape[-2] + b  # rows a .. b - 1 are the last b - a of `end` positions
        return _skewed_logits(self.q[:, :, a:b], self._scaled_table(), end)  # (B, H, b - a, end)

    def inputs(self) -> tuple[Tensor, ...]:
        return (self._er_q,)

    def prepare(self, s: int, heads: int, rows: int, *, grad: bool) -> _RelativeState:
        # (H, S + 1, D); a kept table's last S + 1 rows are the same distances S .. 0
        table = _distance_table(self._er_q * self.scale, s) if grad or self._table is None else self._table[:, -s - 1:]
        return _RelativeState(s, table, self.q.new_empty(heads * rows * (s + 1)),
                              torch.zeros_like(table) if grad else None)

    def block(self, state: _RelativeState, qb: Tensor, bi: int, h0: int, h1: int, a: int, z: int) -> Tensor:
        g, c = qb.shape[0], qb.shape[1]
        end = state.s - self.q.shape[-2] + z
        rows = state.table[h0:h1, state.s - end:]  # (Hg, end + 1, D): distances end .. 0
        padded = torch.bmm(qb, rows.transpose(1, 2), out=state.ws[:g * c * (end + 1)].view(g, c, end + 1))
        i = torch.arange(c, device=qb.device)
        padded[..., :c].masked_fill_(i.unsqueeze(0) < (c - i).unsqueeze(1), float("-inf"))  # see _skewed_logits
        state.padded, state.rows = padded, rows
        state.rel = padded.view(g, c * (end + 1))[:, c:].view(g, c, end)  # (Hg, c, end): the skew, a view
        return state.rel

    def block_backward(self, state: _RelativeState, ds: Tensor, qb: Tensor, dqb: Tensor, bi: int, h0: int,
                       h1: int, a: int, z: int) -> None:
        # Undo the skew: dS lands in the padded layout; the entries no view element maps to get 0.
        padded, n, end = state.padded, z - a, state.s - self.q.shape[-2] + z
        padded.view(padded.shape[0], -1)[:, :n].zero_()
        state.rel.copy_(ds)  # the -inf corner maps to future keys, where dS = 0
        dqb.baddbmm_(padded, state.rows)
        state.dtable[h0:h1, state.s - end:].baddbmm_(padded.transpose(1, 2), qb)

    def input_grads(self, state: _RelativeState) -> tuple[Tensor | None, ...]:
        der = torch.zeros_like(self._er_q)
        lc = min(der.shape[1], state.s)
        rows = torch.arange(state.s, state.s - lc, -1, device=der.device)  # table row s - r holds distance r
        der[:, :lc] = state.dtable.index_select(1, rows) * self.scale
        return (der,)


def _kept_table(attn: nn.Module, dtype: torch.dtype, s: int) -> Tensor:
    """The scaled `_distance_table` of `attn.er` for inference, kept on the module between calls.

    Why: decoding asks for the bias once per layer and token, and rebuilding the (H, S + 1, D) table each time
    (scale, reverse, pad) cost about as much as the product it feeds. It is rebuilt when er changes (data
    pointer or version counter, as `zoo.core.layers.linear_weights_in_out`) or a longer one is needed (then
    twice as long: a growing cache rebuilds it O(log S) times)."""
    er = attn.er
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():  # traced: no data pointers, no Python cache
        return _distance_table((er * er.shape[-1] ** -0.5).to(dtype), s)
    # inference_mode too: a table built there is an inference tensor, which autograd may not save later (LoRA on
    # a frozen er trains through the kept table)
    stamp = (er.data_ptr(), er._version, dtype, er.device, torch.is_inference_mode_enabled())
    kept = attn.__dict__.get("_kept_relative_table")
    if kept is not None and kept[0] == stamp and kept[1].shape[1] > s:
        return kept[1]
    n = s if kept is None or kept[0] != stamp else max(s, 2 * (kept[1].shape[1] - 1))
    with torch.no_grad():
        table = _distance_table((er * er.shape[-1] ** -0.5).to(dtype), n)  # (H, n + 1, D)
    attn.__dict__["_kept_relative_table"] = (stamp, table)
    return table


def relative_logits(q: Tensor, er: Tensor, s_len: int) -> Tensor:
    """Music Transformer relative logits S_rel by the skew (Huang et al. 2018, memory-efficient implementation).

    q (B, H, T, D) are the queries at absolute positions p_i = s_len - T + i (the last T of s_len
    positions, as with a KV cache); er (H, L, D) holds er[h, r], the embedding of relative distance
    r = query position - key position, for r = 0 .. L - 1. Returns (B, H, T, s_len) with

        out[b, h, i, j] = q[b, h, i] · er[h, p_i - j]   for 0 <= p_i - j < L
                          0                              for p_i - j >= L  (zero embedding, see module doc)
                          -inf                           for j > p_i       (the causal mask, folded in)
    """
    return RelativeBias(q, er, s_len, scale=1.0).dense()


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
    length >= s_len + 1 (its last s_len + 1 rows are the distances s_len .. 0).

    The paper's skew multiplies Q by the embeddings of the distances only — never Shaw et al.'s
    (T, S, D) tensor of one embedding per pair — pads one column on the left, reshapes and drops the
    first row, which slides every row into place. The upper triangle the skew produces holds entries
    wrapped in from the neighbouring row, which is why the mask must come after the skew; here it is
    written into the padded matrix before the reshape, at the entries that land in that triangle (a
    (T, T) corner), so it costs no pass over the result. The result is a view into one
    (B, H, T, S + 1) buffer — the only O(T·S) memory, and SDPA needs it anyway as its mask.
    """
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


def relative_self_attention(q: Tensor, k: Tensor, v: Tensor, er: Tensor, *, kernel: Kernel | None = None,
                            dropout_p: float = 0.0, scale: float | None = None, chunk: int | None = None,
                            path: Literal["auto", "matmul", "kernel"] = "auto") -> Tensor:
    """Causal relative self-attention softmax((Q Kᵀ + S_rel) · scale) V through a kernel, as
    `MultiHeadAttention` with a `RelativePositionBias` runs it between its projections (for tests and
    benchmarks). q (B, H, T, D) at positions S - T .. S - 1; k, v (B, H, S, D); er (H, L, D) unscaled.
    `kernel` defaults to `chunked_attention` with the given `chunk` and `path` (only it has them)."""
    if kernel is None:
        kernel = functools.partial(chunked_attention, chunk=chunk, path=path)
    elif chunk is not None or path != "auto":
        raise ValueError("relative_self_attention: chunk and path are options of the default chunked kernel; "
                         f"got chunk={chunk!r}, path={path!r} with kernel {kernel!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    bias = RelativeBias(q, er, k.shape[-2], scale)
    return kernel(q, k, v, bias=bias, causal=True, dropout_p=dropout_p, scale=scale)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34), "rotate-half" layout.

    Called as `rotary(x, offset)` on q or k (B, H, T, D): rotates position `offset + t` of x.
    The cos/sin table is a non-persistent buffer, so it never enters checkpoints.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
        angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (max_len, D/2)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """`offset` is an int, or a 0-d int64 tensor (static-cache decoding: no Python int that changes,
        so a compiled step does not recompile per position; the table bound is then not checked)."""
        t = x.shape[-2]
        if isinstance(offset, Tensor):
            at = offset.view(1) if t == 1 else offset + torch.arange(t, device=offset.device)
            cos, sin = self.cos.index_select(0, at).to(x.dtype), self.sin.index_select(0, at).to(x.dtype)
        else:
            if offset + t > self.cos.shape[0]:
                # Past the table (sliding-window models generate without end): the table's own formula, so
                # positions inside it get bit-identical values either way.
                angles = torch.outer(torch.arange(offset, offset + t, device=x.device).float(), self.inv_freq.float())
                cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # (T, D/2)
            else:
                cos = self.cos[offset:offset + t].to(x.dtype)  # (T, D/2)
                sin = self.sin[offset:offset + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
