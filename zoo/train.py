"""zoo-train: train any zoo model from a Hydra config (conf/train.yaml), then print samples.

    zoo-train                                   # default GPT on embedded text
    zoo-train model.n_layer=2 data=text_files data.path=corpus/ trainer.max_steps=200
    zoo-train --cfg job                         # print the resolved config
    zoo-train -m model.n_layer=2,4              # multirun sweep
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from zoo.builders import build_data, build_module, build_strategy, check_writable, resolve_ckpt_path
from zoo.cli import CONF_DIR, resolve, run_checked

log = logging.getLogger("zoo.train")


def run(cfg: DictConfig, extra_callbacks: list | None = None) -> dict:
    """Train with a composed config; return a summary dict (paths, metrics, samples)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from zoo.callbacks import ProgressBar, SampleCallback, monitoring_callbacks
    from zoo.tracking import build_logger

    resolved = resolve(cfg, "zoo-train")
    run_dir = Path(cfg.get("run_dir") or hydra_run_dir())
    check_writable(run_dir)  # fail before any work, not after an hour
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = build_data(resolved["data"])
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(resolved["model"], resolved["module"], codec=dm.codec, train_config=resolved)
    if cfg.compile:
        module.model.compile()  # in place: state-dict keys stay free of `_orig_mod.`

    ckpt_dir = run_dir / "checkpoints"
    sample_cb = SampleCallback(run_dir / "samples", **OmegaConf.to_container(cfg.samples))
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=cfg.checkpoint.every_n_steps, save_last=True, save_top_k=1,
                        monitor="val/loss", mode="min", save_on_train_epoch_end=False),
        sample_cb,
        *monitoring_callbacks(OmegaConf.to_container(cfg.logger)),
        *(extra_callbacks or []),
    ]
    logger = build_logger(OmegaConf.to_container(cfg.logger), run_dir=run_dir, name=cfg.name, config=resolved)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer)
    if trainer_kwargs.get("enable_progress_bar", True) and os.environ.get("ZOO_PLAIN_PROGRESS") is None:
        callbacks.append(ProgressBar())
    strategy = build_strategy(resolved["strategy"], devices=trainer_kwargs["devices"],
                              num_nodes=trainer_kwargs["num_nodes"])
    trainer = L.Trainer(**trainer_kwargs, strategy=strategy, logger=logger or False, callbacks=callbacks,
                        default_root_dir=str(run_dir))
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = {"run_dir": str(run_dir), "checkpoint": str(ckpt_dir / "last.ckpt"), "metrics": metrics,
               "baseline": getattr(dm, "unigram_nll", lambda: None)(), "samples": sample_cb.last}
    if trainer.is_global_zero:
        print_summary(summary)
    return summary


def print_summary(s: dict) -> None:
    m = s["metrics"]
    print("\n" + "=" * 78)
    if "val/loss" in m:
        line = f"validation loss {m['val/loss']:.4f} nats/token (perplexity {m.get('val/ppl', float('nan')):.2f})"
        if s["baseline"] is not None:
            line += f"; unigram baseline {s['baseline']:.4f}"
        print(line + f"; = {m['val/loss'] / math.log(2):.4f} bits/token")
    if s["samples"] is not None:
        for prompt, text in s["samples"].texts:
            print(f"--- sample (prompt {prompt!r}) ---\n{prompt}{text}")
        for path in [*s["samples"].images, *s["samples"].audio]:
            print(f"sample file: {path}")
    print(f"run folder: {s['run_dir']}\ncheckpoint: {s['checkpoint']}")
    print(f"next: zoo-sample checkpoint={s['checkpoint']} num_samples=4")
    print("=" * 78)


def hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    summary = run(cfg)
    return summary["metrics"].get("val/loss")  # the value a sweeper would optimise


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_checked("train", _main)


if __name__ == "__main__":
    main()
