"""A DDP/FSDP peer that dies (`kill -9`, a lost node) or hangs (SIGSTOP, a stuck file system): the survivors
stop within `strategy.timeout` seconds with one line, and under DDP rank 0 first saves the state it holds.

How a survivor notices: its next collective fails. A dead peer's sockets are closed by its kernel, so gloo
fails at once ("Connection reset by peer"); a hung peer answers nothing, so the collective fails when the
process group's timeout runs out (`strategy.timeout`, passed to `init_process_group` by Lightning; torch's
default is 30 minutes for gloo). Under NCCL the watchdog aborts the process at that timeout instead of
raising, so only the line is lost there, not the checkpoint already on disk.

What can be saved. Under DDP every rank holds the whole model and optimizer state, so rank 0 saves without
any collective (Lightning's `trainer.save_checkpoint` starts with a barrier, which would fail too). The
failure comes inside the next step (its loss or gradient all-reduce), before the optimizer changes the
weights, optimizer state, schedule or step count: those are still step N's. What the step in flight has
already moved on is small and copied at each step boundary (`on_train_batch_end`, where ModelCheckpoint
saves): the loops' progress and data position, and the callbacks' state (the RNG states). The emergency
checkpoint is Lightning's `dump_checkpoint` with those two parts put back, written with the atomic writer
as `last.ckpt` and marked `emergency`; the rerun resumes as after a SIGTERM: at most the step in flight is
lost. If the failure comes after the optimizer step began, the weights are no longer step N's, and nothing
is written. Under FSDP each rank holds only its shard: the dead rank's part of the
weights and optimizer state is gone, so no complete checkpoint can be made; the last periodic one is it.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer import call

from zoo.checkpoints.files import atomic_torch_save

log = logging.getLogger(__name__)

# what a failed collective says when a peer is gone or silent (gloo, NCCL, the TCP store)
PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Application timeout",
              "Timed out", "timed out", "Timeout", "timeout", "NCCL communicator was aborted", "Connection refused",
              "ProcessGroup", "gloo")


def is_peer_failure(e: BaseException) -> bool:
    """True for the error a collective raises when another rank died or stopped answering."""
    if isinstance(e, torch.distributed.DistError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_SIGNS)


def short_cause(e: BaseException) -> str:
    """The useful part of a gloo/NCCL message: 'Connection reset by peer', 'Timed out waiting 5000ms ...'."""
    text = " ".join(str(e).split())
    for sign in PEER_SIGNS:
        at = text.find(sign)
        if at >= 0:
            sentence = text[at:].split(". ")[0]  # gloo goes on with advice that does not apply here
            return sentence[:100].rstrip(" .,:")
    return text[:80]


class PeerFailure(Exception):
    """A peer of this process died or hung; the message is the one line zoo-train prints."""

    def __init__(self, *, rank: int, world_size: int, step: int, cause: str, saved: str | None,
                 last_checkpoint: str | None, resume_command: str, sharded: bool) -> None:
        self.rank, self.saved = rank, saved
        if saved:
            kept = f"rank 0 saved the state it holds to {saved} (emergency save, step {step})"
        elif sharded:
            kept = (f"under FSDP the lost rank's shard cannot be saved; the last checkpoint is "
                    f"{last_checkpoint or 'none yet'}")
        elif rank != 0:
            kept = f"rank 0 saves what it holds if it survived; else the last checkpoint is {last_checkpoint or 'none'}"
        else:
            kept = f"nothing newer could be saved; the last checkpoint is {last_checkpoint or 'none yet'}"
        super().__init__(f"rank {rank} of {world_size} lost a peer at step {step} ({cause}): another rank died or "
                         f"stopped answering within strategy.timeout; {kept}. Resume with: {resume_command}")


class PeerWatch(L.Callback):
    """Under DDP, copies the small step-boundary state each step and, when a collective fails because a peer is
    gone, writes step N's checkpoint (rank 0) to `last_path`; `failure` is then the exception, `saved` the path."""

    def __init__(self, last_path: str | Path) -> None:
        self.last_path = Path(last_path)
        self.enabled = False
        self.failure: BaseException | None = None
        self.saved: str | None = None
        self.step = 0
        self._boundary: dict[str, Any] | None = None  # what the step in flight moves on: loops, callbacks
        self._boundary_step = 0
        self._stepping = False  # the optimizer has begun changing the tensors the snapshot references

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.enabled = trainer.world_size > 1 and isinstance(trainer.strategy, DDPStrategy)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._stepping = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._stepping = False
        if self.enabled and trainer.is_global_zero:  # small: counters, data position, RNG states (no collective)
            self._boundary = copy.deepcopy({"loops": trainer._checkpoint_connector._get_loops_state_dict(),
                                            "callbacks": call._call_callbacks_state_dict(trainer)})
            self._boundary_step = trainer.global_step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size < 2 or not is_peer_failure(exception):
            return
        self.failure, self.step = exception, trainer.global_step
        if not (self.enabled and trainer.is_global_zero and self._boundary is not None) or self._stepping:
            return
        if trainer.global_step != self._boundary_step:  # the optimizer stepped since: not step N's weights
            return
        try:  # step N's tensors (not stepped since) with step N's counters, data position and RNG put back
            checkpoint = {**trainer._checkpoint_connector.dump_checkpoint(), **self._boundary,
                          "emergency": {"reason": short_cause(exception), "time": time.time(),
                                        "step": self._boundary_step}}
            atomic_torch_save(checkpoint, self.last_path)
        except Exception as e:  # e.g. a full disk, or weights found non-finite: the previous file stays
            log.error("emergency save failed: %s", e)
            return
        self.saved, self.step = str(self.last_path), self._boundary_step


def stop_launched_ranks(trainer: L.Trainer) -> None:
    """Kill the ranks this process launched (Lightning's subprocess launcher), so a hung one does not
    outlive the run; SIGKILL reaches a stopped process too."""
    for proc in getattr(trainer.strategy.launcher, "procs", []) or []:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
