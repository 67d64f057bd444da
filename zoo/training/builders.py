"""Turn plain config dicts (resolved by the entry points) into objects, with errors that name keys.

Entry points are the only Hydra importers: they resolve their DictConfig into dicts and call these.
"""

from __future__ import annotations

import importlib
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from zoo.codecs.base import Codec
from zoo.config import ConfigError, build, check_values, parameters
from zoo.models.base import build_model
from zoo.training import checkpoint_io, resilience
from zoo.training.checkpoint_io import atomic_model_parallel_strategy, recover_sharded
from zoo.training.config import ModuleConfig, optim_config
from zoo.training.module import GenerativeModule

STRATEGIES = ("auto", "ddp", "fsdp")


def instantiate(cfg: dict[str, Any], *, section: str, drop: tuple[str, ...] = ("name",)) -> Any:
    """Call `cfg["_target_"]` with the other keys, checking their names and types against its signature
    first (`zoo.config`, the checker the config dataclasses use)."""
    cfg = dict(cfg)
    target = cfg.pop("_target_", None)
    if not target:
        raise ConfigError(f"{section}: missing `_target_` (the class to build)")
    for key in drop:
        cfg.pop(key, None)
    cls = import_target(target, section=section)
    params = parameters(cls)
    if params is not None:
        check_values(section, cfg, params)
    return cls(**cfg)


def import_target(target: str, *, section: str) -> Any:
    """The object a dotted `_target_` names ("package.module.Class"); ConfigError naming the key otherwise."""
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{section}._target_={target!r} cannot be imported: {e}") from e


def build_data(cfg: dict[str, Any]) -> Any:
    return instantiate(cfg, section="data")


def build_module(model_cfg: dict[str, Any], module_cfg: dict[str, Any], *, codec: Codec | None,
                 train_config: dict[str, Any] | None = None, optim_cfg: dict[str, Any] | None = None) -> Any:
    """GenerativeModule around a freshly built model.

    Model fields left null in the config are taken from the codec attribute of the same name
    (`vocab_size`, and for images e.g. `num_classes`), so data and model cannot disagree. `optim_cfg`:
    the `optim` section (None: adamw).
    """
    model_cfg = dict(model_cfg)
    model_type = model_cfg.pop("type", None)
    for key, value in model_cfg.items():
        if value is None and codec is not None and hasattr(codec, key):
            model_cfg[key] = getattr(codec, key)
    if model_cfg.get("vocab_size", 0) is None:
        raise ValueError("model.vocab_size is null and the data provides no codec to take it from")
    if codec is not None and model_cfg.get("vocab_size", codec.vocab_size) < codec.vocab_size:
        raise ValueError(f"model.vocab_size={model_cfg['vocab_size']} is smaller than the codec's "
                         f"{codec.vocab_size} tokens; set model.vocab_size=null to use the codec's")
    model = build_model(model_type, model_cfg)
    config = build(ModuleConfig, module_cfg, section="module")
    return GenerativeModule(model, codec=codec, config=config, train_config=train_config,
                            optim=optim_config(optim_cfg))


def build_strategy(cfg: dict[str, Any], *, devices: Any = 1, num_nodes: int = 1) -> Any:
    """Lightning strategy from `strategy.name`. For fsdp every process is one data-parallel shard
    (Lightning's ModelParallelStrategy would otherwise default to tensor parallelism within a node)."""
    cfg = dict(cfg)
    name = cfg.pop("name", "auto")
    if name == "auto":
        return "auto"
    if "timeout" in cfg:  # seconds, in the config; Lightning takes a timedelta for init_process_group
        cfg["timeout"] = timedelta(seconds=float(cfg["timeout"]))
    if name == "ddp":
        return DDPStrategy(**cfg)
    if name == "fsdp":
        if not isinstance(devices, int) or devices < 1:
            raise ValueError(f"strategy=fsdp needs an explicit number of devices, got trainer.devices={devices!r}")
        cfg.setdefault("data_parallel_size", devices * num_nodes)
        cfg.setdefault("tensor_parallel_size", 1)
        return atomic_model_parallel_strategy(**cfg)
    raise ValueError(f"unknown strategy {name!r}; accepted: {list(STRATEGIES)}")


def build_checkpoint_callback(ckpt_dir: Path, every_n_steps: int) -> ModelCheckpoint:
    """The run's checkpoints: last.ckpt (every `every_n_steps`, at the end and on interruption) and the
    best one on validation loss."""
    return ModelCheckpoint(
        dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps, save_top_k=1, monitor="val/loss", mode="min",
        save_on_train_epoch_end=False,
        save_last=True,  # a full (atomic) save, not "link": a symlink swap is not atomic
        enable_version_counter=False)  # always last.ckpt, even when the interruption save wrote it


def build_trainer(trainer_cfg: dict[str, Any], strategy_cfg: dict[str, Any], *, run_dir: Path,
                  callbacks: list[L.Callback], logger: Any, on_save_error: str = "stop") -> L.Trainer:
    """Lightning's Trainer from the `trainer` and `strategy` sections, with atomic checkpoint writes
    (`on_save_error`: `checkpoint.on_error`)."""
    strategy = build_strategy(strategy_cfg, devices=trainer_cfg["devices"], num_nodes=trainer_cfg["num_nodes"])
    return L.Trainer(**trainer_cfg, strategy=strategy, logger=logger or False, callbacks=callbacks,
                     default_root_dir=str(run_dir),
                     plugins=[checkpoint_io.AtomicCheckpointIO(on_save_error), *resilience.slurm_plugins()])


def check_writable(directory: Path) -> None:
    """Fail fast when the run folder cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write to the run folder {directory}: {e.strerror}. "
                              "Choose another with run_dir=PATH or fix its permissions.") from e


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A distributed (sharded) checkpoint folder, as strategy=fsdp with save_distributed_checkpoint=true
    writes: torch.distributed.checkpoint shards + `.metadata`, and Lightning's `meta.pt` beside them."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file() and (path / "meta.pt").is_file()


def resolve_ckpt_path(value: str | None, ckpt_dir: Path) -> str | None:
    """`last` -> the run's last.ckpt when it exists (fresh start otherwise); a path must exist.

    A checkpoint is a `.ckpt` file, or a sharded checkpoint folder (strategy=fsdp with
    strategy.save_distributed_checkpoint=true writes `last.ckpt/` as a folder), which resumes under
    strategy=fsdp only; `zoo-export` turns such a folder into a single file.
    """
    if value in (None, "", "null", "none"):
        return None
    if value == "last":
        last = ckpt_dir / "last.ckpt"
        recover_sharded(last)  # a kill during a sharded save may have left the previous one aside
        return str(last) if last.is_file() or is_sharded_checkpoint(last) else None
    path = Path(value)
    if path.is_dir() and not is_sharded_checkpoint(path):
        raise FileNotFoundError(f"ckpt_path={value!r} is a folder but not a sharded checkpoint (no .metadata and "
                                "meta.pt in it); use a .ckpt file, a sharded checkpoint folder, 'last' or null")
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path={value!r} does not exist; use a .ckpt path, a sharded checkpoint "
                                "folder, 'last' or null")
    return value
