"""Training callbacks: periodic samples (logged as media and saved under the run folder).

How samples are drawn and rendered depends on the domain; each domain registers a `SampleRenderer`
keyed by codec type. Text is here; images and music register theirs from their own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from zoo.codecs.base import Codec
from zoo.sampling import SamplingConfig, generate

log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """What a renderer produced for one step: text rows and/or media files, ready to log."""

    texts: list[tuple[str, str]] = field(default_factory=list)  # (prompt, sample)
    images: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)


# (module, datamodule, sampling config, output folder, step) -> SampleSet
SampleRenderer = Callable[[L.LightningModule, Any, SamplingConfig, Path, int], SampleSet]
RENDERERS: dict[str, SampleRenderer | str] = {  # codec type -> renderer, or "module:function" (lazy import)
    "image_patch": "zoo.image_samples:render",
    "midi_performance": "zoo.music_samples:render",
    "jsb_grid": "zoo.music_samples:render",
    "text_image": "zoo.text2image_samples:render",
}


def get_renderer(codec_type: str) -> SampleRenderer | None:
    renderer = RENDERERS.get(codec_type)
    if isinstance(renderer, str):
        import importlib

        module_name, func = renderer.split(":")
        renderer = RENDERERS[codec_type] = getattr(importlib.import_module(module_name), func)
    return renderer


def text_samples(module: L.LightningModule, datamodule: Any, cfg: SamplingConfig, out_dir: Path,
                 step: int) -> SampleSet:
    codec: Codec = module.codec
    prompts = list(getattr(datamodule, "sample_prompts", None) or ["\n"])
    room = module.model.max_len
    ids = [codec.encode(p)[-(room // 2):] for p in prompts]  # leave at least half the context to generate
    prompts = [codec.decode(i) for i in ids]
    max_new = min(cfg.max_new_tokens, room - max(len(i) for i in ids))
    rows = generate(module.model, ids, cfg, max_new_tokens=max_new)
    texts = [(p, codec.decode(r)) for p, r in zip(prompts, rows)]
    path = out_dir / f"step_{step:06d}.txt"
    path.write_text("".join(f"=== prompt: {p!r}\n{p}{s}\n\n" for p, s in texts))
    return SampleSet(texts=texts)


for _kind in ("char", "byte", "bpe"):
    RENDERERS[_kind] = text_samples


class SampleCallback(L.Callback):
    """Every `every_n_steps` optimizer steps (and at the end of training), on global rank 0,
    generate samples, save them under `out_dir` and log them to every logger that takes media."""

    def __init__(self, out_dir: str | Path, *, every_n_steps: int = 500, num_samples: int = 3,
                 **sampling: Any) -> None:
        self.out_dir = Path(out_dir)
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.sampling = SamplingConfig(**sampling)
        self.last: SampleSet | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step > 0 and not trainer.fast_dev_run:
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sample(trainer, pl_module)

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> SampleSet | None:
        codec = getattr(pl_module, "codec", None)
        renderer = get_renderer(codec.type_name) if codec is not None else None
        if not trainer.is_global_zero or renderer is None:
            return None
        if trainer.strategy.__class__.__name__ == "ModelParallelStrategy":
            return None  # sharded parameters: sample from the saved checkpoint with zoo-sample instead
        self.out_dir.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        with torch.random.fork_rng():  # sampling must not change the training RNG stream
            samples = renderer(pl_module, trainer.datamodule, self.sampling, self.out_dir, step)
        self.last = samples
        for logger in trainer.loggers:
            _log_media(logger, samples, step)
        return samples


def _log_media(logger: Any, samples: SampleSet, step: int) -> None:
    name = type(logger).__name__
    if name == "WandbLogger":
        if samples.texts:
            logger.log_text("samples/text", columns=["step", "prompt", "sample"],
                            data=[[step, p, s] for p, s in samples.texts], step=step)
        if samples.images:
            logger.log_image("samples/images", [str(p) for p in samples.images], step=step)
        if samples.audio:
            import wandb

            logger.experiment.log({"samples/audio": [wandb.Audio(str(p)) for p in samples.audio]}, step=step)
    elif name == "TensorBoardLogger":
        for i, (p, s) in enumerate(samples.texts):
            logger.experiment.add_text(f"samples/{i}", f"**{p}**{s}", global_step=step)


def monitoring_callbacks(logger_cfg: dict[str, Any]) -> list[L.Callback]:
    """Callbacks that observe training for the loggers (added by zoo-train after sampling)."""
    return []


class ProgressBar(RichProgressBar):
    """Rich progress bar over optimizer steps (a zoo run is one long "epoch" of random crops)."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "train"
