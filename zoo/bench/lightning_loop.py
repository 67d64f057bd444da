"""Lightning overhead: one zoo GPT trained by a Lightning `Trainer` (GenerativeModule) vs a plain PyTorch loop.

Both sides run the same work per step: `GenerativeModule.loss` (forward + float32 cross-entropy), backward,
AdamW with zoo's decay / no-decay groups, the warmup + cosine `LambdaLR` step, `zero_grad`; bf16-mixed
is Lightning's `precision="bf16-mixed"` on one side and `torch.autocast(bfloat16)` on the other.

Interleaving: Lightning owns its loop, so the plain step runs inside it, from a callback at the end of
every Lightning step. One Lightning step is timed from the end of the previous plain step to the end
of its own `on_train_batch_end`: it includes everything Lightning does between two steps (data
fetching, hooks, `self.log`, the scheduler), which is the overhead being measured. The order is fixed
(Lightning, then plain), each pair of steps sharing the machine load of that moment.

Also here: GPT-2-124M training MFU on CUDA (bf16-mixed, compiled in place, fused AdamW).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

from zoo.bench import peers as P
from zoo.bench.common import (
    Row,
    Sizes,
    gpt_flops_per_token,
    interleaved,
    matmul_params,
    matmul_peak_fn,
    median,
    nominal_bf16_tflops,
    ratio_stats,
    sync,
)
from zoo.bench.gpt import TrainStep, autocast, make_batch
from zoo.training.config import ModuleConfig
from zoo.training.module import GenerativeModule, lr_lambda

WARMUP_STEPS = 2  # untimed steps at the start of both loops


class _Repeat(torch.utils.data.IterableDataset):
    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.batch


def _optimizer(module: GenerativeModule, max_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and schedule `GenerativeModule.configure_optimizers` builds, without a Trainer."""
    params = [p for p in module.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": module.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=module.lr, betas=module.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
        s, warmup_steps=module.warmup_steps, max_steps=max_steps, min_lr_ratio=module.min_lr_ratio))
    return opt, sched


def overhead(s: Sizes, device: torch.device, precision: str) -> Row:
    """Row: per-round Lightning step time / plain step time (1.03 = 3% overhead)."""
    arch = dict(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=s.block_size,
                vocab_size=s.vocab_size)
    model = P.zoo_gpt(**arch, activation="gelu_tanh", seed=4).to(device)
    x, y = make_batch(s, device, seed=5)
    batch = {"idx": x, "targets": y}
    max_steps = WARMUP_STEPS + s.rounds  # Lightning step i >= WARMUP_STEPS is timed from plain step i - 1
    plain = GenerativeModule(copy.deepcopy(model), config=ModuleConfig(warmup_steps=10))
    opt, sched = _optimizer(plain, max_steps)
    times: dict[str, list[float]] = {"lightning": [], "plain": []}

    def plain_step() -> None:
        with autocast(device, precision):
            loss, _ = plain.loss(batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    class Interleave(L.Callback):
        last: float | None = None

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, b: Any, batch_idx: int) -> None:
            sync(device)
            now = time.perf_counter()
            if batch_idx >= WARMUP_STEPS and self.last is not None:
                times["lightning"].append(now - self.last)
            start = time.perf_counter()
            plain_step()
            sync(device)
            if batch_idx >= WARMUP_STEPS:
                times["plain"].append(time.perf_counter() - start)
            self.last = time.perf_counter()

    loader = torch.utils.data.DataLoader(_Repeat(batch), batch_size=None)
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.WARNING)  # no "GPU available: False" banner in the benchmark's output
        trainer = L.Trainer(accelerator=device.type, devices=1, max_steps=max_steps,
                            precision="32-true" if precision == "fp32" else precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            callbacks=[Interleave()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no workers in the DataLoader" and the like: not what is measured
            trainer.fit(GenerativeModule(model, config=ModuleConfig(warmup_steps=10)), train_dataloaders=loader)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    n = min(len(times["lightning"]), len(times["plain"]))
    lt, pt = times["lightning"][-n:], times["plain"][-n:]
    tokens = x.numel()
    return Row(f"train {precision}", "zoo Lightning Trainer vs plain PyTorch loop", "Lightning / plain step time",
               ratio_stats(lt, pt), {"Lightning tokens/s": tokens / median(lt), "plain tokens/s": tokens / median(pt)},
               note="1.03 = 3% overhead")


def gpt2_124m(device: torch.device, rounds: int) -> tuple[list[Row], dict[str, Any]]:
    """GPT-2-124M (12 x 768, T 1024, vocab 50304) training MFU in bf16-mixed, compiled, on CUDA."""
    if device.type != "cuda":
        raise ValueError(f"gpt2_124m is a GPU measurement; got device {device}")
    s = Sizes(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch=16, vocab_size=50304)
    model = P.zoo_gpt(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304,
                      activation="gelu_tanh").to(device)
    fpt = gpt_flops_per_token(matmul_params(model), 12, 1024, 768)
    model.compile()  # in place: checkpoint keys keep their names
    batch = make_batch(s, device)
    step = TrainStep(model, model, batch, device, "bf16-mixed", fused=True)
    mm, mm_flops = matmul_peak_fn(8192, torch.bfloat16, device, reps=10)  # 10 products: launch cost amortised
    started = time.perf_counter()
    times = interleaved({"step": step, "matmul peak": mm}, rounds, device, warmup=3)  # warm-up compiles
    tokens = batch[0].numel()
    achieved = fpt * tokens / median(times["step"])
    name = torch.cuda.get_device_name(device)
    nominal = nominal_bf16_tflops(name)
    mfu = ratio_stats([fpt * tokens * t for t in times["matmul peak"]], [mm_flops * t for t in times["step"]])
    rows = [Row("train bf16-mixed GPT-2-124M", "zoo compiled MFU vs measured bf16 matmul peak",
                "MFU vs measured peak", mfu, {"tokens/s": tokens / median(times["step"]),
                                              "model TFLOP/s": achieved / 1e12,
                                              "peak TFLOP/s": mm_flops / median(times["matmul peak"]) / 1e12})]
    if nominal:
        x = achieved / (nominal * 1e12)
        rows.append(Row("train bf16-mixed GPT-2-124M", f"zoo compiled MFU vs nominal {name} dense bf16 peak",
                        "MFU vs nominal peak", {"median": x, "min": x, "max": x, "rounds": 1, "per_round": [x]},
                        {"nominal TFLOP/s": nominal}))
    return rows, {"gpt2_124m_flops_per_token": fpt, "gpt2_124m_wall_s": time.perf_counter() - started,
                  "device_name": name, "nominal_bf16_tflops": nominal}
