"""zoo-train: train any zoo model from a Hydra config (conf/train.yaml), then print samples.

    zoo-train                                   # default GPT on embedded text
    zoo-train model.n_layer=2 data=text_files data.path=corpus/ trainer.max_steps=200
    zoo-train --cfg job                         # print the resolved config
    zoo-train -m model.n_layer=2,4              # multirun sweep
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo import cli
from zoo.config import ConfigError
from zoo.data.download import MissingExtra
from zoo.training import builders, checkpoint_io, init_from, lora, resilience
from zoo.training.builders import build_data, build_module
from zoo.training.callbacks import SampleCallback, monitoring_callbacks
from zoo.training.checkpoint_io import CheckpointError, CheckpointSaveError, InsufficientDiskSpace
from zoo.training.module import NonFiniteLossError
from zoo.training.progress import ProgressBar
from zoo.training.resilience import Interrupted
from zoo.training.summary import interrupted_screen, opening_line, results, resume_advice, summary_screen
from zoo.training.tracking import build_logger

log = logging.getLogger("zoo.train")


def run(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None, overrides: list[str] | None = None) -> dict:
    """Train with a composed config; return a summary dict (paths, metrics, samples).

    `overrides`: the command line's (Hydra's task overrides when None); with `init_from` they say which
    model settings the user changed. Raises `zoo.config.ConfigError` for a config that cannot work, before
    any work, and `zoo.training.resilience.Interrupted` after SIGTERM / SIGINT / SIGUSR1, once `last.ckpt` is saved."""
    keys = override_keys(overrides)
    source = load_source(cfg, keys) if cfg.get("init_from") else None
    c = cli.resolve(cfg, "zoo-train")
    cli.check_train_config(c)
    run_dir = Path(c["run_dir"] or cli.hydra_run_dir())
    ckpt_dir = run_dir / "checkpoints"
    builders.check_writable(run_dir)  # fail before any work, not after an hour
    builders.check_writable(ckpt_dir)
    checkpoint_io.clean_stale_temp_files(ckpt_dir)  # debris of a save killed midway (last.ckpt itself is intact)
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    L.seed_everything(c["seed"], workers=True, verbose=False)

    dm = build_data(init_from.data_section(c["init_from"], source.codec, c["data"], keys) if source else c["data"])
    try:
        dm.prepare_data()
        dm.setup("fit")
    except ValueError as e:  # e.g. characters the source's char codec has no token for
        if source is None:
            raise
        raise init_from.codec_refusal(c["init_from"], source.codec, c["data"].get("name", "data"), e) from None
    if source is not None:
        init_from.check_codec(c["init_from"], source.codec, c["data"].get("name", "data"), dm.codec)
    module = build_module(c["model"], c["module"], codec=dm.codec, train_config=c, optim_cfg=c.get("optim"))
    ckpt_path = builders.resolve_ckpt_path(c["ckpt_path"], ckpt_dir)
    if source is not None and ckpt_path:
        log.info("init_from=%s: not applied, this run resumes from its own %s", c["init_from"], ckpt_path)
    elif source is not None:
        init_from.copy_weights(module.model, source.model, c["init_from"])
        log.info("init_from=%s: weights loaded (fresh optimizer, step 0)", c["init_from"])
    if (c.get("lora") or {}).get("rank"):
        lora.apply_lora(module.model, c["lora"])
        log.info("%s", lora.parameter_summary(module.model))
    checkpoint_io.check_free_space(ckpt_dir, 2 * checkpoint_io.checkpoint_size_estimate(module))
    log.info("%s", opening_line(module, c["data"].get("name", "data"), c["trainer"]["max_steps"], run_dir))
    if c["compile"]:
        module.model.compile()  # in place: state-dict keys stay free of `_orig_mod.`

    sample_cb = SampleCallback(run_dir / "samples", **c["samples"])
    checkpoint_cb = builders.build_checkpoint_callback(ckpt_dir, c["checkpoint"]["every_n_steps"])
    guard = resilience.InterruptGuard(ckpt_dir / "last.ckpt")
    callbacks = [checkpoint_cb, resilience.RNGState(), guard, sample_cb, *monitoring_callbacks(c["logger"]),
                 *resilience.env_test_callbacks(), *(extra_callbacks or [])]
    if c["trainer"].get("enable_progress_bar", True) and os.environ.get("ZOO_PLAIN_PROGRESS") is None:
        callbacks.append(ProgressBar())
    logger = build_logger(c["logger"], run_dir=run_dir, name=c["name"], config=c)
    trainer = builders.build_trainer(c["trainer"], c["strategy"], run_dir=run_dir, callbacks=callbacks, logger=logger)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    summary = {"run_dir": str(run_dir), "checkpoint": str(ckpt_dir / "last.ckpt"),
               "command": cli.resume_command(run_dir)}
    try:
        with guard.handlers():
            # weights_only: resuming never unpickles code, whatever Lightning's default (issue 13)
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except CheckpointError as e:
        if ckpt_path is None:
            raise
        raise CheckpointError(f"cannot resume: {e}. {resume_advice(Path(ckpt_path))}") from None
    except SIGTERMException:
        summary.update(results(trainer, checkpoint_cb))
        if trainer.is_global_zero:
            print_interrupted(summary, guard)
        raise resilience.Interrupted(guard.signum or signal.SIGTERM, guard.step, guard.saved) from None

    summary.update(results(trainer, checkpoint_cb), samples=sample_cb.last, samples_dir=str(sample_cb.out_dir),
                   baseline=getattr(dm, "unigram_nll", lambda: None)())
    if trainer.is_global_zero:
        print_summary(summary)
    return summary


def override_keys(overrides: list[str] | None) -> set[str]:
    """The keys a command line sets ("model.dropout", "model" for a group), from Hydra when not given."""
    if overrides is None:
        try:
            overrides = list(HydraConfig.get().overrides.task)
        except ValueError:  # not launched through Hydra (`run(cfg)` from Python)
            overrides = []
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def load_source(cfg: DictConfig, keys: set[str]):
    """zoo.load(init_from); the run's `model` section becomes the source's (with shape-keeping overrides)."""
    from zoo import load  # the hub sits above training: it is called here and its model passed down

    try:
        source = load(cfg.init_from)
    except (ValueError, OSError) as e:  # HubError, CheckpointError, a missing file: say which key it was
        raise ConfigError(f"init_from={cfg.init_from}: {e}") from None
    model = OmegaConf.to_container(cfg.model, resolve=True)
    section = init_from.model_section(cfg.init_from, source.model_type, init_from.source_config(source.model),
                                      model, keys)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(section)
    return source


def print_summary(s: dict) -> None:
    print(summary_screen(s))


def print_interrupted(s: dict, guard: resilience.InterruptGuard) -> None:
    print(interrupted_screen(s, guard), flush=True)


@hydra.main(config_path=cli.CONF_DIR, config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    cli.quiet_console()
    try:
        with cli.multirun_job():
            summary = run(cfg)
    except Interrupted as e:
        log.warning("%s", e)
        raise SystemExit(e.exit_code) from None  # 128 + signal: schedulers see the run was stopped
    except ConfigError as e:
        raise SystemExit(f"zoo-train: invalid config: {e}") from None
    except (PermissionError, InsufficientDiskSpace, CheckpointSaveError, NonFiniteLossError, CheckpointError,
            MissingExtra) as e:
        raise SystemExit(f"zoo-train: {e}") from None  # the message says what to do; no traceback
    return summary["metrics"].get("val/loss")  # the value a sweeper would optimise


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli.run_checked("train", _main)
    except KeyboardInterrupt:  # Ctrl-C before training started (or pressed twice): nothing new to save
        print("zoo-train: interrupted; checkpoints already written are kept", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None


if __name__ == "__main__":
    main()
