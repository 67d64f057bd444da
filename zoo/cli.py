"""Shared by the entry points: check command-line overrides and the composed config before any work.

Hydra already rejects an unknown key ("Key 'n_layerz' is not in struct") and lists the options of a
config group; `check_overrides` adds the keys that *would* be accepted at that level, so a typo is
fixed at once.

`check_train_config` is zoo-train's pre-flight check, run by `resolve` before any data is loaded or
any weight allocated. Every key of `model`, `data`, `module`, `trainer` and `samples` is checked
against what consumes it (the model's config dataclass from the registry, the data module's and
Lightning's constructor signatures and type hints): unknown keys, wrong types (`model.n_layer=abc`,
`data.batch_size=1.5`), values outside a `Literal` (`model.kernel=flash`), non-positive sizes,
contradictions the config dataclass rejects (`n_embd` not divisible by `n_head`) and a data block
longer than the model's position table. Each error names the key (`model.n_layer`), the value
received and what would be accepted. Plain dicts in (an entry-point helper: library code does not import it).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from zoo.models.base import MODELS
from zoo.sampling import SamplingConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# LIGHTNING_NOTE: the zoo-train checks import Lightning (and the training modules, which need it) inside
# the functions that use them: importing Lightning takes seconds, and zoo-sample, which shares this
# module, never needs it.


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
        close = difflib.get_close_matches(leaf, accepted, n=1)
        hint = f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
        where = f"under '{parent}'" if parent else "at the top level"
        return (f"unknown config key '{key}'.{hint} Accepted keys {where}: {', '.join(accepted)}. "
                f"(To add a new key on purpose, write +{key}=...)")
    return None


def run_checked(config_name: str, hydra_main) -> None:
    """Validate sys.argv's overrides, then hand over to the Hydra main function."""
    message = check_overrides(config_name, sys.argv[1:])
    if message:
        print(f"Error: {message}", file=sys.stderr)
        raise SystemExit(2)
    hydra_main()


def resolve(cfg, command: str) -> dict:
    """The composed config as plain containers; a required value left at ??? stops with its key.

    For zoo-train the result also passes `check_train_config`, so a bad value stops the run here,
    before any data loading or model allocation, with a message naming the key (SystemExit).
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or str(e)
        raise SystemExit(f"{command}: `{key}` is required; pass {key}=...") from None
    if command == "zoo-train":
        try:
            check_train_config(resolved)
        except ConfigError as e:
            raise SystemExit(f"{command}: invalid config: {e}") from e
    return resolved


# ================================================================== zoo-train pre-flight check
class ConfigError(ValueError):
    """A training config that cannot work; the message names the key(s)."""


# data keys that count things: must be >= 1 when given (None = the module's default / derived)
_POSITIVE_DATA_KEYS = frozenset({"batch_size", "block_size", "eval_batch_size", "max_files", "max_val_windows",
                                 "num_eval", "patch_size", "height", "width", "text_len", "vocab_size",
                                 "text_vocab_size", "max_bytes"})
_NON_NEGATIVE_DATA_KEYS = frozenset({"num_workers", "transpose_range"})
_FRACTION_KEYS = frozenset({"val_fraction", "test_fraction", "heldout_fraction"})


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Raise `ConfigError` naming the first key of a resolved zoo-train config that cannot work.

    Builds nothing heavy: the model's config dataclass is instantiated (which runs its validation)
    but no model; codec-derived fields left null (`vocab_size: null`, ...) are checked after the data
    is loaded, by `zoo.training.builders.build_module`.
    """
    for section in ("model", "data", "module", "trainer"):
        if not isinstance(cfg.get(section), Mapping):
            raise ConfigError(f"`{section}` must be a mapping of keys, got {cfg.get(section)!r:.80}")
    _check_top_level(cfg)
    model_config = _check_model(cfg["model"])
    _check_data(cfg["data"], model_config)
    _check_module(cfg["module"])
    _check_trainer(cfg["trainer"])
    if isinstance(cfg.get("samples"), Mapping):
        _check_samples(cfg["samples"])
    if isinstance(cfg.get("strategy"), Mapping):
        from zoo.training.builders import STRATEGIES  # Lightning: see LIGHTNING_NOTE

        name = cfg["strategy"].get("name", "auto")
        if name not in STRATEGIES:
            raise ConfigError(f"strategy.name={name!r} is not accepted; choose one of {list(STRATEGIES)}")


def _check_top_level(cfg: Mapping[str, Any]) -> None:
    simple: dict[str, Any] = {"seed": int, "compile": bool, "threads": int | None, "name": str,
                              "run_dir": str | None, "ckpt_path": str | None}
    for key, hint in simple.items():
        if key in cfg:
            _check_value(key, cfg[key], hint)
    if cfg.get("threads") is not None and cfg["threads"] < 0:
        raise ConfigError(f"threads={cfg['threads']!r} must be >= 1 (or null / 0 for torch's default)")
    every = (cfg.get("checkpoint") or {}).get("every_n_steps") if isinstance(cfg.get("checkpoint"), Mapping) else None
    if every is not None:
        _check_value("checkpoint.every_n_steps", every, int)
        if every < 0:
            raise ConfigError(f"checkpoint.every_n_steps={every} must be >= 0 (0 = only at the end and on "
                              "interruption)")


# ------------------------------------------------------------------ model
def _check_model(model: Mapping[str, Any]) -> Any:
    values = dict(model)
    model_type = values.pop("type", None)
    if model_type not in MODELS:
        raise ConfigError(f"model.type={model_type!r} is not a zoo model; accepted: {sorted(MODELS)}")
    config_cls = MODELS[model_type][0]
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    _reject_unknown("model", values, set(fields), also=["type"])
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for name, value in values.items():
        if value is None and not _conforms(None, hints[name]):
            continue  # null = taken from the data's codec (zoo.training.builders.build_module), checked after loading
        _check_value(f"model.{name}", value, hints[name])
        kwargs[name] = value
    for name, f in fields.items():  # required fields left null: a placeholder stands in for the codec's value
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if name not in values:
                raise ConfigError(f"model.{name} is required for model.type={model_type}")
            kwargs[name] = 1
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(_name_keys("model", str(e), values)) from None


# ------------------------------------------------------------------ data
def _check_data(data: Mapping[str, Any], model_config: Any) -> None:
    values = dict(data)
    target = values.pop("_target_", None)
    values.pop("name", None)
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"data._target_={target!r}: expected the data module's class, e.g. "
                          "zoo.data.text.PydocDataModule")
    from zoo.training.builders import import_target  # Lightning: see LIGHTNING_NOTE

    try:
        cls = import_target(target, section="data")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    params = _signature_params(cls)
    if params is not None:
        _reject_unknown("data", values, set(params))
        for name, value in values.items():
            _check_value(f"data.{name}", value, params[name][0])
        missing = [n for n, (_, required) in params.items() if required and n not in values]
        if missing:
            raise ConfigError(f"data.{missing[0]} is required by {target}")
    for name, value in values.items():
        _check_range(f"data.{name}", value)
    block = values.get("block_size")
    model_block = getattr(model_config, "block_size", None)
    if isinstance(block, int) and isinstance(model_block, int) and block > model_block:
        raise ConfigError(f"data.block_size={block} is longer than model.block_size={model_block}, the model's "
                          "position table (the longest sequence it can take); set data.block_size <= "
                          "model.block_size (the default, data.block_size=${model.block_size}, ties them)")
    try:  # constructors only validate and store their arguments (no data is read): their checks run here
        cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(_name_keys("data", str(e), values)) from None


def _check_range(key: str, value: Any) -> None:
    leaf = key.rpartition(".")[2]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if leaf in _POSITIVE_DATA_KEYS and is_int and value < 1:
        raise ConfigError(f"{key}={value} must be >= 1")
    if leaf in _NON_NEGATIVE_DATA_KEYS and is_int and value < 0:
        raise ConfigError(f"{key}={value} must be >= 0")
    if leaf in _FRACTION_KEYS and isinstance(value, (int, float)) and not 0 <= value < 1:
        raise ConfigError(f"{key}={value} must be in [0, 1)")
    if leaf == "levels" and is_int and not 2 <= value <= 256:
        raise ConfigError(f"{key}={value} must be in [2, 256]")


# ------------------------------------------------------------------ module, trainer, samples
def _check_module(module: Mapping[str, Any]) -> None:
    from zoo.training.module import GenerativeModule  # Lightning: see LIGHTNING_NOTE

    params = _signature_params(GenerativeModule) or {}
    for internal in ("model", "codec", "train_config"):  # passed by zoo.training.builders, not by the config
        params.pop(internal, None)
    _check_section("module", module, params)
    checks = {"lr": (lambda v: v > 0, "> 0"), "weight_decay": (lambda v: v >= 0, ">= 0"),
              "warmup_steps": (lambda v: v >= 0, ">= 0"), "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]")}
    for key, (ok, accepted) in checks.items():
        if isinstance(module.get(key), (int, float)) and not ok(module[key]):
            raise ConfigError(f"module.{key}={module[key]} must be {accepted}")
    betas = module.get("betas")
    if isinstance(betas, Sequence) and not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"module.betas={list(betas)} must be two numbers in [0, 1)")


def _check_trainer(trainer: Mapping[str, Any]) -> None:
    import lightning as L  # see LIGHTNING_NOTE

    params = _signature_params(L.Trainer) or {}
    for internal in ("strategy", "logger", "callbacks", "default_root_dir", "plugins"):  # set by zoo.train
        params.pop(internal, None)
    _check_section("trainer", trainer, params)
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps < -1:
        raise ConfigError(f"trainer.max_steps={max_steps} must be >= 1 (or -1: no limit)")


def _check_samples(samples: Mapping[str, Any]) -> None:
    from zoo.training.callbacks import SampleCallback  # Lightning: see LIGHTNING_NOTE

    init = SampleCallback.__init__  # its own keywords; the rest (**sampling) go to SamplingConfig
    init_hints = typing.get_type_hints(init)
    params = {n: (init_hints.get(n, Any), False) for n, p in inspect.signature(init).parameters.items()
              if n not in ("self", "out_dir") and p.kind is p.KEYWORD_ONLY}
    hints = typing.get_type_hints(SamplingConfig)
    params.update({f.name: (hints[f.name], False) for f in dataclasses.fields(SamplingConfig)})
    _check_section("samples", samples, params)
    for key in ("every_n_steps", "num_samples"):
        value = samples.get(key)
        if isinstance(value, int) and value < (1 if key == "num_samples" else 0):
            raise ConfigError(f"samples.{key}={value} must be >= {1 if key == 'num_samples' else 0}")
    sampling = {k: v for k, v in samples.items() if k not in ("every_n_steps", "num_samples")}
    try:
        SamplingConfig(**sampling)
    except (ValueError, TypeError) as e:
        raise ConfigError(_name_keys("samples", str(e), sampling)) from None


def _check_section(section: str, values: Mapping[str, Any], params: dict[str, tuple[Any, bool]]) -> None:
    _reject_unknown(section, values, set(params))
    for name, value in values.items():
        _check_value(f"{section}.{name}", value, params[name][0])


# ------------------------------------------------------------------ helpers
def _reject_unknown(section: str, values: Mapping[str, Any], accepted: set[str], also: Sequence[str] = ()) -> None:
    unknown = sorted(set(values) - accepted)
    if unknown:
        options = sorted(accepted | set(also))
        close = difflib.get_close_matches(unknown[0], options, n=1)
        hint = f" Did you mean '{section}.{close[0]}'?" if close else ""
        raise ConfigError(f"unknown key '{section}.{unknown[0]}'.{hint} Accepted keys under '{section}': "
                          f"{', '.join(options)}")


def _name_keys(section: str, message: str, values: Mapping[str, Any]) -> str:
    """Prefix a constructor's error with the config keys it mentions, e.g. 'model.n_embd, model.n_head: ...'."""
    keys = [f"{section}.{k}" for k in values if re.search(rf"\b{re.escape(k)}\b", message)]
    for k, v in values.items():  # one level down, e.g. data.codec.steps_per_second
        if isinstance(v, Mapping):
            keys += [f"{section}.{k}.{sub}" for sub in v if re.search(rf"\b{re.escape(str(sub))}\b", message)]
    return f"{', '.join(keys) or section}: {message}"


def _signature_params(cls: type) -> dict[str, tuple[Any, bool]] | None:
    """{keyword: (type hint, required)} that `cls(...)` accepts, following `**kwargs` up the class
    hierarchy (as zoo.training.builders.accepted_kwargs); None when some constructor takes arbitrary keywords."""
    params: dict[str, tuple[Any, bool]] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: check the name only
            hints = {}
        sig = inspect.signature(init)
        for n, p in sig.parameters.items():
            if n == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or n in params:
                continue
            params[n] = (hints.get(n, Any), p.default is p.empty)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return params
    return None


def _check_value(key: str, value: Any, hint: Any) -> None:
    if not _conforms(value, hint):
        raise ConfigError(f"{key}={value!r} is not accepted: expected {_describe(hint)}")


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) fits a type hint.
    Hints this does not understand accept everything (the constructor will check)."""
    if hint is Any or isinstance(hint, (typing.TypeVar, str)):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or (isinstance(hint, type) and issubclass(hint, Path)):
        return isinstance(value, str)
    container = origin or hint
    if container in (tuple, list, Sequence) or (isinstance(container, type) and container is not str
                                                 and issubclass(container, Sequence)):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return not args or all(_conforms(v, args[0]) for v in value)
    if container in (dict, Mapping) or (isinstance(container, type) and issubclass(container, Mapping)):
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)  # e.g. a codec or Accelerator object: never a plain config value
    return True


def _describe(hint: Any) -> str:
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if not (isinstance(a, type) and a.__module__ not in ("builtins",)
                                                    and not issubclass(a, (Path, Mapping, Sequence)))]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and issubclass(hint, Path):
        return "a path (string)"
    container = origin or hint
    if container is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if container in (tuple, list, Sequence) or (isinstance(container, type) and issubclass(container, Sequence)):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if container in (dict, Mapping) or (isinstance(container, type) and issubclass(container, Mapping)):
        return "a mapping of keys"
    return getattr(hint, "__name__", str(hint))



# Lightning's INFO lines ("GPU available: False", "💡 Tip: ... litlogger", "`Trainer.fit` stopped") and the
# deprecation Lightning's own code triggers in torch's pytree; none of them is something the user can act on.
_THIRD_PARTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
_QUIET_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
                   r"Checkpoint directory .* exists and is not empty")  # resuming: of course it is


def quiet_console() -> None:
    """One line per message on the console (issue 13): Lightning's loggers lose their own handler (which
    printed every line a second time beside Hydra's) and speak from WARNING up, through the root handlers
    Hydra set up from conf/hydra/job_logging; warnings raised inside third-party code by our calls are
    filtered. Called first thing by each entry point's Hydra main."""
    import logging
    import warnings

    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.WARNING)
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
