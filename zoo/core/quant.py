"""Weight-only quantisation for inference: `quantize_(model, "int8" | "int4")` swaps every `nn.Linear` in place.

Decoding one token reads every weight once and does two flops per weight: at batch 1 it is bound by memory
traffic, so storing weights in 1 byte (int8) or half a byte (int4) instead of 4 is the lever, provided the
product reads the small weights directly instead of first writing a float copy.

Which kernels, and why. Measured before choosing, and again in benchmarks/decode_roofline.md (kernel table):
the products one decoded token needs at GPT-2-124M's shapes (49 Linears, batch 1, one thread, AMD EPYC Zen 4
with native bf16, torch 2.14, torchao 0.18), against zoo's fp32 decoding of that time (x @ W over (in, out)
copies, zoo.sampling; now the same layout in place, zoo.core.layers.lay_out_for_decoding) at 74 ms:
- torchao `Int8WeightOnlyConfig`: 228 ms on fp32 activations, 99 ms on bf16: slower than fp32 on this CPU;
  its int4 CPU layout ('opaque') was refused by 0.18's Int4WeightOnlyConfig. So zoo does not depend on torchao.
- torch's own `_weight_int8pack_mm`: 260 ms on fp32 activations (no fast path), 45 ms on bf16 (1.7x, but the
  activations lose precision).
- int8, chosen: a dequantise-and-reduce written in plain torch ops and compiled by `torch.compile` (inductor
  fuses the int8 -> float conversion into the dot products, so each weight is read once, as int8): 37 ms
  (2.0x), fp32 activations. `Int8Linear` uses it for few-row products (decoding: at most `FUSED_ROWS` rows);
  many-row products (prefill, scoring) dequantise the weight once and call one matmul, where the conversion
  is amortised. Where torch.compile gives up (its recompile limit), the eager fallback computes the same
  product by dequantising: right, only slower. At batch 8 the fused kernel is no faster than fp32's GEMM
  (decode_roofline.md: 0.88x): int8 pays at batch 1.
- int4, chosen: torch's own `_weight_int4pack_mm_for_cpu` (bf16 activations, groups of 32-128 input features,
  asymmetric): 21 ms (3.5x). `Int4Linear` uses it for every product. Its quality
  cost is larger (validation loss +0.2 % to +1.8 % on the shipped checkpoints; int8: within 0.02 %).

Scales are per output row (int8, symmetric) or per (group, output row) (int4, with a zero point). Only
exact `nn.Linear` modules are replaced (a subclass, e.g. a LoRA adapter, is left as it is); a head tied to
the embedding gets its own quantised copy, the embedding (a lookup, one row per token) stays float. The
result is for inference: it has no gradients and its state dict is not a checkpoint format (quantise after
loading, `zoo.load(..., quantize="int8")`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Scheme = Literal["int8", "int4"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
FUSED_ROWS = 16  # products with at most this many rows (decoding, guided batch 8) take the fused int8 kernel
INT4_GROUPS = (128, 64, 32)  # int4 group sizes tried, largest first; in_features must be a multiple of one


def check_scheme(scheme: str | None) -> str | None:
    """The scheme, validated once where it enters (None = no quantisation)."""
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"unknown quantize={scheme!r}; accepted: None (float weights), "
                         + ", ".join(repr(s) for s in SCHEMES))
    return scheme


def _int8_product(x: Tensor, q: Tensor, scale: Tensor) -> Tensor:
    """x (N, in) @ dequantised(q (out, in))ᵀ -> (N, out).

    Under torch.compile the product is written as an elementwise multiply and a sum over `in`, laid out
    (out, N, in) so that each int8 weight row is read once for all N rows; inductor turns it into one
    loop that converts and accumulates in registers. Eagerly that form would allocate (out, N, in), so
    the eager path dequantises the weight and calls one matmul (the same sum in another order).
    """
    if torch.compiler.is_compiling():
        return (q[:, None, :].to(x.dtype) * x[None]).sum(-1).t() * scale.to(x.dtype)  # (out, N, in) -> (N, out)
    return F.linear(x, q.to(x.dtype)) * scale.to(x.dtype)


_FUSED: list[Callable[[Tensor, Tensor, Tensor], Tensor]] = []


def _fused_int8() -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The compiled `_int8_product`, built on first use (compiling costs seconds per new shape)."""
    if not _FUSED:
        _FUSED.append(torch.compile(_int8_product, dynamic=True))
    return _FUSED[0]


class Int8Linear(nn.Module):
    """`nn.Linear` with its weight stored int8, one fp32 scale per output row: W ≈ q · scale[:, None].

    Buffers: `q` (out, in) int8, `scale` (out,) float32; `bias` (out,) as the Linear had it, or None.
    x (..., in) -> (..., out) in x's dtype.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float().contiguous()  # (out, in), whatever its layout (lay_out_for_decoding)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("q", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.fused = True  # few-row products through the compiled kernel (False: always the eager path)

    def dequantized(self) -> Tensor:
        """The weight the products use, (out, in) float32."""
        return self.q.float() * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        if self.fused and x2.shape[0] <= FUSED_ROWS:
            # a fresh tensor, not a view: the compiled kernel's guards would otherwise recompile per view layout
            y = _fused_int8()(x2.clone(), self.q, self.scale)
        else:
            y = _int8_product(x2, self.q, self.scale)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(nn.Module):
    """`nn.Linear` with its weight stored in 4 bits per value, groups of `group` input features sharing a
    bf16 scale and zero point (W ≈ (q − 8) · scale + zero, q in 0..15), packed for torch's CPU kernel
    `_weight_int4pack_mm_for_cpu`, which takes bf16 activations; x (..., in) -> (..., out) in x's dtype.

    The kernel needs out_features a multiple of 16 (rows are padded with zeros and the extra outputs
    dropped) and in_features a multiple of the group size (`int4_group` picks one, or None).
    """

    def __init__(self, linear: nn.Linear, group: int) -> None:
        super().__init__()
        w = linear.weight.detach().float().contiguous()  # (out, in), whatever its layout (lay_out_for_decoding)
        out, k = w.shape
        padded = -(-out // 16) * 16
        w = F.pad(w, (0, 0, 0, padded - out))  # (padded, in)
        wg = w.view(padded, k // group, group)
        lo, hi = wg.amin(-1), wg.amax(-1)  # (padded, in/group)
        scale = (hi - lo).clamp(min=1e-8) / 15
        q = torch.round((wg - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(padded, k)
        zero = lo + 8 * scale  # the kernel computes (q - 8) * scale + zero
        self.in_features, self.out_features, self.group = k, out, group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # (in/group, padded, 2)
        self.register_buffer("scales_zeros", scales_zeros.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (N, in)
        sz = self.scales_zeros.to(torch.bfloat16)  # a no-op unless the module was cast (Pretrained.to)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group, sz)
        y = y[:, :self.out_features].to(x.dtype)  # (N, out)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}"


def int4_group(in_features: int) -> int | None:
    """The largest of INT4_GROUPS that divides in_features, or None (such a layer is stored int8)."""
    return next((g for g in INT4_GROUPS if in_features % g == 0), None)


def quantize_(model: nn.Module, scheme: str) -> nn.Module:
    """Replace every `nn.Linear` of `model` (exact type) by its weight-only quantised form, in place; returns it.

    scheme: "int8" (per-row symmetric) or "int4" (groups of 32-128; a Linear whose in_features no group
    size divides is stored int8 instead). CPU only: the int4 kernel and the fused int8 path are CPU kernels.
    """
    check_scheme(scheme)
    if scheme is None:
        raise ValueError(f"quantize_ needs a scheme; accepted: {', '.join(repr(s) for s in SCHEMES)}")
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"quantize={scheme!r} has CPU kernels only; the model is on {sorted(devices)}: "
                         "quantise on CPU, or run the float model on the GPU")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            group = int4_group(child.in_features) if scheme == "int4" else None
            setattr(parent, name, Int4Linear(child, group) if group else Int8Linear(child))
    return model


def quantized_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear))]


@contextlib.contextmanager
def eager_int8(model: nn.Module) -> Iterator[None]:
    """Inside the block, `Int8Linear`s take the eager path only (tests and benchmarks compare the two)."""
    mods = [m for m in model.modules() if isinstance(m, Int8Linear)]
    before = [m.fused for m in mods]
    try:
        for m in mods:
            m.fused = False
        yield
    finally:
        for m, f in zip(mods, before):
            m.fused = f
