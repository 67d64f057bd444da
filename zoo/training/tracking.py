"""Experiment loggers (W&B online when logged in and offline otherwise, CSV, TensorBoard, none) and how
sample media reach each of them.

Every logger kind gets the same scalars (the module's and the monitoring callbacks'); media files are
always written under the run folder by the sample renderers, and `log_media` hands them to the loggers
that display media: W&B (tables, images with captions, audio) and TensorBoard (text, images, audio).
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from zoo.members.base import SampleSet

log = logging.getLogger(__name__)
LOGGER_KINDS = ("wandb", "csv", "tensorboard", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
LOG_MODEL = (False, True, "all")  # WandbLogger: no artifacts, the best/last at the end, every checkpoint
RUN_ID_FILE = "wandb_run_id"


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
        return ResumableCSVLogger(save_dir=run_dir, name="csv", version="")
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False)
    if kind == "wandb":
        return _wandb_logger(cfg, run_dir=run_dir, name=name, config=config)
    raise ValueError(f"unknown logger kind {kind!r}; accepted: {list(LOGGER_KINDS)}")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv ("Previous log files in this directory will be
    deleted"), so a resumed run lost its history: this one keeps the rows and appends, reading the existing
    header so that a new column rewrites the file with every old row kept."""

    def _check_log_dir_exists(self) -> None:
        import csv

        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose `runs/<name>/csv/metrics.csv` survives a resume (rows appended, none deleted)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ZooWandbLogger(WandbLogger):
    """WandbLogger that finishes its W&B run when training ends (success or failure).

    Lightning leaves the run open until the process exits, so a second `zoo.train.run` in the same
    process (a Hydra multirun job, a notebook, a test) would silently log into the first job's run.
    Finishing in `finalize` (called after the checkpoints are uploaded) closes it; the run id file in
    the run folder lets a resumed training reattach to it.
    """

    def finalize(self, status: str) -> None:
        super().finalize(status)  # uploads the checkpoints as artifacts (log_model=true) on success
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


def run_id(run_dir: Path) -> str:
    """The W&B run id of this run folder: read from `run_dir/wandb_run_id`, created on first use.

    Only global rank 0 writes the file (other ranks never create a W&B run), so processes of one
    distributed job cannot race to store different ids.
    """
    id_file = run_dir / RUN_ID_FILE
    if id_file.is_file() and id_file.read_text().strip():
        return id_file.read_text().strip()
    new = secrets.token_hex(4)
    if getattr(rank_zero_only, "rank", 0) == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new + "\n")
    return new


def _wandb_logger(cfg: dict[str, Any], *, run_dir: Path, name: str, config: dict[str, Any] | None) -> Logger:
    mode = cfg.get("mode", "auto")
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode={mode!r}; accepted: {', '.join(WANDB_MODES)}")
    log_model = cfg.get("log_model", False)
    if log_model not in LOG_MODEL or isinstance(log_model, int) and not isinstance(log_model, bool):
        raise ValueError(f"logger.log_model={log_model!r}; accepted: false (no checkpoint artifacts), true (the "
                         "best and last checkpoints when training ends), all (every checkpoint as it is saved)")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        if mode == "offline":
            log.warning("W&B: no login found (WANDB_API_KEY or `wandb login`); logging offline to %s/wandb. "
                        "Upload later with `wandb sync %s/wandb/offline-run-*` (the parts of a resumed run "
                        "share one run id and are synced into one run, in order).", run_dir, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run id stored in the run folder makes a resumed training reattach to the same W&B run.
    return ZooWandbLogger(project=cfg.get("project", "zoo"), entity=cfg.get("entity"), name=name,
                          save_dir=str(run_dir), mode=mode, id=run_id(run_dir), resume="allow",
                          log_model=log_model, tags=list(cfg.get("tags", [])), config=config)


# ---- media --------------------------------------------------------------------------------------------

def log_media(logger: Logger, samples: SampleSet, step: int) -> None:
    """Hand one step's samples to `logger`: W&B gets a text table, captioned images and audio clips;
    TensorBoard gets text, images and audio; other loggers nothing (the files are in the run folder)."""
    if isinstance(logger, WandbLogger):
        _log_wandb(logger, samples, step)
    elif isinstance(logger, TensorBoardLogger):
        _log_tensorboard(logger, samples, step)


def _log_wandb(logger: WandbLogger, samples: SampleSet, step: int) -> None:
    import wandb

    media: dict[str, Any] = {}
    if samples.texts:
        media["samples/text"] = wandb.Table(columns=["step", "prompt", "sample"],
                                            data=[[step, p, s] for p, s in samples.texts])
    if samples.images:
        media["samples/images"] = [wandb.Image(str(p), caption=samples.caption(p)) for p in samples.images]
    if samples.labelled:
        media["samples/labelled"] = [wandb.Image(str(p), caption=c) for p, c in samples.labelled]
    if samples.audio:
        media["samples/audio"] = [wandb.Audio(str(p), caption=samples.caption(p)) for p in samples.audio]
    if media:
        # Through the logger, so the x-axis is trainer/global_step as for the scalars (passing `step=` to
        # wandb directly would clash with the W&B step that Lightning's own logging advances).
        logger.log_metrics(media, step=step)


def _log_tensorboard(logger: TensorBoardLogger, samples: SampleSet, step: int) -> None:
    from PIL import Image

    writer = logger.experiment
    if samples.texts:  # one markdown table: prompt | sample (TensorBoard renders markdown)
        rows = "".join(f"| {_md(p)} | {_md(s)} |\n" for p, s in samples.texts)
        writer.add_text("samples/text", "| prompt | sample |\n|---|---|\n" + rows, global_step=step)
    for i, path in enumerate(samples.images):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        writer.add_image(f"samples/image_{i}", pixels, global_step=step, dataformats="HWC")
        if samples.caption(path):
            writer.add_text(f"samples/image_{i}_caption", samples.caption(path), global_step=step)
    for i, path in enumerate(samples.audio):
        import soundfile
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
        mono = torch.from_numpy(wave.mean(axis=1)).clamp(-1, 1)[None]  # (1, n), as add_audio expects
        writer.add_audio(f"samples/audio_{i}", mono, global_step=step, sample_rate=rate)
    writer.flush()


def _md(text: str) -> str:
    """Text safe inside a markdown table cell: pipes escaped, newlines as <br>."""
    return text.replace("|", "\\|").replace("\n", "<br>")
