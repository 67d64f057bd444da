"""Lightning's side of checkpoint files: every local save atomic, every load weights-only.

Every local checkpoint (ModelCheckpoint's `last.ckpt` and `stepNNNNNN.ckpt`, the save on interruption)
goes through `AtomicCheckpointIO`, which writes with `zoo.checkpoints.files.atomic_torch_save` (temporary
file, fsync, rename: a kill leaves the previous file or the new one) and reads with its `safe_load`.
Those, `CheckpointError` and the temporary-file clean-up live in `zoo.checkpoints.files`, below training,
so that reading a checkpoint (`zoo.load`, zoo-sample) never imports Lightning; they are re-exported here.

`check_free_space` refuses to start a run whose disk cannot hold about two more checkpoints (at peak
a new `stepN.ckpt` and the temporary `last.ckpt` exist beside the old ones).

Sharded checkpoints (strategy=fsdp with `save_distributed_checkpoint=true`) are folders written by
torch.distributed.checkpoint on every rank: `AtomicModelParallelStrategy` writes each into a fresh
temporary folder and swaps it in with renames (`swap_in_folder`), so those are never torn either.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.strategies import ModelParallelStrategy

from zoo.checkpoints.files import (  # noqa: F401  (re-exported: the names training and its tests use)
    SLOW_WRITE_ENV,
    TMP_MARK,
    CheckpointError,
    CheckpointSaveError,
    atomic_torch_save,
    clean_stale_temp_files,
    fsync_dir,
    safe_load,
    unpickler_reason,
)

log = logging.getLogger(__name__)


class InsufficientDiskSpace(OSError):
    """The run folder's disk cannot hold the checkpoints a run will write (checked at start-up)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose local saves are atomic (see `atomic_torch_save`); remote URLs
    (`s3://...`) fall back to Lightning's own writer. Loading (resume) is always weights-only: local
    files through `safe_load`, remote ones through Lightning with `weights_only=True`.

    `on_error`: a local save that fails (`CheckpointSaveError`: full disk, read-only folder) stops the run
    (`stop`, the error propagates) or is logged as one warning and training goes on (`warn`); the previous
    file stays whole either way (`checkpoint.on_error`)."""

    def __init__(self, on_error: str = "stop") -> None:
        super().__init__()
        self.on_error = on_error
        self.failed_saves = 0

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ckpt = safe_load(path, map_location=map_location or "cpu")
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
        return ckpt

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        try:
            atomic_torch_save(checkpoint, path)
        except CheckpointSaveError as e:
            if self.on_error != "warn":
                raise CheckpointSaveError(e.errno, f"{e.strerror} To train on when a save fails, set "
                                          "checkpoint.on_error=warn.") from e
            self.failed_saves += 1
            log.warning("%s Training goes on (checkpoint.on_error=warn).", e.strerror)

# ---- sharded (folder) checkpoints -------------------------------------------------------------

SHARDED_TMP, SHARDED_OLD = ".sharded-tmp", ".sharded-old"  # .<name>.sharded-tmp / .<name>.sharded-old


def sharded_tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{SHARDED_TMP}")


def sharded_old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{SHARDED_OLD}")


def swap_in_folder(path: Path) -> None:
    """Make the finished folder `sharded_tmp_path(path)` the checkpoint at `path`, atomically enough that
    a kill at any moment leaves a complete checkpoint: at `path`, or (between the two renames only) at
    `sharded_old_path(path)`, which `recover_sharded` puts back on the next start."""
    tmp, old = sharded_tmp_path(path), sharded_old_path(path)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_sharded(path: Path) -> None:
    """Undo what a kill during a sharded save left: the unfinished temporary folder goes; a previous
    checkpoint moved aside (kill between `swap_in_folder`'s renames) comes back to `path`."""
    shutil.rmtree(sharded_tmp_path(path), ignore_errors=True)
    old = sharded_old_path(path)
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(old, path)
            except FileNotFoundError:  # another rank of this run restored it first
                return
            log.info("restored the sharded checkpoint %s moved aside by an interrupted save", path)


def atomic_model_parallel_strategy(**kwargs: Any) -> Any:
    """Lightning's ModelParallelStrategy (FSDP2) whose sharded folder checkpoints are written to a
    temporary folder by all ranks, then swapped in by rank 0 (`swap_in_folder`)."""
    class AtomicModelParallelStrategy(ModelParallelStrategy):
        def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
            if not self._save_distributed_checkpoint or storage_options is not None or "://" in str(filepath):
                return super().save_checkpoint(checkpoint, filepath, storage_options)  # one file: CheckpointIO
            path = Path(self.broadcast(str(filepath)))
            if self.global_rank == 0:
                recover_sharded(path)
            self.barrier("zoo_sharded_save_start")
            super().save_checkpoint(checkpoint, sharded_tmp_path(path))
            self.barrier("zoo_sharded_save_written")
            if self.global_rank == 0:
                swap_in_folder(path)
            self.barrier("zoo_sharded_save_done")

    return AtomicModelParallelStrategy(**kwargs)


# ---- disk space -------------------------------------------------------------------------------

def checkpoint_size_estimate(module: torch.nn.Module, optimizer_states: int = 2) -> int:
    """Bytes a checkpoint of `module` takes: its parameters and buffers, plus `optimizer_states`
    tensors of the same size per parameter (AdamW: exp_avg, exp_avg_sq), plus 1 MiB of metadata."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return params * (1 + optimizer_states) + buffers + (1 << 20)


def check_free_space(directory: Path, needed: int) -> None:
    """Fail fast when `directory`'s filesystem has less than `needed` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise InsufficientDiskSpace(errno.ENOSPC, f"not enough free disk space for checkpoints in {directory}: "
                      f"{_mib(free)} free, about {_mib(needed)} needed (two checkpoints of ~{_mib(needed // 2)}). "
                      "Free some space or choose another folder with run_dir=PATH.")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"

