"""GenerativeModule: the one LightningModule that trains every zoo model.

It knows nothing about GPT, images or music: it receives a plain `GenerativeModel`, its codec and
the resolved training config, and owns the loss (token cross-entropy), the optimizer
(zoo.training.optim: adamw or muon), the warmup + cosine or wsd schedule, logging (loss, perplexity,
learning rate, tokens/s) and what a checkpoint carries besides weights (`ckpt["zoo"]`: model type and
config, codec state, training config), so that a checkpoint alone is enough to sample from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from zoo.codecs.base import IGNORE_INDEX, Codec
from zoo.data.base import Batch
from zoo.models.base import GenerativeModel
from zoo.training.checkpoint import CHECKPOINT_VERSION, CheckpointError, check_metadata
from zoo.training.config import AdamWConfig, ModuleConfig, MuonConfig
from zoo.training.lora import lora_settings
from zoo.training.optim import build_optimizer, learning_rates

log = logging.getLogger(__name__)
CPU_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
FLOAT16_PRECISIONS = ("16-mixed", "16-true", "16")  # CUDA only


class NonFiniteLossError(RuntimeError):
    pass


class _CheckpointedForward:
    """A block's forward that recomputes its activations in backward instead of storing them.

    Installed as an instance attribute, so the block stays the same module (same parameter names,
    hence the same state-dict keys) and hooks on it (FSDP2's unshard / reshard) still run around the
    call. Non-reentrant checkpointing (`use_reentrant=False`) supports keyword arguments, DDP, FSDP2
    and tensors that need no grad, and restores the RNG state so that dropout masks are recomputed
    identically. Only while training with grad enabled: decoding with a KV cache runs the block as is.
    """

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.forward = type(block).forward.__get__(block)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.block.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def checkpoint_activations(block: nn.Module) -> None:
    """Turn on activation checkpointing for `block` (in place, idempotent)."""
    if not isinstance(vars(block).get("forward"), _CheckpointedForward):
        block.forward = _CheckpointedForward(block)


def _is_fully_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def lr_lambda(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float, schedule: str = "cosine",
              decay_fraction: float = 0.2) -> float:
    """The learning rate of step `step` (0-based) as a fraction of the peak: linear warmup to 1, then
    cosine: a cosine decay to `min_lr_ratio` at `max_steps`;
    wsd: 1 until the last `decay_fraction` of `max_steps`, then a linear decay to `min_lr_ratio` at `max_steps`.
    Flat at `min_lr_ratio` after `max_steps`. A wsd rate before the decay depends on `max_steps` only through
    where the decay starts, so raising max_steps on resume leaves the stable steps already taken as they were."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * max_steps))
        progress = min(1.0, max(0, step - (max_steps - decay_steps)) / decay_steps)
        return 1 - (1 - min_lr_ratio) * progress
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class GenerativeModule(L.LightningModule):
    def __init__(self, model: GenerativeModel, *, codec: Codec | None = None, config: ModuleConfig | None = None,
                 train_config: dict[str, Any] | None = None, optim: AdamWConfig | MuonConfig | None = None) -> None:
        super().__init__()
        self.model, self.codec = model, codec
        self.config = config = config or ModuleConfig()  # validated on construction (the `module` section)
        self.optim = optim or AdamWConfig()  # the `optim` section (zoo.training.optim builds it)
        self.lr, self.weight_decay, self.betas = config.lr, config.weight_decay, config.betas
        self.warmup_steps, self.min_lr_ratio = config.warmup_steps, config.min_lr_ratio
        self.on_nonfinite = config.on_nonfinite
        self.activation_checkpointing = config.activation_checkpointing
        self.train_config = train_config or {}
        self._t_last: float | None = None

    # ---- model -------------------------------------------------------------------------------
    def forward(self, idx: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.model(idx, cond=cond)

    def loss(self, batch: Batch) -> tuple[Tensor, int]:
        """Mean cross-entropy over non-ignored targets, and how many targets that was."""
        logits = self.model(batch["idx"], cond=batch.get("cond"))  # (B, T, V)
        targets = batch["targets"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return loss, int((targets != IGNORE_INDEX).sum())

    def setup(self, stage: str) -> None:
        """Refuse float16 off CUDA before any work. (On CPU Lightning swaps 16-mixed for bf16-mixed with a
        warning; a run should not silently train in another precision than the one asked for.)"""
        requested = str((self.train_config.get("trainer") or {}).get("precision", self.trainer.precision))
        device = self.trainer.strategy.root_device.type
        if device != "cuda" and (requested in FLOAT16_PRECISIONS or str(self.trainer.precision) in FLOAT16_PRECISIONS):
            raise ValueError(f"trainer.precision={requested!r} (float16, with loss scaling) needs a CUDA GPU, but "
                             f"this run is on {device!r}; accepted on {device!r}: {list(CPU_PRECISIONS)} "
                             "(bf16-mixed is the 16-bit choice there)")

    def configure_model(self) -> None:
        """Called by Lightning under every strategy, before optimizers exist. Applies activation
        checkpointing to each transformer block (`activation_checkpointing=True`), then, under
        ModelParallelStrategy (strategy=fsdp), shards each block with FSDP2 and finally the root.
        Neither changes module names, so checkpoints stay interchangeable between strategies."""
        if self.activation_checkpointing:
            for block in self.model.blocks():
                checkpoint_activations(block)
        if self.device_mesh is None or _is_fully_sharded(self.model):
            return
        mesh = self.device_mesh["data_parallel"]
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self._trainer is not None and str(self._trainer.precision).startswith("bf16"):
            # bf16 compute, gradients reduced in fp32 (bf16-mixed keeps fp32 master weights)
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in self.model.blocks():
            fully_shard(block, **kwargs)
        fully_shard(self.model, **kwargs)

    # ---- steps -------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        loss, n = self.loss(batch)
        reported, total = self._global_mean(loss, n)
        if total != n:
            # DDP/FSDP average the ranks' gradients. Weighting each rank's mean by its share of the
            # targets makes that average the gradient of the global batch's mean, as on one process,
            # also when ranks hold different numbers of ignored (-100) targets.
            loss = loss * (n * self.trainer.world_size / total)
        if not torch.isfinite(reported):  # the global value: every rank takes the same decision
            where = (f"non-finite training loss {reported.item()} at step {self.global_step} "
                     f"(batch {batch_idx}, idx shape {tuple(batch['idx'].shape)})")
            if self.on_nonfinite == "skip":
                log.warning("%s: step skipped (on_nonfinite=skip)", where)
                return None
            raise NonFiniteLossError(f"{where}; the last good checkpoint is kept. Lower the learning rate, "
                                     "check the data, or set module.on_nonfinite=skip to skip such steps.")
        self.log("train/loss", reported, prog_bar=True, batch_size=total)
        self._tokens = total
        return loss

    def _global_mean(self, loss: Tensor, n: int) -> tuple[Tensor, int]:
        """(mean loss over every rank's targets, total target count); (loss, n) on one process."""
        if self._trainer is None or self.trainer.world_size == 1:
            return loss.detach(), n
        stats = torch.stack([loss.detach().float() * n, torch.tensor(float(n), device=loss.device)])
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        total = int(stats[1].item())
        return stats[0] / max(total, 1), total

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._t_last is not None and getattr(self, "_tokens", 0):
            self.log("tokens_per_s", self._tokens / (now - self._t_last), prog_bar=True, batch_size=1)
        self._t_last = now
        opt = self.optimizers()
        for name, rate in learning_rates(getattr(opt, "optimizer", opt)).items():
            self.log(name, rate, batch_size=1)

    def on_validation_start(self) -> None:
        self._t_last = None  # validation time is not training throughput

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        val = self.trainer.callback_metrics.get("val/loss")
        if val is not None:
            self.log("val/ppl", torch.exp(val.float()), sync_dist=False)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self.log("test/loss", loss, batch_size=n, sync_dist=True)

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.model, self.optim, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        trainer = self.trainer
        max_steps = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        # one multiplier for every group (Muon's and AdamW's peaks differ, their shape over time does not);
        # LambdaLR checkpoints no lambda: a resumed run recomputes it from its own max_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
            s, warmup_steps=self.warmup_steps, max_steps=int(max_steps), min_lr_ratio=self.min_lr_ratio,
            schedule=self.config.schedule, decay_fraction=self.config.decay_fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints -------------------------------------------------------------------------
    def zoo_metadata(self) -> dict[str, Any]:
        meta = {
            "version": CHECKPOINT_VERSION,
            "model_type": self.model.model_type,
            "model_config": dataclasses.asdict(self.model.config),
            "codec": self.codec.to_dict() if self.codec is not None else None,
            "train_config": self.train_config,
        }
        lora = lora_settings(self.model)
        if lora is not None:  # readers wrap the model with these adapters before loading (zoo.training.lora)
            meta["lora"] = lora
        return meta

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never replace a good checkpoint with diverged weights: raising here aborts the save.
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(f"non-finite weights at step {self.global_step} in {bad[:3]}: checkpoint not "
                                     "saved, the previous one is kept. Lower the learning rate or check the data.")
        checkpoint["zoo"] = self.zoo_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: refuse a checkpoint from a newer zoo or of another model before its weights are loaded."""
        if "zoo" not in checkpoint:
            raise CheckpointError("the checkpoint to resume from has no 'zoo' metadata; expected one written by "
                                  "zoo-train (or start fresh with ckpt_path=null)")
        if "state_dict" in checkpoint:  # a sharded (distributed) checkpoint loads its weights separately
            check_metadata(checkpoint, source="resume checkpoint")
        saved = checkpoint["zoo"].get("model_type")
        if saved != self.model.model_type:
            raise CheckpointError(f"the checkpoint to resume from holds a {saved!r} model but this run trains a "
                                  f"{self.model.model_type!r}; pass ckpt_path=null or a matching checkpoint")
        saved_lora, lora = checkpoint["zoo"].get("lora"), lora_settings(self.model)
        if saved_lora != lora:
            raise CheckpointError(f"the checkpoint to resume from was trained with lora={saved_lora} but this run "
                                  f"has lora={lora}; pass the same lora.* settings, or ckpt_path=null")
