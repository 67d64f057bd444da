"""Turn plain config dicts (resolved by the entry points) into objects, with errors that name keys.

Entry points are the only Hydra importers: they resolve their DictConfig into dicts and call these.
"""

from __future__ import annotations

import importlib
import inspect
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import DDPStrategy

from zoo.codecs.base import Codec
from zoo.models.base import build_model
from zoo.training.checkpoint_io import atomic_model_parallel_strategy, recover_sharded
from zoo.training.module import GenerativeModule

STRATEGIES = ("auto", "ddp", "fsdp")


def instantiate(cfg: dict[str, Any], *, section: str, drop: tuple[str, ...] = ("name",)) -> Any:
    """Call `cfg["_target_"]` with the other keys, checking them against its signature first."""
    cfg = dict(cfg)
    target = cfg.pop("_target_", None)
    if not target:
        raise ValueError(f"{section}: missing `_target_` (the class to build)")
    for key in drop:
        cfg.pop(key, None)
    cls = import_target(target, section=section)
    accepted = accepted_kwargs(cls)
    unknown = sorted(set(cfg) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"unknown {section} key(s) {unknown} for {target}; accepted: {sorted(accepted)}")
    return cls(**cfg)


def import_target(target: str, *, section: str) -> Any:
    """The object a dotted `_target_` names ("package.module.Class"); ValueError naming the key otherwise."""
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"{section}._target_={target!r} cannot be imported: {e}") from e


def accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword arguments `cls(...)` accepts, following `**kwargs` passed up the class hierarchy.
    None when some constructor takes arbitrary keywords we cannot see through."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def build_data(cfg: dict[str, Any]) -> Any:
    return instantiate(cfg, section="data")


def build_module(model_cfg: dict[str, Any], module_cfg: dict[str, Any], *, codec: Codec | None,
                 train_config: dict[str, Any] | None = None) -> Any:
    """GenerativeModule around a freshly built model.

    Model fields left null in the config are taken from the codec attribute of the same name
    (`vocab_size`, and for images e.g. `num_classes`), so data and model cannot disagree.
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
    return GenerativeModule(model, codec=codec, train_config=train_config, **module_cfg)


def build_strategy(cfg: dict[str, Any], *, devices: Any = 1, num_nodes: int = 1) -> Any:
    """Lightning strategy from `strategy.name`. For fsdp every process is one data-parallel shard
    (Lightning's ModelParallelStrategy would otherwise default to tensor parallelism within a node)."""
    cfg = dict(cfg)
    name = cfg.pop("name", "auto")
    if name == "auto":
        return "auto"
    if name == "ddp":
        return DDPStrategy(**cfg)
    if name == "fsdp":
        if not isinstance(devices, int) or devices < 1:
            raise ValueError(f"strategy=fsdp needs an explicit number of devices, got trainer.devices={devices!r}")
        cfg.setdefault("data_parallel_size", devices * num_nodes)
        cfg.setdefault("tensor_parallel_size", 1)
        return atomic_model_parallel_strategy(**cfg)
    raise ValueError(f"unknown strategy {name!r}; accepted: {list(STRATEGIES)}")


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
