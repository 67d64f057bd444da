"""The optimizers `optim=adamw|muon` build, and which parameter each one trains.

`adamw` (the default): torch's AdamW on every trainable parameter, weight decay on matrices and
embeddings only (the two groups every zoo checkpoint before `optim` had).

`muon`: Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) on the hidden matrices,
AdamW on the rest, as one `torch.optim.Optimizer` (Lightning's automatic optimisation takes one):
  muon            the weight of every `nn.Linear` inside a transformer block (`model.blocks()`):
                  attention and MLP projections, the matrices whose update Muon orthogonalises;
  adamw_decay     every other matrix: token, position, class and style tables, heads, input
                  projections outside the blocks, LoRA adapters (see `_is_adapter`);
  adamw_no_decay  vectors and scalars: norm gains, biases.
Every trainable parameter lands in exactly one group (`Optimizer.add_param_group` refuses a duplicate;
tests/test_optim.py checks the union on every model type).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim._muon import _adjust_lr  # torch's own lr scaling by matrix shape, reused as is

from zoo.models.base import GenerativeModel

NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
Groups = dict[str, list[tuple[str, nn.Parameter]]]


def _is_adapter(name: str) -> bool:
    """LoRA's A (rank, in) and B (out, rank): AdamW, not Muon. Orthogonalising a rank-r update sets its
    r singular values to ~1 whatever their scale, so B (zero at the start, growing from there) would
    take steps of a fixed spectral size from step 1, and the adapter's alpha/rank scaling, tuned for
    Adam's per-entry steps, would no longer mean what peft users expect. Every LoRA recipe (peft's
    own docs included) trains adapters with AdamW; a fine-tune with optim=muon keeps that."""
    return "lora_" in name


def parameter_groups(model: GenerativeModel, optimizer: str) -> Groups:
    """{group name: [(parameter name, parameter)]} of `model`'s trainable parameters for `optimizer`.

    adamw: `decay` (ndim >= 2) and `no_decay`; muon: `muon`, `adamw_decay` and `adamw_no_decay` (module
    docstring). Empty groups are left out."""
    hidden = {id(m.weight) for block in model.blocks() for m in block.modules() if isinstance(m, nn.Linear)}
    groups: Groups = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if optimizer == "adamw":
            key = "decay" if p.dim() >= 2 else "no_decay"
        elif id(p) in hidden and p.dim() == 2 and not _is_adapter(name):
            key = "muon"
        else:
            key = "adamw_decay" if p.dim() >= 2 else "adamw_no_decay"
        groups[key].append((name, p))
    return dict(groups)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 matmul kernels for this CPU (torch's check: AVX-512 BW/VL/DQ, native BF16
    on e.g. AMD Zen 4 and Intel Sapphire Rapids); without them (AVX2-only CPUs such as AMD Zen 3) bf16
    matmuls take a scalar path many times slower than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    """The Newton–Schulz dtype for a parameter on `device`. `auto`: bfloat16 on CUDA and on CPUs with
    fast bf16 matmuls (measured on a Zen 4 EPYC, 1 thread: the optimizer step 69 ms in bf16, 105 ms in
    fp32 for the default GPT), float32 on other CPUs."""
    if ns_dtype != "auto":
        return NS_DTYPES[ns_dtype]
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.bfloat16


def orthogonalise(g: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> Tensor:
    """The quintic Newton–Schulz iteration of torch.optim.Muon (`_zeropower_via_newtonschulz`, the same
    operations in the same order) run in `dtype`: ~U S' V^T of g = U S V^T with S' in about [0.7, 1.2]
    (the coefficients trade exact convergence for speed). A DTensor (an FSDP2 shard) is gathered once and
    iterated locally, every rank keeping its own rows of the result: DTensor's own operators would also
    give the whole matrix's result (torch.optim.Muon runs under FSDP2), but by redistributing operands
    at each of the iteration's matmuls."""
    from torch.distributed.tensor import DTensor, Replicate

    if isinstance(g, DTensor):
        full = orthogonalise(g.full_tensor(), coefficients, steps, eps, dtype)
        return DTensor.from_local(full, g.device_mesh, [Replicate()] * g.device_mesh.ndim,
                                  run_check=False).redistribute(g.device_mesh, g.placements)
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T  # iterate on the wide side: the Gram matrix x x^T is the smaller one
    x.div_(x.norm().clamp(min=eps))  # Frobenius norm >= spectral norm: singular values in [0, 1]
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, poly, x, beta=a)  # a x + (b A + c A^2) x
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon, its Newton–Schulz iteration in `ns_dtype` ("auto", "float32", "bfloat16").

    torch hard-codes bfloat16 for the iteration (`grad.bfloat16()` inside a module-level function that
    its step calls), which a CPU without native bf16 runs many times slower than float32. Its structure
    leaves no hook for the dtype, so this subclass keeps torch's constructor (argument checks, group
    defaults), its `_init_group` (the momentum buffers: the same state, the same checkpoint layout) and
    its lr scaling, and replaces only the per-tensor update loop of `_single_tensor_muon`, line for
    line, with `orthogonalise` in place of the bf16 call. With ns_dtype=bfloat16 a step equals
    torch's exactly (tests/test_optim.py). The dtype is this object's setting, not a group key, so a
    checkpoint resumed on another machine orthogonalises in that machine's fast precision."""

    def __init__(self, params: Iterable[Any], *, ns_dtype: str = "auto", **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        if ns_dtype not in ("auto", *NS_DTYPES):
            raise ValueError(f"ns_dtype={ns_dtype!r}; accepted: {['auto', *NS_DTYPES]}")
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor] = []
            self._init_group(group, params, grads, bufs)
            lr, momentum, weight_decay = float(group["lr"]), group["momentum"], group["weight_decay"]
            for p, grad, buf in zip(params, grads, bufs):
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       resolve_ns_dtype(self.ns_dtype, p.device))
                p.mul_(1 - lr * weight_decay)
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer over two: `Muon` for the groups marked `muon: True`, torch's AdamW for the others.

    Both inner optimizers work on this object's group dicts and its one `state` (parameters are
    disjoint), so `param_groups`, `state_dict()`/`load_state_dict()`, LR schedulers, gradient clipping
    and Lightning's checkpointing see one ordinary torch optimizer: Muon's groups first, then AdamW's."""

    def __init__(self, muon_groups: list[dict[str, Any]], adamw_groups: list[dict[str, Any]], *,
                 muon: dict[str, Any], adamw: dict[str, Any]) -> None:
        for group in muon_groups:
            group["muon"] = True
        for group in adamw_groups:
            group["muon"] = False
        # the inner constructors fill each group's defaults and check their own arguments; an empty side
        # (e.g. a LoRA fine-tune: adapters only, all AdamW) has no inner optimizer
        self._muon = Muon(muon_groups, **muon) if muon_groups else None
        self._adamw = torch.optim.AdamW(adamw_groups, **adamw) if adamw_groups else None
        super().__init__([*muon_groups, *adamw_groups], defaults={})
        self._link()

    def _link(self) -> None:
        """Point the inner optimizers at this object's groups and state (again after loading a state
        dict: Optimizer.load_state_dict replaces both objects)."""
        for inner, is_muon in ((self._muon, True), (self._adamw, False)):
            if inner is not None:
                inner.param_groups = [g for g in self.param_groups if g["muon"] is is_muon]
                inner.state = self.state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_muon" in self.__dict__:
            self._link()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in (self._muon, self._adamw):
            if inner is not None:
                inner.step()
        return loss


def build_optimizer(model: GenerativeModel, optim: Any, *, lr: float, betas: tuple[float, float],
                    weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer `optim` (an AdamWConfig or MuonConfig, zoo.training.config) names for `model`.
    `lr`, `betas`, `weight_decay`: the `module` section's AdamW settings (muon's AdamW side may override them)."""
    groups = parameter_groups(model, optim.name)
    params = {k: [p for _, p in v] for k, v in groups.items()}
    if optim.name == "adamw":  # the layout of every checkpoint before `optim`: decay, then no_decay
        return torch.optim.AdamW([{"params": params.get("decay", []), "weight_decay": weight_decay},
                                  {"params": params.get("no_decay", []), "weight_decay": 0.0}], lr=lr, betas=betas)
    adamw_lr = optim.adamw_lr if optim.adamw_lr is not None else lr
    adamw_wd = optim.adamw_weight_decay if optim.adamw_weight_decay is not None else weight_decay
    adamw_groups = [{"params": params[k], "weight_decay": wd}
                    for k, wd in (("adamw_decay", adamw_wd), ("adamw_no_decay", 0.0)) if k in params]
    muon_groups = [{"params": params["muon"]}] if "muon" in params else []
    return MuonWithAdamW(
        muon_groups, adamw_groups,
        muon={"lr": optim.lr, "momentum": optim.momentum, "nesterov": optim.nesterov, "ns_steps": optim.ns_steps,
              "weight_decay": optim.weight_decay, "adjust_lr_fn": optim.adjust_lr_fn, "ns_dtype": optim.ns_dtype},
        adamw={"lr": adamw_lr, "betas": tuple(optim.adamw_betas or betas)})


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """What training logs as its learning rates: `lr` is the first group's (AdamW's for optim=adamw; Muon's
    under optim=muon, where Muon has groups), and under optim=muon `lr_muon` and `lr_adamw` name each side's
    (the AdamW side runs at its own rate: a single `lr` would show only Muon's)."""
    groups = optimizer.param_groups
    rates = {"lr": float(groups[0]["lr"])}
    if any("muon" in g for g in groups):
        for name, is_muon in (("lr_muon", True), ("lr_adamw", False)):
            side = [g for g in groups if g.get("muon") is is_muon]
            if side:
                rates[name] = float(side[0]["lr"])
    return rates
