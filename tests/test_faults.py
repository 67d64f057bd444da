"""Faults of real clusters (issue 27): a checkpoint write that fails (full disk, read-only folder) keeps the
previous `last.ckpt` and stops or trains on as `checkpoint.on_error` says; a DDP rank that dies or hangs
makes the survivors stop in bounded time with one line, rank 0 saving what it holds."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_train

from zoo.checkpoints import files
from zoo.train import run
from zoo.training.checkpoint import read_checkpoint
from zoo.training.checkpoint_io import CheckpointSaveError


def _fail_last_ckpt_save(monkeypatch, which: int, error: OSError) -> list[str]:
    """Make the `which`-th write of last.ckpt fail with `error` (ENOSPC halfway, or a refused open)."""
    opened: list[str] = []
    real_open = open

    def faulty_open(path, mode="r", *args, **kwargs):
        name = Path(path).name
        if "w" in mode and name.startswith(".last.ckpt" + files.TMP_MARK):
            opened.append(name)
            if len(opened) == which:
                if error.errno == errno.ENOSPC:
                    f = real_open(path, mode, *args, **kwargs)
                    f.write(b"x" * 1000)  # a partial temp file, as a disk filling up mid-write leaves
                    f.close()
                raise error
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", faulty_open, raising=False)  # the module's `open`, not the builtin
    return opened


def test_full_disk_with_on_error_warn_keeps_the_previous_file_and_trains_on(tmp_path, monkeypatch, caplog):
    _fail_last_ckpt_save(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with caplog.at_level(logging.WARNING):
        summary = run(compose_train([*TINY, "trainer.max_steps=6", "checkpoint.on_error=warn",
                                     f"run_dir={tmp_path}"]))
    ckpt_dir = tmp_path / "checkpoints"
    warned = [r.getMessage() for r in caplog.records if "on_error=warn" in r.getMessage()]
    assert len(warned) == 1, warned  # one line for the one failed save
    assert f"folder {ckpt_dir}" in warned[0] and "MiB needed" in warned[0] and "No space left" in warned[0]
    assert summary["step"] == 6  # trained on; the next save (step 6) wrote last.ckpt again
    assert read_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 6
    assert not list(ckpt_dir.glob(".*"))  # no temp files left over


def test_read_only_folder_with_on_error_stop_keeps_the_previous_file_and_names_the_folder(tmp_path, monkeypatch):
    _fail_last_ckpt_save(monkeypatch, 2, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    with pytest.raises(CheckpointSaveError) as info:
        run(compose_train([*TINY, "trainer.max_steps=6", f"run_dir={tmp_path}"]))  # on_error=stop: the default
    message = str(info.value)
    assert "Permission denied" in message and f"folder {tmp_path / 'checkpoints'}" in message
    assert "MiB needed" in message and "checkpoint.on_error=warn" in message
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2  # step 2's, whole


def test_needed_bytes_count_every_tensor_of_a_nested_checkpoint():
    ckpt = {"state_dict": {"w": torch.zeros(10, 10)}, "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(
        10, 10, dtype=torch.float64)}}}], "epoch": 3}
    assert files.tensor_bytes(ckpt) == 400 + 800
