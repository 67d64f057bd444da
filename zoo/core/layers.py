"""Building blocks every model shares: norms, MLPs, the pre-norm residual block.

Shape legend: B batch, T length, C width (n_embd), H heads, D head dim.
Attribute names follow GPT-2 (`ln_1`, `attn`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`) because module names
are checkpoint format: GPT-2 weights import key for key.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core.attention import MultiHeadAttention
from zoo.core.cache import KVCache
from zoo.core.kernels import Kernel
from zoo.core.norms import NormKind, RMSNorm, make_norm
from zoo.core.positions import PositionBias, RotaryEmbedding

# RotaryEmbedding lives in zoo.core.positions, RMSNorm and make_norm in zoo.core.norms; older imports find them here.
__all__ = ["MLP", "Block", "NormKind", "RMSNorm", "RotaryEmbedding", "decoding_layout", "lay_out_for_decoding",
           "linear_weights_in_out", "make_norm", "softcap"]

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "relu2", "swiglu"]


def softcap(logits: Tensor, cap: float | None) -> Tensor:
    """cap · tanh(logits / cap): logits smoothly bounded to (-cap, cap) (Gemma 2; the modded-nanogpt speedrun);
    None = the logits unchanged."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


class MLP(nn.Module):
    """Position-wise feed-forward: GELU (exact, GPT-2's tanh approximation or ImageGPT's sigmoid one), ReLU² or SwiGLU.

    `quick_gelu` is x · sigmoid(1.702 x), the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, §2) that
    OpenAI's ImageGPT was trained with; it keeps GELU's shapes and parameter names.

    ReLU² (`relu2`: relu(x)², So et al. 2021 "Primer", the modded-nanogpt speedrun's MLP) keeps the 4C hidden
    width and GELU's parameter names, so only what the weights compute changes.
    SwiGLU (Shazeer 2020) uses a gate projection `c_gate` beside `c_fc`; its hidden width is the usual
    2/3 · 4C so that parameter counts match the GELU MLP.
    """

    def __init__(self, n_embd: int, *, activation: Activation = "gelu", bias: bool = True,
                 dropout: float = 0.0, hidden: int | None = None) -> None:
        super().__init__()
        self.activation = activation
        if hidden is None:
            hidden = 4 * n_embd if activation != "swiglu" else int(2 * 4 * n_embd / 3)
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        if activation == "swiglu":
            self.c_gate = nn.Linear(n_embd, hidden, bias=bias)
        elif activation not in ("gelu", "gelu_tanh", "quick_gelu", "relu2"):
            raise ValueError(f"unknown activation {activation!r}; accepted: 'gelu', 'gelu_tanh', 'quick_gelu', "
                             "'relu2', 'swiglu'")
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.activation == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        elif self.activation == "relu2":
            h = F.relu(self.c_fc(x)).square()
        elif self.activation == "quick_gelu":
            h = self.c_fc(x)
            h = h * torch.sigmoid(1.702 * h)
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh" if self.activation == "gelu_tanh" else "none")
        h = self.c_proj(h)
        # Skipping the no-op module call matters when decoding one token at a time (Python-bound).
        return self.dropout(h) if self.dropout.p > 0 else h


def _linear_in_out(weight_in_out: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    """nn.Linear's x Wᵀ + b from a contiguous (in, out) copy of W: x (..., in) -> (..., out)."""
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    y = torch.mm(x2, weight_in_out) if bias is None else torch.addmm(bias, x2, weight_in_out)
    return y.view(*x.shape[:-1], weight_in_out.shape[1])


def prefers_in_out(weight: Tensor) -> bool:
    """Whether one-row products (decoding) over this (out, in) weight run faster on CPU with it stored (in, out).

    Measured at GPT-2-124M's shapes, one thread, AMD EPYC Zen 4 (benchmarks/decode_roofline.md, layout table):
    x @ W over an (in, out) matrix streams the weight at up to ~1.2x (qkv, MLP up-projection) and ~1.7x (the
    50257-row head) the rate of nn.Linear's x @ Wᵀ when out >= in; when in > out (the MLP down-projection) the
    (out, in) layout is the faster one. At the shipped checkpoints' sizes (weights in cache) the two are within
    noise. Hugging Face's GPT-2 Conv1D stores every matrix (in, out)."""
    return weight.dim() == 2 and weight.shape[0] >= weight.shape[1]


def _is_compiled(model: nn.Module) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def lay_out_for_decoding(model: nn.Module) -> nn.Module:
    """Store, in place, the weight of every plain `nn.Linear` that `prefers_in_out` as a contiguous (in, out)
    matrix, seen through its transpose: the parameter keeps its shape (out, in), its values, its identity
    (optimizers and tied weights see the same object) and its state-dict key; only its strides change, so
    `F.linear`'s x @ Wᵀ reads the weight in (in, out) order. No copy is kept: the layout costs one transpose per
    matrix, once, and no memory. Idempotent; returns `model`.

    For inference models (generate() calls it on a model in eval mode on CPU). Everything still works on the
    re-laid-out parameters (training, saving: zoo-export writes contiguous tensors); only their strides differ.
    Skips a model compiled in place, subclasses of nn.Linear (quantised, adapters) and distributed tensors."""
    if _is_compiled(model):
        return model
    for m in model.modules():
        if type(m) is not nn.Linear or "forward" in m.__dict__:
            continue
        w = m.weight
        if type(w.data) is torch.Tensor and prefers_in_out(w) and w.is_contiguous() and w.shape[1] > 1:
            with torch.no_grad():
                w.data = w.data.t().contiguous().t()
    return model


def decoding_layout(model: nn.Module, *, training: bool,
                    compile: bool = False) -> contextlib.AbstractContextManager[None]:
    """The weight layout decoding uses on CPU, as a context for the decoding (nothing to do off CPU): an inference
    model is re-laid out in place, once (`lay_out_for_decoding`); a model that is `training` gets (in, out) copies
    for the block only (`linear_weights_in_out`, kept between calls under `compile`: new ones would recompile)."""
    if next(model.parameters()).device.type != "cpu":
        return contextlib.nullcontext()
    if training:
        return linear_weights_in_out(model, keep=compile)
    lay_out_for_decoding(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def linear_weights_in_out(model: nn.Module, *, keep: bool = False) -> Iterator[None]:
    """Inside the block, every plain `nn.Linear` of `model` whose weight `prefers_in_out` multiplies by a contiguous
    (in, out) copy of it, leaving the parameters untouched: decoding from a model that is training (the samples
    logged during training) or compiled (`lay_out_for_decoding` re-lays the parameters out instead, for
    inference models). Tied weights are copied once. Results equal nn.Linear's up to floating-point rounding
    (the same `addmm` as Conv1D). Nothing here carries a gradient to the parameters. Does nothing for a model
    compiled in place (patching its modules would invalidate its compiled graphs) and leaves subclasses of
    nn.Linear (quantised, adapters) alone.

    keep=False drops the copies made here on exit (one more set of those weights in memory meanwhile); keep=True
    keeps them on the modules for the next block, refreshed only when a weight changes (its data pointer
    or version counter): a compiled step traced through these forwards then finds the same objects
    every call and does not recompile (zoo.sampling's compile=True); the memory stays allocated.
    """
    if _is_compiled(model):
        yield
        return
    patched: list[nn.Linear] = []
    copies: dict[int, Tensor] = {}
    try:
        for m in model.modules():
            if type(m) is not nn.Linear or "forward" in m.__dict__ or not prefers_in_out(m.weight):
                continue
            w = m.weight
            stamp = (w.data_ptr(), w._version, None if m.bias is None else (m.bias.data_ptr(), m.bias._version))
            kept = m.__dict__.get("_in_out_forward")
            if kept is not None and kept[0] == stamp:
                forward = kept[1]
            else:
                if id(w) not in copies:
                    copies[id(w)] = w.detach().t().contiguous()  # (in, out)
                forward = functools.partial(_linear_in_out, copies[id(w)], m.bias)
                if keep:
                    m.__dict__["_in_out_forward"] = (stamp, forward)
            m.forward = forward
            patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward  # copies kept by an earlier keep=True block stay kept: a compiled step relies on them


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)) [+ cross_attn(ln_cross(x), context)] + mlp(ln_2(x))."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        layer_idx: int = 0,
        kernel: str | Kernel = "sdpa",
        position_bias: PositionBias | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        norm: NormKind = "layernorm",
        activation: Activation = "gelu",
        causal: bool = True,
        cross_attention: bool = False,
        n_kv_head: int | None = None,
        window: int | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.ln_1 = make_norm(norm, n_embd, bias)
        self.attn = MultiHeadAttention(n_embd, n_head, kernel=kernel, position_bias=position_bias, dropout=dropout,
                                       bias=bias, causal=causal, layer_idx=layer_idx, n_kv_head=n_kv_head,
                                       window=window, qk_norm=qk_norm)
        self.cross_attention = cross_attention  # a plain flag: hasattr() on a Module costs an exception
        # Cross-attention stays full multi-head and unwindowed: its keys are a short condition, not a cache
        # that grows, and positions do not carry across streams: no position bias here.
        if cross_attention:
            self.ln_cross = make_norm(norm, n_embd, bias)
            self.cross_attn = MultiHeadAttention(n_embd, n_head, kernel=kernel, dropout=dropout, bias=bias,
                                                 cross=True, layer_idx=layer_idx, qk_norm=qk_norm)
        self.ln_2 = make_norm(norm, n_embd, bias)
        self.mlp = MLP(n_embd, activation=activation, bias=bias, dropout=dropout)

    def forward(self, x: Tensor, *, cache: KVCache | None = None, rotary: RotaryEmbedding | None = None,
                context: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache, rotary=rotary)
        if self.cross_attention:
            x = x + self.cross_attn(self.ln_cross(x), context=context)
        return x + self.mlp(self.ln_2(x))
