"""Shared by the entry points (the Hydra side): check command-line overrides, resolve the composed
config into plain dicts, and what only a running Hydra job knows (its run folder, its overrides, its
multirun mode).

Hydra already rejects an unknown key ("Key 'n_layerz' is not in struct") and lists the options of a
config group; `check_overrides` adds the keys that *would* be accepted at that level, so a typo is
fixed at once. The values are checked after composition by zoo-train's pre-flight check
(`zoo.training.preflight.check_train_config`, on plain dicts: Hydra stays here).
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed as dist
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import MissingMandatoryValue

from zoo.config import ConfigError as ConfigError  # re-exported: what check_train_config raises


def _conf_dir() -> str:
    """Hydra's config folder: `zoo/conf` in an installed wheel (pyproject.toml ships the repository's top-level
    `conf/` there), else `conf/` beside the package in a source checkout or an editable install."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if (packaged / "train.yaml").is_file() else here.parent / "conf")


CONF_DIR = _conf_dir()


def check_overrides(config_name: str, argv: list[str]) -> str | None:
    """Return an error message for the first override that names an unknown key, else None."""
    args = [a for a in argv if "=" in a and not a.startswith(("-", "+", "~", "hydra."))]
    keys = [a.split("=", 1)[0] for a in args]
    is_group = [(Path(CONF_DIR) / k.replace(".", "/")).is_dir() for k in keys]  # e.g. model=gpt
    groups = [a for a, g in zip(args, is_group) if g and "," not in a]
    keys = [k for k, g in zip(keys, is_group) if not g]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=groups)
    except HydraException:
        return None  # Hydra reports a bad group option itself, listing the available ones
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or not OmegaConf.is_dict(node) or leaf in set(node.keys()):  # `in node` misses ??? values
            continue
        accepted = sorted(str(k) for k in node)
        if not accepted:  # an open mapping, empty by default (e.g. zoo-export's `generation`)
            return (f"unknown config key '{key}': '{parent or 'the config'}' is empty by default; "
                    f"add a key to it with +{key}=...")
        close = difflib.get_close_matches(leaf, accepted, n=1)
        hint = f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
        where = f"under '{parent}'" if parent else "at the top level"
        return (f"unknown config key '{key}'.{hint} Accepted keys {where}: {', '.join(accepted)}. "
                f"(To add a new key on purpose, write +{key}=...)")
    return None


def run_checked(config_name: str, hydra_main: Callable[[], Any]) -> None:
    """Validate sys.argv's overrides, then hand over to the Hydra main function."""
    message = check_overrides(config_name, sys.argv[1:])
    if message:
        print(f"Error: {message}", file=sys.stderr)
        raise SystemExit(2)
    hydra_main()


def resolve(cfg: DictConfig, command: str) -> dict[str, Any]:
    """The composed config as plain containers; a required value left at ??? stops with its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or str(e)
        raise SystemExit(f"{command}: `{key}` is required; pass {key}=...") from None


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """zoo-train's pre-flight check (`zoo.training.preflight`), imported on use: it needs Lightning,
    which takes seconds to import, and zoo-sample, which shares this module, never does."""
    from zoo.training.preflight import check_train_config as check

    check(cfg)


def resume_command(run_dir: Path) -> str:
    """The command line that resumes this run: its overrides, with its run folder made explicit
    (so a multirun job resumes in place) and any ckpt_path dropped (the default, last, resumes)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not launched through Hydra (e.g. `run(cfg)` from Python)
        return f"zoo-train ...  (this run's overrides) run_dir={shlex.quote(str(run_dir))}"
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "run_dir="))]
    return " ".join(["zoo-train", *map(shlex.quote, keep), shlex.quote(f"run_dir={run_dir}")])


def hydra_run_dir() -> str:
    return HydraConfig.get().runtime.output_dir


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def multirun_job() -> Iterator[None]:
    """Run one job of a Hydra multirun so that DDP works in it (docs/scaling.md, "Hydra multirun with DDP").

    Lightning starts ranks 1.. as `python -m zoo.train <sys.argv[1:]> hydra.run.dir=<HydraConfig run.dir>`.
    In a multirun, sys.argv holds the whole sweep (`-m model.n_layer=1,2`) and run.dir is the single-run
    folder, so every child would start the sweep again, in runs/<name>: point both at this job. After
    the job, its process group goes (its other ranks have exited), so that the next job starts its own.
    """
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        yield
        return
    argv, sys.argv = sys.argv, [sys.argv[0], *hc.overrides.task]
    env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    with read_write(hc.run):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        # Lightning leaves LOCAL_RANK etc. set; the next job would take them for an external launcher
        # (torchrun) and wait for ranks nobody starts
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.argv = argv


# Lightning's INFO lines ("GPU available: False", "💡 Tip: ... litlogger", "`Trainer.fit` stopped") and the
# deprecation Lightning's own code triggers in torch's pytree; none of them is something the user can act on.
_THIRD_PARTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                        "httpx", "httpx2")  # huggingface_hub's HTTP client logs every request at INFO
_QUIET_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
                   r"Checkpoint directory .* exists and is not empty")  # resuming: of course it is


def quiet_console() -> None:
    """One line per message on the console (issue 13): Lightning's loggers lose their own handler (which
    printed every line a second time beside Hydra's) and speak from WARNING up, through the root handlers
    Hydra set up from conf/hydra/job_logging; warnings raised inside third-party code by our calls are
    filtered. Called first thing by each entry point's Hydra main."""
    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.WARNING)
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
