"""Surviving interruption: a signal stops training at a step boundary, saves, and the rerun resumes exactly.

* `InterruptGuard` — SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (SLURM's requeue signal) stop training once
  the current step is done; the guard then writes `last.ckpt` (model, optimizer, schedule, data
  position, RNG) and `zoo.train` exits with 128 + the signal number. A second Ctrl-C aborts at once
  (the previous checkpoint is kept). Under SLURM, SIGUSR1 also requeues the job (`scontrol requeue`).
* `RNGState` — torch (CPU and CUDA), numpy and Python `random` states travel in the checkpoint, so a
  resumed run draws the same dropout masks as an uninterrupted one.
* `LossTrace` — a per-step trace switched on by environment variables, for the kill-and-resume tests.

How checkpoint files themselves survive faults is `zoo.training.checkpoint_io`.

Signal handling follows Lightning 2.6: its `_SignalConnector` turns SIGTERM into
`trainer.received_sigterm`, and the loops raise `SIGTERMException` once the current batch is done
(in DDP/FSDP rank 0's flag is broadcast before every step, so all ranks stop at the same step).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Training stopped on a signal; `checkpoint` is where it was saved (None if nothing was saved)."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(f"interrupted by {signal_name(signum)} at step {step}; {saved}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell convention for "killed by signal N"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ---- RNG state in the checkpoint --------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Every global RNG a training step may draw from, as tensors and plain data (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RNGState(L.Callback):
    """Saves the global RNG states with every checkpoint and restores them on resume, right before
    the first resumed training step (after Lightning's own set-up, which may draw random numbers)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None


# ---- test hooks -------------------------------------------------------------------------------

TRACE_ENV = "ZOO_TEST_LOSS_TRACE"  # a file: one line "step loss lr idx_sum" appended per optimizer step
STEP_DELAY_ENV = "ZOO_TEST_STEP_DELAY"  # seconds to sleep after each step, so a test can signal mid-run


class LossTrace(L.Callback):
    """Appends `step loss lr idx_sum` (floats as repr, i.e. exact) after every step on rank 0, flushed
    at once, so tests can compare a killed-and-resumed subprocess with an uninterrupted run."""

    def __init__(self, path: str | Path, delay: float = 0.0) -> None:
        self.path, self.delay = Path(path), delay

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.is_global_zero:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            loss = float(loss) if loss is not None else float("nan")
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step} {loss!r} {lr!r} {int(batch['idx'].sum())}\n")
        if self.delay:
            time.sleep(self.delay)


def env_test_callbacks() -> list[L.Callback]:
    """Callbacks switched on by the ZOO_TEST_* environment variables (none in normal use)."""
    path = os.environ.get(TRACE_ENV)
    return [LossTrace(path, float(os.environ.get(STEP_DELAY_ENV) or 0))] if path else []


# ---- signals ----------------------------------------------------------------------------------

class InterruptGuard(L.Callback):
    """Turns SIGTERM / SIGINT / SIGUSR1 into "finish this step, save `last.ckpt`, stop".

    Use `with guard.handlers(): trainer.fit(...)`, then read `guard.signum` / `guard.saved`.
    Lightning's SIGTERM handler (installed inside `fit`) sets `trainer.received_sigterm`; SIGINT and
    SIGUSR1 set the same flag here, so all three share Lightning's step-boundary exit
    (`SIGTERMException`), after which `on_exception` writes the checkpoint.
    """

    def __init__(self, last_path: str | Path, *, requeue_on_slurm: bool = True) -> None:
        self.last_path = Path(last_path)
        self.requeue_on_slurm = requeue_on_slurm
        self.signum: int | None = None
        self.saved: str | None = None
        self.step: int = 0
        self._sigints = 0
        self._trainer: L.Trainer | None = None

    # -- handlers
    @contextmanager
    def handlers(self) -> Iterator[InterruptGuard]:
        """Install the signal handlers for the duration of `fit` (main thread only), then restore."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
        previous = {s: signal.getsignal(s) for s in wanted}
        for s in wanted:
            signal.signal(s, self._on_signal)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:
                raise KeyboardInterrupt  # second Ctrl-C: stop now; the previous checkpoint is kept
        if self.signum is None:
            self.signum = signum
            again = " (press Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
            log.warning("received %s: stopping after the current step and saving %s%s", signal_name(signum),
                        self.last_path, again)
        self._request_stop()

    def _request_stop(self) -> None:
        trainer = self._trainer
        if trainer is not None:
            # Lightning 2.6 reads this flag at step boundaries (and broadcasts rank 0's under DDP/FSDP);
            # SIGTERM sets it through Lightning's own handler, the other signals through us.
            trainer._signal_connector.received_sigterm = True

    # -- callback hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signum is not None:  # a signal during set-up: Lightning reset its flag when installing handlers
            self._request_stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return  # crashes keep the last periodic checkpoint; a half-finished step is not saved
        if self.signum is None:
            self.signum = signal.SIGTERM  # delivered through Lightning's handler only (e.g. to a DDP child)
        self.step = trainer.global_step
        if trainer.sanity_checking or trainer.global_step == 0 or trainer.fast_dev_run:
            return
        try:
            trainer.save_checkpoint(self.last_path)
        except Exception as e:  # e.g. non-finite weights or a full disk: the previous checkpoint stays
            log.error("could not save %s on %s: %s", self.last_path, signal_name(self.signum), e)
            return
        self.saved = str(self.last_path)
        if trainer.is_global_zero:
            log.warning("saved %s at step %d", self.last_path, self.step)
        if self.signum == getattr(signal, "SIGUSR1", None) and self.requeue_on_slurm and trainer.is_global_zero:
            requeue_slurm_job()


def requeue_slurm_job() -> bool:
    """`scontrol requeue <job>` for the current SLURM job; False (with a log line) outside SLURM or on failure."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job:
        log.info("SIGUSR1 outside SLURM (no SLURM_JOB_ID): not requeueing; rerun the command to resume")
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("could not requeue SLURM job %s: %s", job, e)
        return False
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (exit %d): %s", job, result.returncode, result.stderr.strip())
        return False
    log.warning("requeued SLURM job %s; it will resume from the saved checkpoint", job)
    return True


def slurm_plugins() -> list[Any]:
    """Under SLURM, a SLURMEnvironment with Lightning's auto-requeue off: Lightning's own SIGUSR1
    handler saves mid-step from inside the signal handler; zoo's InterruptGuard saves at a step
    boundary and requeues instead."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
