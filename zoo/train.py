"""zoo-train: train any zoo model from a Hydra config (conf/train.yaml), then print samples.

    zoo-train                                   # default GPT on embedded text
    zoo-train model.n_layer=2 data=text_files data.path=corpus/ trainer.max_steps=200
    zoo-train --cfg job                         # print the resolved config
    zoo-train -m model.n_layer=2,4              # multirun sweep
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo import cli
from zoo.config import ConfigError
from zoo.data.download import MissingExtra
from zoo.data.streaming.common import CorruptChunkError
from zoo.training import init_from, resilience
from zoo.training.checkpoint_io import CheckpointError, CheckpointSaveError, InsufficientDiskSpace
from zoo.training.module import NonFiniteLossError
from zoo.training.peers import PeerFailure
from zoo.training.resilience import Interrupted
from zoo.training.run import train
from zoo.training.summary import interrupted_screen, summary_screen

log = logging.getLogger("zoo.train")


def run(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None, overrides: list[str] | None = None) -> dict:
    """Train with a composed config; return a summary dict (paths, metrics, samples).

    `overrides`: the command line's (Hydra's task overrides when None); with `init_from` they say which
    model settings the user changed. The run itself is `zoo.training.run.train`'s; here: the `init_from`
    source (through the hub), the resolved config, the run folder and resume command Hydra knows, the screens.
    Raises `zoo.config.ConfigError` for a config that cannot work, before any work, and
    `zoo.training.resilience.Interrupted` after SIGTERM / SIGINT / SIGUSR1, once `last.ckpt` is saved."""
    keys = override_keys(overrides)
    source = load_source(cfg, keys) if cfg.get("init_from") else None
    c = cli.resolve(cfg, "zoo-train")
    run_dir = Path(c["run_dir"] or cli.hydra_run_dir())
    return train(c, run_dir=run_dir, resume_command=cli.resume_command(run_dir), source=source, keys=keys,
                 extra_callbacks=extra_callbacks, on_summary=print_summary, on_interrupted=print_interrupted)


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
            MissingExtra, PeerFailure, CorruptChunkError) as e:
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
