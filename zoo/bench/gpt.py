"""Training throughput: zoo's GPT vs peers at identical configs and weights, MFU against the machine's peak.

One training step = forward on (B, T) tokens, `F.cross_entropy` over every position (in float32), backward,
`torch.optim.AdamW` (lr 3e-4, default implementation), `zero_grad(set_to_none=True)`; bf16-mixed wraps the
forward and loss in `torch.autocast(dtype=torch.bfloat16)`, weights and optimizer stay float32. Pairs
(each peer against the zoo GPT that holds the same weights, see zoo/bench/peers.py):
  zoo (gelu_tanh)           vs transformers gelu_new (its default) and gelu_pytorch_tanh (matched)
  zoo bias=False            vs x-transformers   (the row name of recorded reports; the setting is layer_bias=False)
  zoo position=rotary       vs litgpt
The matmul peak of the step's precision (a (n, n) @ (n, n) product) runs in the same interleaved rounds,
so MFU = (FLOPs per token x tokens/s) / peak is taken per round, against the same machine load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.bench import peers as P
from zoo.bench.common import (
    Row,
    Sizes,
    calibrate_peak,
    gpt_flops_per_token,
    interleaved,
    matmul_params,
    median,
    ratio_stats,
    skipped,
)

log = logging.getLogger(__name__)
LR = 3e-4
PRECISIONS = {"fp32": None, "bf16-mixed": torch.bfloat16}
MATCHED = ("transformers gelu_pytorch_tanh", "x-transformers", "litgpt")  # peers computing zoo's exact function


def autocast(device: torch.device, precision: str) -> Any:
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """One optimizer step of `model` on a fixed batch; returns the number of tokens trained on."""

    def __init__(self, model: nn.Module, logits: P.Logits, batch: tuple[Tensor, Tensor], device: torch.device,
                 precision: str, fused: bool = False) -> None:
        self.model, self.logits, (self.x, self.y) = model, logits, batch
        self.device, self.precision = device, precision
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, **({"fused": True} if fused else {}))

    def __call__(self) -> int:
        self.model.train()
        with autocast(self.device, self.precision):
            logits = self.logits(self.x)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), self.y.flatten())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return self.x.numel()


def make_batch(s: Sizes, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, s.vocab_size, (s.batch, s.block_size + 1), generator=g).to(device)
    return tokens[:, :-1], tokens[:, 1:]


def build_pairs(s: Sizes, device: torch.device, batch: tuple[Tensor, Tensor]) -> tuple[dict, list[Row]]:
    """{peer name: (zoo twin name, module, logits fn)} and the zoo twins, all gated; failed gates become rows."""
    arch = dict(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=s.block_size,
                vocab_size=s.vocab_size)
    models: dict[str, tuple[str | None, nn.Module, P.Logits, str]] = {}  # name -> (zoo twin, module, logits, mismatch)
    failed: list[Row] = []
    hf = P.hf_gpt2(**arch, activation="gelu_new", seed=1)
    zoo = P.zoo_from_hf(hf)
    hf_tanh = P.hf_gpt2(**arch, activation="gelu_pytorch_tanh", seed=1)
    hf_tanh.load_state_dict(hf.state_dict())
    models["zoo"] = (None, zoo, zoo, "")
    candidates: list[tuple[str, str, Callable[[], tuple[nn.Module, P.Logits]], str]] = [
        ("transformers gelu_new", "zoo", lambda: (hf, P.hf_logits(hf)),
         "HF's default gelu_new: the same function as zoo's gelu_tanh, written as 5 elementwise ops"),
        ("transformers gelu_pytorch_tanh", "zoo", lambda: (hf_tanh, P.hf_logits(hf_tanh)), "none"),
    ]
    zoo_nb = P.zoo_gpt(**arch, layer_bias=False, activation="gelu_tanh", seed=2)
    zoo_rot = P.zoo_gpt(**arch, position="rotary", activation="gelu_tanh", seed=3)
    candidates.append(("x-transformers", "zoo bias=False", lambda: _twice(P.xtransformers_from_zoo(zoo_nb)),
                       "no biases anywhere (x-transformers has none in norms and attention): zoo runs bias=False"))
    lit_module, why = P.import_litgpt_model()
    if lit_module is None:
        log.warning("litgpt: not available (%s)", why)
        print(f"litgpt: not available ({why})", flush=True)
        failed.append(skipped("train", "litgpt", f"litgpt: not available ({why})"))
    else:
        candidates.append(("litgpt", "zoo position=rotary", lambda: _twice(P.litgpt_from_zoo(zoo_rot, lit_module)),
                           "rotary positions (litgpt has no learned absolute table): zoo runs position=rotary; "
                           "head tied by sharing the parameter"))
    twins = {"zoo": zoo, "zoo bias=False": zoo_nb, "zoo position=rotary": zoo_rot}
    gates: dict[str, dict] = {}
    for name, twin, build, mismatch in candidates:
        try:
            module, logits = build()
            module.to(device)
            twins[twin].to(device)
            gates[name] = P.check_gate(name, twins[twin], module, logits, batch[0], new_tokens=s.gate_tokens)
        except P.GateError as e:
            failed.append(skipped("train", name, f"correctness gate failed: {e}", status="gate failed"))
            continue
        except Exception as e:  # noqa: BLE001 - a peer that cannot be built is reported, the suite goes on
            failed.append(skipped("train", name, f"could not build: {type(e).__name__}: {e}"))
            continue
        models[name] = (twin, module, logits, mismatch)
        if twin not in models:
            models[twin] = (None, twins[twin], twins[twin], "")
    for m in models.values():
        m[1].to(device)
    return {"models": models, "gates": gates}, failed


def run(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    """Rows for every pair and precision, plus MFU rows; the dict holds context (FLOPs/token, gates)."""
    batch = make_batch(s, device)
    built, rows = build_pairs(s, device, batch)
    models, gates = built["models"], built["gates"]
    tokens = batch[0].numel()
    fpt = {name: gpt_flops_per_token(matmul_params(m[1] if m[0] is None else models[m[0]][1]), s.n_layer,
                                     s.block_size, s.n_embd) for name, m in models.items()}
    context: dict[str, Any] = {"flops_per_token": fpt["zoo"], "gates": gates, "tokens_per_step": tokens}
    for precision in s.precisions:
        dtype = PRECISIONS[precision] or torch.float32
        steps = {name: TrainStep(m[1], m[2], batch, device, precision) for name, m in models.items()}
        call_s = 0.25 if s.mode != "tiny" else 0.0
        mm, mm_flops, peak_info = calibrate_peak(dtype, device, s.matmul_sizes, call_s=call_s)
        context[f"matmul_peak_{precision}"] = peak_info
        fns: dict[str, Callable[[], Any]] = {**steps, "matmul peak": mm}
        times = interleaved(fns, s.rounds, device)
        peak = [mm_flops / t for t in times["matmul peak"]]
        context[f"matmul_peak_flops_{precision}"] = median(peak)
        section = f"train {precision}"
        for name, (twin, _, _, mismatch) in models.items():
            if twin is None:
                continue
            r = ratio_stats(times[name], times[twin])  # peer seconds / zoo seconds = zoo tok/s / peer tok/s
            rows.append(Row(section, f"{twin} vs {name}", "zoo / peer tokens/s", r, {
                "zoo tokens/s": tokens / median(times[twin]), "peer tokens/s": tokens / median(times[name]),
                "zoo MFU": _mfu(fpt[twin] * tokens, times[twin], mm_flops, times["matmul peak"])["median"],
                "peer MFU": _mfu(fpt[twin] * tokens, times[name], mm_flops, times["matmul peak"])["median"]},
                note=f"mismatch: {mismatch}" if mismatch and mismatch != "none" else "matched exactly"))
        for name in (n for n, m in models.items() if m[0] is None):
            rows.append(Row(section, f"{name} MFU", f"MFU vs {precision.split('-')[0]} matmul peak",
                            _mfu(fpt[name] * tokens, times[name], mm_flops, times["matmul peak"]),
                            {"tokens/s": tokens / median(times[name]), "model TFLOP/s":
                             fpt[name] * tokens / median(times[name]) / 1e12,
                             "peak TFLOP/s": median(peak) / 1e12}))
        print(f"  {section}: " + ", ".join(f"{n} {tokens / median(t):.0f} tok/s" for n, t in times.items()
                                          if n != "matmul peak") + f"; peak {median(peak) / 1e9:.1f} GFLOP/s",
              flush=True)
        del steps
    return rows, context


def _twice(m: nn.Module) -> tuple[nn.Module, P.Logits]:
    return m, m


def _mfu(step_flops: float, step_times: list[float], mm_flops: float, mm_times: list[float]) -> dict[str, Any]:
    """Per-round (step_flops / step time) / (mm_flops / matmul time)."""
    return ratio_stats([step_flops * t for t in mm_times], [mm_flops * t for t in step_times])
