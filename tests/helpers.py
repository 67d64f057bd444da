"""Shared test helpers: compose zoo's Hydra configs, run zoo-train in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small enough to train a few steps in seconds on one CPU thread.
TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
    "data.batch_size=4", "data.max_val_windows=4", "trainer.max_steps=4", "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "samples.every_n_steps=0",
    "samples.max_new_tokens=8", "samples.num_samples=1", "checkpoint.every_n_steps=2", "logger=none",
    "threads=1",
]


def compose_train(overrides: list[str], config_name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a zoo console script (`zoo-train ...`) through the current interpreter."""
    module = {"zoo-train": "zoo.train", "zoo-sample": "zoo.sample", "zoo-export": "zoo.export"}[args[0]]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's zoo
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# Per model: a tiny size and a data option that needs no network (jsb_chorales reads `jsb_file`). Dropout
# off so that runs on different numbers of processes draw the same numbers and can be compared.
TINY_MODELS = {
    "gpt": ["model=gpt", "data=pydoc", "model.n_layer=2", "model.n_head=2", "model.n_embd=32",
            "model.block_size=32", "data.max_val_windows=4"],
    "image_gpt": ["model=image_gpt", "data=digits", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                  "model.local_n_layer=1", "model.local_n_head=2", "model.local_n_embd=16", "model.dropout=0.0",
                  "model.cond_dropout=0.0"],
    "music_transformer": ["model=music_transformer", "data=jsb_chorales", "model.n_layer=2", "model.n_head=2",
                          "model.n_embd=32", "model.block_size=32", "model.dropout=0.0", "data.max_val_windows=4"],
    "text2image": ["model=text2image", "data=captioned_digits", "model.n_layer=1", "model.n_head=2",
                   "model.n_embd=32", "model.local_n_layer=1", "model.local_n_head=2", "model.local_n_embd=16",
                   "model.dropout=0.0", "model.cond_dropout=0.0", "data.num_eval=16"],
}
# A few quick steps on one CPU thread, nothing but checkpoints written.
TINY_RUN = [
    "data.batch_size=4", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "samples.every_n_steps=0", "samples.max_new_tokens=8",
    "samples.num_samples=1", "checkpoint.every_n_steps=2", "logger=none", "threads=1",
]


def jsb_file(directory: Path) -> Path:
    """A small file in the JSB Chorales JSON layout (3 pieces of 64 four-voice steps per split)."""
    import json
    import random

    rng = random.Random(0)

    def piece() -> list[list[int]]:
        return [[rng.randint(60, 72), rng.randint(55, 67), rng.randint(48, 60), rng.randint(36, 48)]
                for _ in range(64)]

    path = directory / "jsb.json"
    path.write_text(json.dumps({split: [piece() for _ in range(3)] for split in ("train", "valid", "test")}))
    return path


def tiny_model_overrides(model: str, directory: Path) -> list[str]:
    """Overrides for a tiny, offline, dropout-free `model` run (TINY_MODELS + TINY_RUN); files go to `directory`."""
    extra = [f"data.path={jsb_file(directory)}"] if model == "music_transformer" else []
    return [*TINY_MODELS[model], *TINY_RUN, *extra]


def jsb_fixture(folder: Path, steps: int = 64) -> Path:
    """`folder/jsb.json`: a small file in the JSB Chorales JSON layout (3 pieces per split of `steps`
    4-voice 16th-note steps), for tests that must not need ../shared."""
    import json
    import random

    rng = random.Random(0)
    piece = lambda: [[rng.randint(60, 72), rng.randint(55, 67), rng.randint(48, 60), rng.randint(36, 48)]
                     for _ in range(steps)]
    path = folder / "jsb.json"
    path.write_text(json.dumps({split: [piece() for _ in range(3)] for split in ("train", "valid", "test")}))
    return path


# Every kernel variant the float64 parity tests run against the math kernel (test_attention_core,
# test_gqa_window_alibi): the registry's names plus the chunked kernel forced down each of its two paths.
def kernel_variants() -> dict:
    import functools

    from zoo.core import kernels

    return {"math": "math", "sdpa": "sdpa", "chunked": "chunked",
            "chunked-kernel-path": functools.partial(kernels.chunked_attention, chunk=5, path="kernel"),
            "chunked-matmul-path": functools.partial(kernels.chunked_attention, chunk=5, path="matmul")}


def loss_recorder(crash_at: int | None = None):
    """A callback recording the training loss per step; it raises "simulated crash" after step `crash_at`."""
    import lightning as L

    class Record(L.Callback):
        def __init__(self) -> None:
            self.losses: dict[int, float] = {}
            self.crash_at = crash_at

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses[trainer.global_step] = float(outputs["loss"])
            if trainer.global_step == self.crash_at:
                raise RuntimeError("simulated crash")

    return Record()


@contextmanager
def public_folder() -> Iterator[Path]:
    """A fresh folder that an ordinary user can reach (mode 755 under the system's temporary folder: pytest's
    own tmp_path sits in a 700 folder of the user who runs the tests); removed afterwards."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="zoo-public-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            path.chmod(0o700)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def ordinary_user() -> Iterator[None]:
    """For the block, an ordinary user's view of file permissions: as root the effective uid becomes `nobody`'s
    (root ignores permission bits, so a permission test run as root would test nothing); restored on exit.
    Keep the block to the file operations: modules not yet imported may be unreadable to `nobody`."""
    import pwd

    root = os.name == "posix" and os.geteuid() == 0
    if root:
        os.seteuid(pwd.getpwnam("nobody").pw_uid)
    try:
        yield
    finally:
        if root:
            os.seteuid(0)
