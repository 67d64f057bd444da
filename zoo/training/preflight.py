"""zoo-train's pre-flight check: a resolved config (plain dicts) is checked before any data is loaded or
any weight allocated, with `zoo.config`'s one checker.

Each section is checked against what consumes it: `model` builds its registered config dataclass
(whose `__post_init__` checks types, ranges and combinations), `module`, `checkpoint` and the top-level
keys build `zoo.training.config`'s dataclasses, `samples` is SampleCallback's keywords plus the fields
of `SamplingConfig`, `data` and `trainer` are checked against the data module's and Lightning's
constructor signatures. Then what no single section can see: a data block longer than the model's
position table. Every error is a `ConfigError` naming the key (`model.n_layer`), the value received and
what would be accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import lightning as L

from zoo.config import (
    ConfigError,
    Param,
    bad_value,
    build,
    check_keys,
    check_value,
    check_values,
    conforms,
    name_keys,
    parameters,
)
from zoo.models.base import MODELS, refuse_old_spellings
from zoo.sampling import SamplingConfig
from zoo.training.builders import STRATEGIES, import_target
from zoo.training.callbacks import SampleCallback
from zoo.training.config import ModuleConfig, RunConfig, optim_config
from zoo.training.lora import LoRAConfig

# Data keys that count things: >= 1 when given (None = the module's default or derived). The data
# modules' constructors own their other checks, which run here too (building one reads no data).
_POSITIVE_DATA_KEYS = frozenset({"batch_size", "block_size", "eval_batch_size", "max_files", "max_val_windows",
                                 "num_eval", "patch_size", "height", "width", "text_len", "vocab_size",
                                 "text_vocab_size", "max_bytes"})
_NON_NEGATIVE_DATA_KEYS = frozenset({"num_workers", "transpose_range"})
_FRACTION_KEYS = frozenset({"val_fraction", "test_fraction", "heldout_fraction"})
# set by zoo.train itself, never by the config
_TRAINER_INTERNAL = ("strategy", "logger", "callbacks", "default_root_dir", "plugins")


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Raise `ConfigError` naming the first key of a resolved zoo-train config that cannot work.

    Builds nothing heavy: the config dataclasses and the data module (whose constructor only checks and
    stores its arguments), no model. Model fields left null (`vocab_size: null`, ...) are the codec's,
    checked after the data is loaded by `zoo.training.builders.build_module`."""
    for section in ("model", "data", "module", "trainer"):
        if not isinstance(cfg.get(section), Mapping):
            raise ConfigError(f"`{section}` must be a mapping of keys, got {cfg.get(section)!r:.80}")
    build(RunConfig, {k: cfg[k] for k in parameters(RunConfig) if k in cfg}, section="")
    model_config = _check_model(cfg["model"])
    _check_data(cfg["data"], model_config)
    build(ModuleConfig, cfg["module"], section="module")
    optim_config(cfg.get("optim"))
    if isinstance(cfg.get("lora"), Mapping):
        build(LoRAConfig, cfg["lora"], section="lora")
    _check_trainer(cfg["trainer"])
    if isinstance(cfg.get("samples"), Mapping):
        _check_samples(cfg["samples"])
    if isinstance(cfg.get("strategy"), Mapping):
        check_value("strategy", "name", cfg["strategy"].get("name", "auto"), Literal[STRATEGIES])
        timeout = cfg["strategy"].get("timeout")
        if timeout is not None:
            check_value("strategy", "timeout", timeout, float)
            if not timeout > 0:
                raise bad_value("strategy", "timeout", timeout, "must be > 0 seconds")


def _check_model(model: Mapping[str, Any]) -> Any:
    values = dict(model)
    check_value("model", "type", values.pop("type", None), Literal[tuple(sorted(MODELS))])
    config_cls = MODELS[model["type"]][0]
    refuse_old_spellings(values, "model")  # before the type check, which would only list today's values
    params = parameters(config_cls)
    check_keys("model", values, params, also=["type"])
    # null where the field takes no null = the codec's value (zoo.training.builders.build_module): a
    # placeholder stands in for a required one, the default for the others
    from_codec = {n for n, v in values.items() if v is None and not conforms(None, params[n].hint)}
    kwargs = {n: v for n, v in values.items() if n not in from_codec}
    kwargs |= {n: 1 for n in from_codec if params[n].required}
    return build(config_cls, kwargs, section="model")


def _check_data(data: Mapping[str, Any], model_config: Any) -> None:
    values = dict(data)
    target = values.pop("_target_", None)
    values.pop("name", None)
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"data._target_={target!r}: expected the data module's class, e.g. "
                          "zoo.data.text.PydocDataModule")
    cls = import_target(target, section="data")
    params = parameters(cls)
    if params is not None:
        check_values("data", values, params)
        missing = [n for n, p in params.items() if p.required and n not in values]
        if missing:
            raise ConfigError(f"data.{missing[0]} is required by {target}")
    for name, value in values.items():
        _check_data_range(name, value)
    block, model_block = values.get("block_size"), getattr(model_config, "block_size", None)
    if isinstance(block, int) and isinstance(model_block, int) and block > model_block:
        raise ConfigError(f"data.block_size={block} is longer than model.block_size={model_block}, the model's "
                          "position table (the longest sequence it can take); set data.block_size <= "
                          "model.block_size (the default, data.block_size=${model.block_size}, ties them)")
    try:
        cls(**values)
    except ConfigError as e:
        raise e.renamed("data") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(name_keys("data", str(e), values)) from None


def _check_data_range(name: str, value: Any) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if name in _POSITIVE_DATA_KEYS and is_int and value < 1:
        raise ConfigError(f"data.{name}={value} must be >= 1")
    if name in _NON_NEGATIVE_DATA_KEYS and is_int and value < 0:
        raise ConfigError(f"data.{name}={value} must be >= 0")
    if name in _FRACTION_KEYS and isinstance(value, (int, float)) and not 0 <= value < 1:
        raise ConfigError(f"data.{name}={value} must be in [0, 1)")
    if name == "levels" and is_int and not 2 <= value <= 256:
        raise ConfigError(f"data.{name}={value} must be in [2, 256]")


def _check_trainer(trainer: Mapping[str, Any]) -> None:
    params = parameters(L.Trainer) or {}
    for internal in _TRAINER_INTERNAL:
        params.pop(internal, None)
    check_values("trainer", trainer, params)
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps < -1:
        raise ConfigError(f"trainer.max_steps={max_steps} must be >= 1 (or -1: no limit)")


def _check_samples(samples: Mapping[str, Any]) -> None:
    """SampleCallback's own keywords (how often, how many); the rest are SamplingConfig's fields."""
    own: dict[str, Param] = parameters(SampleCallback.__init__)
    own.pop("out_dir")
    check_values("samples", samples, own | parameters(SamplingConfig))
    for key, low in (("every_n_steps", 0), ("num_samples", 1)):
        if isinstance(samples.get(key), int) and samples[key] < low:
            raise ConfigError(f"samples.{key}={samples[key]} must be >= {low}")
    if samples.get("draft") not in (None, "ngram"):  # zoo.load lives above training: no model is loaded here
        raise ConfigError(f"samples.draft={samples['draft']!r}: training's samples draft by prompt lookup only "
                          "(samples.draft=ngram, or null); a draft model is for zoo-sample and zoo.load(...).generate")
    build(SamplingConfig, {k: v for k, v in samples.items() if k not in own}, section="samples")
