"""Training callbacks: periodic samples (saved under the run folder, logged as media), monitoring for
the loggers (gradient norm, model summary and parameter count). The progress bar is `zoo.training.progress`.

How samples are drawn and rendered depends on the member: the callback asks `zoo.members.member_for`
the codec's member and calls its `render_training_samples`. How the media reach each logger is
`zoo.training.tracking.log_media`.
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import Tensor
from torch.distributed.tensor import DTensor

from zoo.members import Member, SampleSet, member_for
from zoo.sampling import SamplingConfig
from zoo.training.tracking import log_media

log = logging.getLogger(__name__)


class SampleCallback(L.Callback):
    """Every `every_n_steps` optimizer steps (and at the end of training), on global rank 0,
    generate samples, save them under `out_dir` and log them to every logger that takes media.

    `sampling`: training's `samples:` section less `every_n_steps`, read by `SamplingConfig.from_options`
    (the names zoo-sample and `zoo.load(...).generate` take). At fit start the model's member checks them:
    an option it does not take is an error when set (not null, not empty); `max_new_tokens`, which every
    run's section holds, only applies where the member takes it (text, music)."""

    def __init__(self, out_dir: str | Path, *, every_n_steps: int = 500, **sampling: Any) -> None:
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.options = dict(sampling)
        self.sampling = SamplingConfig.from_options(self.options)
        self.member: Member | None = None
        self.last: SampleSet | None = None
        self._last_step: int | None = None  # no second set at the end when the last step already sampled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        codec = getattr(pl_module, "codec", None)
        model_type = getattr(getattr(pl_module, "model", None), "model_type", None)
        if codec is None:
            return
        try:
            self.member = member_for(codec, model_type=model_type)
        except ValueError as e:  # a codec no member serves: train anyway, without samples
            log.warning("no samples during training: %s", e)
            return
        set_keys = {k for k, v in self.options.items() if v not in (None, [], ()) and k != "max_new_tokens"}
        self.sampling = self.member.parse(self.options, explicit=set_keys)[1]  # ValueError naming the option
        null = getattr(pl_module.model, "null_condition", None)
        if self.sampling.guidance is not None and (null is None or null(1) is None):
            # one `samples:` section serves a recipe's variants: guidance where the model takes a condition
            log.info("samples.guidance=%g not used: this %s model takes no condition", self.sampling.guidance,
                     self.member.name)
            self.sampling = dataclasses.replace(self.sampling, guidance=None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step > 0 and not trainer.fast_dev_run:
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_step != trainer.global_step:
            self.sample(trainer, pl_module)

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> SampleSet | None:
        if not trainer.is_global_zero or self.member is None:
            return None
        if isinstance(trainer.strategy, ModelParallelStrategy):
            return None  # sharded parameters: sample from the saved checkpoint with zoo-sample instead
        self.out_dir.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        with torch.random.fork_rng():  # sampling must not change the training RNG stream
            samples = self.member.render_training_samples(pl_module, trainer.datamodule, self.sampling,
                                                          self.out_dir, step)
        self.last, self._last_step = samples, step
        for logger in trainer.loggers:
            log_media(logger, samples, step)
        return samples


# ---- monitoring ---------------------------------------------------------------------------------------

def grad_norm(parameters: Iterable[Tensor]) -> Tensor | None:
    """Total L2 norm of the parameters' gradients, a float32 scalar; None when no parameter has one.

    DDP gradients are already averaged across processes when this runs (every rank gets the same norm).
    FSDP2 gradients are DTensor shards: their norm is reduced over the device mesh (`full_tensor`, a
    collective, so every rank must call this), giving every rank the norm of the whole gradient.
    """
    plain: list[Tensor] = []
    sharded: list[Tensor] = []
    for p in parameters:
        if p.grad is not None:
            (sharded if isinstance(p.grad, DTensor) else plain).append(p.grad)
    if not plain and not sharded:
        return None
    squares = [torch.linalg.vector_norm(g, dtype=torch.float32).square() for g in plain]
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded, 2.0)  # DTensor with a pending (partial) reduction
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        squares.append(norm.float().square())
    device = squares[0].device
    return torch.stack([s.to(device) for s in squares]).sum().sqrt()


class GradNormMonitor(L.Callback):
    """Logs `grad_norm`, the total L2 norm of the gradients before clipping, at every optimizer step.

    Lightning calls `on_before_optimizer_step` after AMP has unscaled the gradients and before it
    clips them, so the value is the raw gradient norm in fp32 units. If it cannot be computed (an
    unusual strategy) it is skipped with one warning and training goes on.
    """

    def __init__(self) -> None:
        self.enabled = True

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self.enabled:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        try:
            norm = grad_norm(params)
        except (RuntimeError, NotImplementedError, TypeError) as e:
            log.warning("grad_norm is not logged: it cannot be computed under %s (%s)",
                        type(trainer.strategy).__name__, e)
            self.enabled = False
            return
        if norm is not None:
            pl_module.log("grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)


def parameter_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts. Sharded (FSDP2) parameters count their full size."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def model_summary_text(module: L.LightningModule, max_depth: int = 3) -> str:
    """A layer table (name, type, parameters, mode) followed by the module tree. Lightning's own table
    also has a FLOPs column, which reads 0 without an example input: it is left out."""
    try:
        summary = ModelSummary(module, max_depth=max_depth)
        rows = [("Name", "Type", "Params", "Mode")]
        rows += [(n, t, f"{p:,}", "train" if m else "eval") for n, t, p, m in
                 zip(summary.layer_names, summary.layer_types, summary.param_nums, summary.training_modes)]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
        table += f"\ntotal {summary.total_parameters:,} parameters, {summary.trainable_parameters:,} trainable"
    except Exception as e:  # a convenience (it may not know a strategy's sharded modules); the tree follows
        table = f"(layer table unavailable: {e})"
    return f"{table}\n\n{module.model if hasattr(module, 'model') else module}\n"


class ModelSummaryLogger(L.Callback):
    """At fit start: writes `model_summary.txt` in the run folder and logs the parameter counts and the
    summary. W&B: config and summary fields `params/total`, `params/trainable` and an HTML panel
    `model/summary`; other loggers: hyperparameters `params/total`, `params/trainable`, scalars
    `params_total`, `params_trainable` (TensorBoard also gets the summary as text)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total, trainable = parameter_counts(pl_module)
        if not trainer.is_global_zero:
            return
        text = model_summary_text(pl_module)
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "model_summary.txt").write_text(text)
        log.debug("model: %s parameters (%s trainable)", f"{total:,}", f"{trainable:,}")  # zoo-train prints it
        counts = {"params/total": total, "params/trainable": trainable}
        for logger in trainer.loggers:
            _log_model_info(logger, counts, text, trainer.global_step)


def _log_model_info(logger: Logger, counts: dict[str, int], text: str, step: int) -> None:
    if isinstance(logger, WandbLogger):
        import wandb

        run = logger.experiment
        run.config.update(counts, allow_val_change=True)
        for key, value in counts.items():
            run.summary[key] = value
        logger.log_metrics({"model/summary": wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)
        return
    logger.log_hyperparams(counts)
    logger.log_metrics({k.replace("/", "_"): float(v) for k, v in counts.items()}, step=step)
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_text"):  # TensorBoard: a 4-space indent makes a markdown code block
        experiment.add_text("model/summary", "".join(f"    {line}\n" for line in text.splitlines()), global_step=step)


def monitoring_callbacks(logger_cfg: dict[str, Any]) -> list[L.Callback]:
    """Callbacks that observe training for the loggers (added by zoo-train after sampling): the gradient
    norm and the model summary, for every logger kind but `none`."""
    if logger_cfg.get("kind") == "none":
        return []
    return [GradNormMonitor(), ModelSummaryLogger()]
