"""Checkpoint files without Lightning: safe reading and atomic writing.

`safe_load` is the only way zoo reads a checkpoint file (resume, sample, export, `zoo.load`):
`torch.load(weights_only=True)`, so a crafted pickle cannot run code, and every way the file can be wrong
is one `CheckpointError` naming it. `atomic_torch_save` writes a file so that no fault can destroy the
previous one: the bytes go to a temporary file in the same folder, which is flushed, fsynced and renamed
over the target with `os.replace`, and the folder is fsynced. A process killed at any moment (SIGKILL,
power loss) leaves the previous file or the new one, never a torn one; a failed write (ENOSPC, EIO)
leaves the previous file and raises `CheckpointSaveError`. Temporary files of a killed writer are
removed by `clean_stale_temp_files` on the next start.

Lightning's side (the CheckpointIO plugin and the sharded-folder strategy that use these) is
`zoo.training.checkpoint_io`.
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

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"  # temporary checkpoint files: .<name>.tmp-<pid>
# Test hook: seconds to sleep after each 64 KiB written, so a test can SIGKILL a process mid-save.
SLOW_WRITE_ENV = "ZOO_TEST_CHECKPOINT_WRITE_DELAY"
_CHUNK = 1 << 16


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


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
        raise CheckpointSaveError(e.errno, f"could not save checkpoint {path}: {e.strerror or e} (folder "
                                  f"{path.parent}: about {_mib(tensor_bytes(obj))} needed, {_free(path.parent)} "
                                  f"free); the previous checkpoint at that path (if any) is intact.{hint}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. KeyboardInterrupt mid-write: no debris, old file intact
        raise
    fsync_dir(path.parent)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about what its file takes on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _free(directory: Path) -> str:
    try:
        return _mib(shutil.disk_usage(directory).free)
    except OSError:
        return "unknown"


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


