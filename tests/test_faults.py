"""Faults of real clusters (issue 27): a checkpoint write that fails (full disk, read-only folder) keeps the
previous `last.ckpt` and stops or trains on as `checkpoint.on_error` says; a DDP rank that dies or hangs
makes the survivors stop in bounded time with one line, rank 0 saving what it holds."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_train
from omegaconf import OmegaConf

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


# ---- a DDP peer that dies or hangs (2 CPU processes, gloo) ------------------------------------------

DDP = [*TINY, "model.dropout=0.0", "trainer.max_steps=10", "trainer.val_check_interval=4",
       "checkpoint.every_n_steps=1000", "strategy=ddp", "trainer.devices=2"]
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ZOO_PLAIN_PROGRESS": "1",
            "PYTHONPATH": path, **extra}


def _trace(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _rank1_after_step(args: list[str], trace: Path, tmp_path: Path, step: int = 3):
    """Start zoo-train on 2 processes (Lightning launches rank 1 as a child); (process, rank 1's pid) once rank 0
    traced `step` steps."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo.train", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(ZOO_TEST_LOSS_TRACE=str(trace), ZOO_TEST_STEP_DELAY="0.5"))
    deadline = time.monotonic() + 180
    while len(_trace(trace)) < step:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"zoo-train did not reach step {step}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return proc, int(children[0])


def _stops_with_one_line(proc: subprocess.Popen, run_dir: Path, within: float) -> tuple[str, int]:
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=within + 60)
    finally:
        proc.kill()
    took = time.monotonic() - started
    assert proc.returncode == 1, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]  # one line, no traceback
    step = int(re.search(r"lost a peer at step (\d+)", lines[0]).group(1))
    assert f"saved the state it holds to {run_dir / 'checkpoints' / 'last.ckpt'} (emergency save, step {step})" \
        in lines[0] and "Resume with: zoo-train" in lines[0] and f"run_dir={run_dir}" in lines[0], lines[0]
    assert took < within, f"the surviving rank took {took:.1f} s to stop"
    return lines[0], step


@pytest.mark.slow  # two DDP processes, about 14 s: the full suite (CI) runs it, `-m "not slow"` stays under 4 min
def test_a_killed_ddp_rank_stops_rank_0_at_once_with_an_emergency_save(tmp_path):
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    proc, rank1 = _rank1_after_step([*DDP, f"run_dir={run_dir}"], trace, tmp_path)
    os.kill(rank1, signal.SIGKILL)
    line, step = _stops_with_one_line(proc, run_dir, within=30)
    assert "Connection" in line  # gloo's reason, shortened
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == step == len(_trace(trace)) and ckpt["emergency"]["step"] == step
    assert not list((run_dir / "checkpoints").glob(".*"))


@pytest.mark.slow
def test_rerun_after_a_killed_ddp_rank_continues_the_uninterrupted_loss_curve(tmp_path):
    run_dir, trace, reference = tmp_path / "run", tmp_path / "trace", tmp_path / "reference.trace"
    args = [*DDP, f"run_dir={run_dir}"]
    proc, rank1 = _rank1_after_step(args, trace, tmp_path)
    os.kill(rank1, signal.SIGKILL)
    _, step = _stops_with_one_line(proc, run_dir, within=30)
    for argv, path in ((args, trace), ([*DDP, f"run_dir={tmp_path / 'reference'}"], reference)):
        r = subprocess.run([sys.executable, "-m", "zoo.train", *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=_env(ZOO_TEST_LOSS_TRACE=str(path)))
        assert r.returncode == 0, r.stderr[-3000:]
    assert [int(line.split()[0]) for line in _trace(trace)] == list(range(1, 11))  # nothing lost or repeated
    assert _trace(trace) == _trace(reference)  # loss, lr and batch checksum equal, step for step


@pytest.mark.slow
def test_a_stopped_ddp_rank_stops_rank_0_within_strategy_timeout_with_an_emergency_save(tmp_path):
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    timeout = 20  # start-up (the store's rendezvous) is bounded by it too: on a loaded 2-core box it takes ~10 s
    proc, rank1 = _rank1_after_step([*DDP, f"strategy.timeout={timeout}", f"run_dir={run_dir}"], trace, tmp_path)
    os.kill(rank1, signal.SIGSTOP)
    try:
        line, step = _stops_with_one_line(proc, run_dir, within=timeout + 30)
        assert "timeout" in line.lower()
        assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == step
        time.sleep(0.5)
        assert not Path(f"/proc/{rank1}").exists() or " Z " in Path(f"/proc/{rank1}/stat").read_text()  # killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank1, signal.SIGKILL)


def test_strategy_timeout_reaches_the_process_group_and_is_checked():
    from zoo.config import ConfigError
    from zoo.training.builders import build_strategy
    from zoo.training.preflight import check_train_config

    assert build_strategy({"name": "ddp", "timeout": 7})._timeout == timedelta(seconds=7)
    c = OmegaConf.to_container(compose_train([*TINY, "strategy=ddp", "strategy.timeout=0"]), resolve=True)
    with pytest.raises(ConfigError, match="strategy.timeout"):
        check_train_config(c)
    assert compose_train(["strategy=ddp"]).strategy.timeout == compose_train(["strategy=fsdp"]).strategy.timeout == 300


def test_peer_failures_are_told_from_other_errors():
    from zoo.training.peers import is_peer_failure, short_cause

    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                        "[127.0.0.1]:37074. This is typically caused by a remote process exiting")
    assert is_peer_failure(gloo) and short_cause(gloo) == "Connection closed by peer [127.0.0.1]:37074"
    assert is_peer_failure(RuntimeError("Application timeout caused pair closure"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_peer_failure(ValueError("Connection reset by peer"))  # only what a collective raises


# ---- corrupt streaming chunks -------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_corrupt_streaming_chunk_is_an_error_naming_it_never_a_wrong_batch(tmp_path, damage):
    pytest.importorskip("litdata")
    from test_streaming import prepare, write_corpus

    from zoo.data.streaming import StreamingTextDataModule
    from zoo.data.streaming.verify import CorruptChunkError

    folder = prepare(tmp_path, "prepared", write_corpus(tmp_path / "corpus", n_files=2, size=8_000))
    chunks = sorted((folder / "train").glob("*.bin"))
    assert len(chunks) >= 2, chunks  # one damaged, the others fine
    dm = StreamingTextDataModule(str(folder), block_size=16, batch_size=4, shuffle=False)
    dm.setup("fit")
    clean = [b["idx"] for b in dm.train_dataloader()]  # every chunk reads as prepared

    victim = chunks[-1]
    data = bytearray(victim.read_bytes())
    if damage == "truncated":
        victim.write_bytes(data[: len(data) - 100])
    else:
        data[len(data) // 2] ^= 0x01  # one bit inside the token data: the batch would silently change
        victim.write_bytes(data)
    dm = StreamingTextDataModule(str(folder), block_size=16, batch_size=4, shuffle=False)
    dm.setup("fit")
    with pytest.raises(CorruptChunkError, match=rf"streaming chunk {victim} (is truncated|was altered).*zoo-prepare"):
        for i, batch in enumerate(dm.train_dataloader()):
            assert torch.equal(batch["idx"], clean[i])  # batches before the damaged chunk are the same
