"""The training progress bar: optimizer steps out of `max_steps`, throughput and time left."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Rich progress bar over optimizer steps (a zoo run is one long "epoch" of random crops).

    The training bar counts `global_step` up to `max_steps` (a resumed run starts at its resumed
    step) and shows, besides the prog-bar metrics, the throughput as `tok/s` and the time left as
    `eta`, measured on the steps of this process only (so a resume does not count as instant steps).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock: tuple[int, float] | None = None  # (global_step, time.monotonic()) when training started

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps is not None and max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'train':{len(self.validation_description)}}"  # padded: no flicker against "Validation"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._clock = (trainer.global_step, time.monotonic())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._start_at_global_step()

    def _initialize_train_progress_bar_id(self) -> None:
        super()._initialize_train_progress_bar_id()
        self._start_at_global_step()

    def _start_at_global_step(self) -> None:
        # reset (not update): the steps before a resume must not count towards rich's speed estimate
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.reset(self.train_progress_bar_id, total=self.total_train_batches,
                                completed=self.trainer.global_step, description=self._get_train_description(0))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)  # optimizer steps, not batches
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def configure_columns(self, trainer: L.Trainer) -> list:
        return super().configure_columns(trainer)[:3]  # description, bar, steps/total; time and speed: metrics

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return self.format_metrics(items, eta_s=self.eta_seconds(trainer.global_step, trainer.max_steps))

    def eta_seconds(self, step: int, max_steps: int, now: float | None = None) -> float | None:
        """Seconds left until `max_steps` at this process's average pace so far; None before the first
        step of this process or without a step budget."""
        if self._clock is None or max_steps is None or max_steps <= 0:
            return None
        step0, t0 = self._clock
        elapsed = (time.monotonic() if now is None else now) - t0
        if step <= step0 or elapsed <= 0:
            return None
        return max(0, max_steps - step) * elapsed / (step - step0)

    @staticmethod
    def format_metrics(metrics: dict[str, Any], eta_s: float | None) -> dict[str, Any]:
        """The bar's metrics: Lightning's `v_num` dropped, `tokens_per_s` shown as `tok/s` with a k/M
        suffix, and `eta` as H:MM:SS ("-:--:--" while unknown), last."""
        out = {k: v for k, v in metrics.items() if k not in ("v_num", "tokens_per_s")}
        if "tokens_per_s" in metrics:
            out["tok/s"] = human_count(float(metrics["tokens_per_s"]))
        out["eta"] = "-:--:--" if eta_s is None else str(timedelta(seconds=round(eta_s)))
        return out


def human_count(x: float) -> str:
    """1234.5 -> "1.23k", 2_500_000 -> "2.50M", 12.3 -> "12.3" (three significant digits or more)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}" if abs(x) < 100 * div else f"{x / div:.0f}{suffix}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
