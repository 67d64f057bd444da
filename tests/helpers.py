"""Shared test helpers: compose zoo's Hydra configs, run zoo-train in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
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
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
