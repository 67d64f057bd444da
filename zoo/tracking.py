"""Experiment loggers: W&B (online when logged in, offline otherwise), CSV, TensorBoard, none."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

log = logging.getLogger(__name__)
LOGGER_KINDS = ("wandb", "csv", "tensorboard", "none")


def wandb_logged_in(host: str = "api.wandb.ai") -> bool:
    """True if W&B credentials exist (WANDB_API_KEY or a netrc entry). Never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def build_logger(cfg: dict[str, Any], *, run_dir: Path, name: str,
                 config: dict[str, Any] | None = None) -> Logger | None:
    """Build the logger described by `cfg["kind"]` writing under `run_dir`."""
    kind = cfg.get("kind", "csv")
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=run_dir, name="csv", version="")
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="")
    if kind == "wandb":
        return _wandb_logger(cfg, run_dir=run_dir, name=name, config=config)
    raise ValueError(f"unknown logger kind {kind!r}; accepted: {list(LOGGER_KINDS)}")


def _wandb_logger(cfg: dict[str, Any], *, run_dir: Path, name: str, config: dict[str, Any] | None) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.get("mode", "auto")
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode={mode!r}; accepted: auto, online, offline, disabled")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        if mode == "offline":
            log.warning("W&B: no login found (WANDB_API_KEY or `wandb login`); logging offline to %s/wandb. "
                        "Upload later with `wandb sync %s/wandb/offline-run-*`.", run_dir, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run id stored in the run folder makes a resumed training reattach to the same W&B run.
    id_file = run_dir / "wandb_run_id"
    if id_file.is_file() and id_file.read_text().strip():
        run_id = id_file.read_text().strip()
    else:
        import secrets

        run_id = secrets.token_hex(4)
        id_file.write_text(run_id)
    return WandbLogger(project=cfg.get("project", "zoo"), entity=cfg.get("entity"), name=name,
                       save_dir=str(run_dir), mode=mode, id=run_id, resume="allow",
                       log_model=cfg.get("log_model", False), tags=list(cfg.get("tags", [])), config=config)
