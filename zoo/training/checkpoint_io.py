"""Writing checkpoints so that no fault can destroy the last good one.

Every local checkpoint (ModelCheckpoint's `last.ckpt` and `stepNNNNNN.ckpt`, the save on interruption)
goes through `AtomicCheckpointIO`: the bytes go to a temporary file in the same folder, which is
flushed, fsynced and renamed over the target with `os.replace`, and the folder is fsynced. A process
killed at any moment (SIGKILL, power loss) leaves the previous file or the new one, never a torn
one; a failed write (ENOSPC, EIO) leaves the previous file and raises `CheckpointSaveError`.
Temporary files of a killed writer are removed by `clean_stale_temp_files` on the next start.

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
import pickle
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.strategies import ModelParallelStrategy

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"  # temporary checkpoint files: .<name>.tmp-<pid>
# Test hook: seconds to sleep after each 64 KiB written, so a test can SIGKILL a process mid-save.
SLOW_WRITE_ENV = "ZOO_TEST_CHECKPOINT_WRITE_DELAY"
_CHUNK = 1 << 16


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


class InsufficientDiskSpace(OSError):
    """The run folder's disk cannot hold the checkpoints a run will write (checked at start-up)."""


class _SlowWriter:
    """File wrapper that sleeps `delay` seconds per 64 KiB written (only under SLOW_WRITE_ENV, for tests)."""

    def __init__(self, f: Any, delay: float) -> None:
        self.f, self.delay, self.written = f, delay, 0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        chunks_before, self.written = self.written // _CHUNK, self.written + len(data)
        if self.written // _CHUNK > chunks_before:
            self.f.flush()  # the partial temp file is visible on disk while we sleep
            time.sleep(self.delay * (self.written // _CHUNK - chunks_before))
        return n

    def flush(self) -> None:
        self.f.flush()


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` that never leaves a partial file at `path` (temp file + fsync + rename).

    Raises CheckpointSaveError (an OSError keeping the original errno) when writing fails; the
    temporary file is removed and whatever was at `path` before is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    delay = float(os.environ.get(SLOW_WRITE_ENV) or 0)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, _SlowWriter(f, delay) if delay > 0 else f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        hint = " The disk is full: free space or choose another run_dir." if e.errno == errno.ENOSPC else ""
        raise CheckpointSaveError(e.errno, f"could not save checkpoint {path}: {e.strerror or e}; the previous "
                                  f"checkpoint at that path (if any) is intact.{hint}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. KeyboardInterrupt mid-write: no debris, old file intact
        raise
    fsync_dir(path.parent)


def clean_stale_temp_files(directory: Path) -> list[Path]:
    """Remove temporary checkpoint files left by processes that no longer run (killed mid-save)."""
    removed = []
    for tmp in directory.glob(f".*{TMP_MARK}*") if directory.is_dir() else []:
        pid = tmp.name.rpartition(TMP_MARK)[2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another live process is writing it
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d unfinished checkpoint file(s) from an interrupted save in %s", len(removed), directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unpickler_reason(message: str) -> str:
    """The useful line of torch's weights-only refusal (its advice to retry unsafely is left out)."""
    globals_ = [ln.strip() for ln in message.splitlines() if "GLOBAL " in ln]  # a forbidden object, any wording
    if globals_:
        return globals_[0].split(". Please use")[0]
    _, _, tail = message.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0].split(". Please use")[0] if lines else message.splitlines()[0]


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, so a crafted pickle cannot
    run code. Every way the file can be wrong (empty, truncated, junk, a forbidden object) is one
    `CheckpointError` naming the file; the only way checkpoints are read in zoo (resume, sample, export, hub)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the save was probably interrupted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the errors below say it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = unpickler_reason(str(e))
        if "GLOBAL " in reason:
            name = re.search(r"GLOBAL (\S+)", reason)
            raise CheckpointError(
                f"refused to load {path}: it contains objects other than tensors and plain data "
                f"({name.group(1) if name else reason}), which could run code when unpickled. zoo checkpoints "
                "never hold such objects: the file was not written by zoo-train or was tampered with") from e
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt, or not a "
                              f"checkpoint ({reason})") from e
    except MemoryError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: it claims more memory than available; the file is "
                              "corrupt or not a checkpoint") from e
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler runs no code; any failure = bad file
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt "
                              f"({type(e).__name__}: {detail})") from e


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose local saves are atomic (see `atomic_torch_save`); remote URLs
    (`s3://...`) fall back to Lightning's own writer. Loading (resume) is always weights-only: local
    files through `safe_load`, remote ones through Lightning with `weights_only=True`."""

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
        atomic_torch_save(checkpoint, path)

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

