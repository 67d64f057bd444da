"""Faults during training: signals, a kill mid-save, a full or unwritable disk, and the end-of-run screen.

The signal tests run a real `zoo-train` subprocess, signal it while it trains, rerun the same
command and compare the per-step trace (loss, learning rate, batch checksum; written by
zoo.training.resilience.LossTrace) with an uninterrupted run: equal step for step, with dropout on so that the
RNG state matters.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_train, ordinary_user, public_folder

from zoo.train import print_interrupted, print_summary, run
from zoo.training import builders, checkpoint_io, resilience
from zoo.training.checkpoint import read_checkpoint
from zoo.training.checkpoint_io import (
    CheckpointSaveError,
    atomic_torch_save,
    check_free_space,
    checkpoint_size_estimate,
    clean_stale_temp_files,
)
from zoo.training.resilience import RNGState, capture_rng, restore_rng

# Dropout on: resuming must restore the RNG, not only weights, optimizer and data position.
RESUME = [*TINY, "model.dropout=0.1", "trainer.max_steps=10", "trainer.val_check_interval=4",
          "checkpoint.every_n_steps=1000"]


ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # zoo importable from tmp
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ZOO_PLAIN_PROGRESS": "1",
            "PYTHONPATH": path, **extra}


def _start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo.train", *args], cwd=cwd, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"zoo-train exited ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _trace(path: Path) -> list[tuple[int, str, str, str]]:
    """(step, loss, lr, batch checksum) per line; the floats stay strings (reprs) for exact comparison."""
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def _reference_trace(tmp_path: Path, monkeypatch) -> list:
    trace = tmp_path / "reference.trace"
    monkeypatch.setenv(resilience.TRACE_ENV, str(trace))
    run(compose_train([*RESUME, f"run_dir={tmp_path / 'reference'}"]))
    monkeypatch.delenv(resilience.TRACE_ENV)
    return _trace(trace)


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_and_rerun_resumes_step_for_step(tmp_path, monkeypatch):
    run_dir, trace = tmp_path / "run", tmp_path / "interrupted.trace"
    args = [*RESUME, f"run_dir={run_dir}"]
    proc = _start(args, tmp_path, ZOO_TEST_LOSS_TRACE=str(trace), ZOO_TEST_STEP_DELAY="0.2")
    _wait_for(lambda: len(_trace(trace)) >= 3, proc, what="step 3")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped_at = len(_trace(trace))
    assert 3 <= stopped_at < 10
    assert f"interrupted by SIGTERM at step {stopped_at}" in out
    assert "resume:       zoo-train" in out and f"run_dir={run_dir}" in out
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == stopped_at
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temp files left behind

    rerun = subprocess.run([sys.executable, "-m", "zoo.train", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=_env(ZOO_TEST_LOSS_TRACE=str(trace)))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr + rerun.stdout
    steps = [int(s) for s, *_ in _trace(trace)]
    assert steps == list(range(1, 11))  # every step exactly once: nothing lost, nothing repeated
    assert _trace(trace) == _reference_trace(tmp_path, monkeypatch)  # loss, lr and batch equal, step for step
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_saves_and_exits_130(tmp_path):
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    proc = _start([*RESUME, f"run_dir={run_dir}"], tmp_path, ZOO_TEST_LOSS_TRACE=str(trace),
                  ZOO_TEST_STEP_DELAY="0.2")
    _wait_for(lambda: len(_trace(trace)) >= 2, proc, what="step 2")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    stopped_at = len(_trace(trace))
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == stopped_at
    assert f"interrupted by SIGINT at step {stopped_at}" in out and "Traceback" not in err
    assert "press Ctrl-C again to abort without saving" in out + err


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_and_requeues_the_job(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    proc = _start([*RESUME, f"run_dir={run_dir}"], tmp_path, ZOO_TEST_LOSS_TRACE=str(trace),
                  ZOO_TEST_STEP_DELAY="0.3", SLURM_JOB_ID="4242", PATH=f"{bin_dir}:{os.environ['PATH']}")
    _wait_for(lambda: len(_trace(trace)) >= 2, proc, what="step 2")
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == len(_trace(trace))
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "requeued SLURM job 4242" in out + err


@pytest.mark.slow
def test_sigkill_mid_save_keeps_the_previous_last_ckpt_and_rerun_resumes(tmp_path):
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    ckpt_dir = run_dir / "checkpoints"
    args = [*TINY, "trainer.max_steps=8", "checkpoint.every_n_steps=2", f"run_dir={run_dir}"]
    proc = _start(args, tmp_path, ZOO_TEST_LOSS_TRACE=str(trace), ZOO_TEST_CHECKPOINT_WRITE_DELAY="0.1")
    temp = ckpt_dir / f".last.ckpt{checkpoint_io.TMP_MARK}{proc.pid}"
    # The second save of last.ckpt (step 4) is under way: the step-2 file exists beside its temp file.
    _wait_for(lambda: (ckpt_dir / "last.ckpt").exists() and temp.exists(), proc, what="the step-4 save")
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert temp.exists()  # the torn write is there, under its temporary name only
    assert read_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 2

    trace.unlink()
    rerun = subprocess.run([sys.executable, "-m", "zoo.train", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=_env(ZOO_TEST_LOSS_TRACE=str(trace)))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [int(s) for s, *_ in _trace(trace)] == list(range(3, 9))  # resumed after step 2
    assert read_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 8
    assert not temp.exists() and not list(ckpt_dir.glob(".*"))


# ---- atomic writes, in process ---------------------------------------------------------------------

def test_failed_save_mid_run_keeps_the_previous_checkpoint_and_stops_clearly(tmp_path, monkeypatch):
    saves = []
    real_save = torch.save

    def disk_fills_up(obj, f):  # the second last.ckpt (step 4's) hits a full disk halfway through
        saves.append(Path(f.name).name)
        if sum(".last.ckpt" in name for name in saves) == 2:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_fills_up)
    with pytest.raises(CheckpointSaveError, match=r"could not save checkpoint .*last\.ckpt: No space left on "
                       r"device \(folder .*checkpoints: about [0-9.]+ MiB needed, [0-9.]+ MiB free\); the previous "
                       r"checkpoint at that path \(if any\) is intact\. The disk is full.*checkpoint\.on_error=warn"):
        run(compose_train([*TINY, "trainer.max_steps=6", f"run_dir={tmp_path}"]))
    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_atomic_save_replaces_whole_files_and_cleans_up_after_errors(tmp_path):
    path = tmp_path / "sub" / "x.ckpt"
    atomic_torch_save({"a": torch.arange(3)}, path)
    atomic_torch_save({"a": torch.arange(5)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    with pytest.raises(AttributeError, match="Can't (pickle|get local object)"):
        atomic_torch_save({"t": torch.zeros(1000), "f": lambda: 0}, path)  # unpicklable: fails midway
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.ckpt"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt{checkpoint_io.TMP_MARK}{dead.pid}"
    live = tmp_path / f".step000004.ckpt{checkpoint_io.TMP_MARK}{os.getppid()}"  # a running writer's file
    for p in (stale, live):
        p.write_bytes(b"partial")
    (tmp_path / "last.ckpt").write_bytes(b"kept")
    assert clean_stale_temp_files(tmp_path) == [stale]
    assert live.exists() and (tmp_path / "last.ckpt").read_bytes() == b"kept"


# ---- RNG ---------------------------------------------------------------------------------------------

def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_torch_save({"rng": RNGState().state_dict()}, tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    cb = RNGState()
    cb.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    cb.on_train_batch_start(None, None, None, 0)  # restored right before the first resumed step
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    restore_rng(capture_rng())  # idempotent on the current state
    assert cb._pending is None


# ---- start-up checks ---------------------------------------------------------------------------------

def _no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the run folder was checked")


def test_run_dir_under_a_regular_file_fails_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr("zoo.training.run.build_data", _no_data)
    with pytest.raises(PermissionError, match=r"cannot write to the run folder .*file/sub.*run_dir=PATH"):
        run(compose_train([*TINY, f"run_dir={tmp_path / 'file' / 'sub'}"]))


@pytest.mark.slow
def test_cli_unwritable_run_dir_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "zoo.train", *TINY, f"run_dir={tmp_path / 'file' / 'sub'}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (f"zoo-train: cannot write to the run folder {tmp_path}/file/sub: "
                                                 "Not a directory. Choose another with run_dir=PATH or fix its "
                                                 "permissions.")
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_read_only_run_dir_fails_before_any_work(monkeypatch):
    monkeypatch.setattr("zoo.training.run.build_data", _no_data)
    check = builders.check_writable

    def check_as_ordinary_user(directory):  # as root, the check sees the permission bits as a user would
        with ordinary_user():
            check(directory)

    monkeypatch.setattr(builders, "check_writable", check_as_ordinary_user)
    with public_folder() as folder:
        ro = folder / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(PermissionError, match=f"cannot write to the run folder {ro}: Permission denied"):
            run(compose_train([*TINY, f"run_dir={ro}"]))
        assert list(ro.iterdir()) == []


def test_too_little_free_space_fails_before_training(tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    with pytest.raises(checkpoint_io.InsufficientDiskSpace, match=r"not enough free disk space for checkpoints "
                       r"in .*: 1\.0 MiB free, about .* MiB needed.*run_dir=PATH"):
        run(compose_train([*TINY, f"run_dir={tmp_path}"]))
    assert not list((tmp_path / "checkpoints").iterdir())


def test_free_space_estimate_counts_weights_and_two_adam_states(tmp_path, monkeypatch):
    import shutil

    layer = torch.nn.Linear(100, 10)  # 1010 fp32 parameters
    assert checkpoint_size_estimate(layer) == 1010 * 4 * 3 + (1 << 20)
    assert checkpoint_size_estimate(layer.to(torch.bfloat16), optimizer_states=0) == 1010 * 2 + (1 << 20)
    real = shutil.disk_usage
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    check_free_space(tmp_path, 1000)  # exactly enough passes
    with pytest.raises(OSError) as e:
        check_free_space(tmp_path, 1001)
    assert e.value.errno == errno.ENOSPC


# ---- the end-of-run screens ----------------------------------------------------------------------------

def test_summary_fits_one_screen_and_says_what_to_run_next(tmp_path, capsys):
    summary = run(compose_train([*TINY, "samples.max_new_tokens=200", f"run_dir={tmp_path}"]))
    out = capsys.readouterr().out
    screen = out[out.index("=" * 78):]
    assert len(screen.splitlines()) <= 20
    assert summary["best_val_loss"] is not None and f"best {summary['best_val_loss']:.4f}" in screen
    assert f"validation loss {summary['metrics']['val/loss']:.4f}" in screen
    assert f"checkpoint:   {tmp_path / 'checkpoints' / 'last.ckpt'}" in screen
    assert f"samples:      {tmp_path / 'samples'}" in screen
    assert f"next: zoo-sample checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'} num_samples=4" in screen


def test_interrupted_screen_says_how_to_resume(capsys):
    guard = resilience.InterruptGuard("runs/x/checkpoints/last.ckpt")
    guard.signum, guard.step, guard.saved = signal.SIGINT, 123, "runs/x/checkpoints/last.ckpt"
    print_interrupted({"metrics": {"val/loss": 1.5}, "best_val_loss": 1.25, "checkpoint": guard.saved,
                       "command": "zoo-train model.n_layer=2"}, guard)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 8
    assert "interrupted by SIGINT at step 123" in lines[1]
    assert "validation loss 1.5000" in lines[2] and "best 1.2500" in lines[2]
    assert any("resume:       zoo-train model.n_layer=2" in line for line in lines)
    print_summary({"metrics": {}, "run_dir": "r", "checkpoint": "r/last.ckpt", "samples": None})
    assert "next: zoo-sample checkpoint=r/last.ckpt" in capsys.readouterr().out


# ---- sharded (folder) checkpoints: strategy=fsdp with save_distributed_checkpoint=true ----------------

def _folder_ckpt(path: Path, tag: str) -> None:
    path.mkdir(parents=True)
    (path / "shard0").write_text(tag)
    (path / "meta.pt").write_text(tag)


def test_sharded_folder_swap_replaces_whole_folders_and_recovers_from_a_kill_between_renames(tmp_path):
    from zoo.training.builders import resolve_ckpt_path
    from zoo.training.checkpoint_io import recover_sharded, sharded_old_path, sharded_tmp_path, swap_in_folder

    last = tmp_path / "last.ckpt"
    _folder_ckpt(last, "old")
    _folder_ckpt(sharded_tmp_path(last), "new")
    swap_in_folder(last)
    assert (last / "shard0").read_text() == "new" and (last / "meta.pt").read_text() == "new"
    assert not sharded_tmp_path(last).exists() and not sharded_old_path(last).exists()

    # killed while the ranks were writing: the half-written temporary folder goes, last.ckpt stays
    (sharded_tmp_path(last) / "partial").parent.mkdir()
    (sharded_tmp_path(last) / "partial").write_text("torn")
    recover_sharded(last)
    assert not sharded_tmp_path(last).exists() and (last / "shard0").read_text() == "new"

    # killed between the two renames: the previous checkpoint is aside and comes back on the next start
    last.rename(sharded_old_path(last))
    _folder_ckpt(sharded_tmp_path(last), "newer")
    resolve_ckpt_path("last", tmp_path)
    assert (last / "shard0").read_text() == "new" and not sharded_tmp_path(last).exists()
    assert not sharded_old_path(last).exists()
