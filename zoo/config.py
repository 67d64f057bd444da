"""The one config checker: a dataclass's fields and a constructor's signature are the schema.

Both give (name, type hint, required), so one code path checks a model config built from Python
(`GPTConfig(n_layer="abc")`, through `check_fields` in its `__post_init__`), a `model.n_layer=abc`
override (zoo-train's pre-flight builds the same dataclass and renames the key to the config section:
the same message, `model.n_layer='abc' is not accepted; expected an integer`), and the keys of a data
module or of Lightning's Trainer (through their constructor signatures). Range and combination checks
live in each dataclass's `__post_init__`; a keyed `ConfigError` they raise is renamed the same way.

Plain config values only (None, bool, int, float, str, list, tuple, dict): what Hydra resolves and what
Python callers pass. Hints this does not understand accept any value (the constructor still checks).
Hydra's ConfigStore is not used: OmegaConf's structured configs know neither `Literal` nor unions, and
the model and data sections change schema with `model.type` / `data._target_`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import numbers
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple


class ConfigError(ValueError):
    """A config value or combination that cannot work; the message names the key.

    `key` (relative to the object that raised it) and `detail` (the message after the key) let
    `renamed` say the same thing under the name the user wrote: `GPTConfig.n_layer=...` raised while
    building the `model` section reads `model.n_layer=...`."""

    def __init__(self, message: str, *, key: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.key, self.detail = key, detail

    def renamed(self, owner: str) -> ConfigError:
        if self.key is None:
            return self
        key = join(owner, self.key)
        return ConfigError(f"{key}{self.detail}", key=key, detail=self.detail)


def join(owner: str, key: str) -> str:
    return f"{owner}.{key}" if owner else key


def bad_value(owner: str, key: str, value: Any, problem: str) -> ConfigError:
    """`owner.key=value problem`, e.g. bad_value("ModuleConfig", "lr", 0, "must be > 0")."""
    detail = f"={value!r} {problem}"
    return ConfigError(join(owner, key) + detail, key=key, detail=detail)


class Param(NamedTuple):
    hint: Any
    required: bool


def parameters(target: Callable[..., Any]) -> dict[str, Param] | None:
    """{keyword: Param(type hint, required)} that `target(...)` accepts.

    A dataclass: its init fields. A class: its constructor's keywords, following `**kwargs` up the class
    hierarchy; None when some constructor takes arbitrary keywords we cannot see through. A function:
    its own named parameters (a `**kwargs` it consumes itself is the caller's business)."""
    params = _parameters(target)
    return None if params is None else dict(params)  # a copy: callers may drop keys they set themselves


@functools.cache  # every config dataclass checks itself on construction: read its hints once
def _parameters(target: Callable[..., Any]) -> dict[str, Param] | None:
    if dataclasses.is_dataclass(target):
        hints = _hints(target)
        return {f.name: Param(hints.get(f.name, Any), f.default is dataclasses.MISSING
                              and f.default_factory is dataclasses.MISSING)
                for f in dataclasses.fields(target) if f.init}
    if not isinstance(target, type):
        return _own_parameters(target)[0]
    params: dict[str, Param] = {}
    for klass in target.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        own, open_kwargs = _own_parameters(init)
        params = own | params  # a subclass's hint wins
        if not open_kwargs:
            return params
    return None


def _own_parameters(fn: Callable[..., Any]) -> tuple[dict[str, Param], bool]:
    hints = _hints(fn)
    sig = inspect.signature(fn)
    own = {n: Param(hints.get(n, Any), p.default is p.empty) for n, p in sig.parameters.items()
           if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return own, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - an unresolvable annotation (third-party code): check the names only
        return {}


# ------------------------------------------------------------------ checks
def check_keys(section: str, values: Mapping[str, Any], params: Mapping[str, Param], *,
               also: Sequence[str] = ()) -> None:
    """Reject a key `params` does not accept, with the closest accepted one and the full list."""
    unknown = sorted(set(values) - set(params) - set(also))
    if unknown:
        options = sorted(set(params) | set(also))
        close = difflib.get_close_matches(unknown[0], options, n=1)
        hint = f" Did you mean '{join(section, close[0])}'?" if close else ""
        where = f"under '{section}'" if section else "at the top level"
        raise ConfigError(f"unknown key '{join(section, unknown[0])}'.{hint} Accepted keys {where}: "
                          f"{', '.join(options)}")


def check_values(section: str, values: Mapping[str, Any], params: Mapping[str, Param], *,
                 also: Sequence[str] = ()) -> None:
    """Unknown keys, then the type of every value, each error naming `section.key`."""
    check_keys(section, values, params, also=also)
    for name, value in values.items():
        if name in params:
            check_value(section, name, value, params[name].hint)


def check_value(owner: str, key: str, value: Any, hint: Any) -> None:
    if not conforms(value, hint):
        described = describe(hint)
        verb = "choose" if described.startswith("one of") else "expected"
        raise bad_value(owner, key, value, f"is not accepted; {verb} {described}")


def check_fields(config: Any) -> None:
    """Check every field of a dataclass instance against its type hint; call first in `__post_init__`."""
    owner = type(config).__name__
    for name, (hint, _) in _parameters(type(config)).items():
        check_value(owner, name, getattr(config, name), hint)


def build(cls: type, values: Mapping[str, Any], *, section: str) -> Any:
    """`cls(**values)` for a config dataclass, every error naming `section.key` (nested dataclass fields
    given as mappings are built the same way, under `section.field`)."""
    params = parameters(cls)
    check_values(section, values, params)
    missing = [n for n, p in params.items() if p.required and n not in values]
    if missing:
        raise ConfigError(f"{join(section, missing[0])} is required")
    kwargs = dict(values)
    for name, value in values.items():
        if dataclasses.is_dataclass(params[name].hint) and isinstance(value, Mapping):
            kwargs[name] = build(params[name].hint, value, section=join(section, name))
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.renamed(section) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(name_keys(section, str(e), values)) from None


def name_keys(section: str, message: str, values: Mapping[str, Any]) -> str:
    """Prefix a constructor's free-form error with the keys it mentions: 'model.n_embd, model.n_head: ...'."""
    keys = [join(section, k) for k in values if re.search(rf"\b{re.escape(k)}\b", message)]
    for k, v in values.items():  # one level down, e.g. data.codec.steps_per_second
        if isinstance(v, Mapping):
            keys += [join(section, f"{k}.{sub}") for sub in v if re.search(rf"\b{re.escape(str(sub))}\b", message)]
    return f"{', '.join(keys) or section}: {message}"


# ------------------------------------------------------------------ type hints
def conforms(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits a type hint (bools are not numbers; a list fits a tuple)."""
    if hint is Any or isinstance(hint, (typing.TypeVar, str)):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        number = numbers.Integral if hint is int else numbers.Real
        return isinstance(value, number) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, Mapping))
    container = origin or hint
    if _is_sequence(container):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if container in (dict, Mapping) or (isinstance(container, type) and issubclass(container, Mapping)):
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)  # e.g. a codec or an Accelerator object
    return True


def describe(hint: Any) -> str:
    """What a hint accepts, in the words of a config file: 'an integer', "one of ['a', 'b'] or null"."""
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        choices = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        parts = [f"one of {choices}"] if choices else []
        parts += [describe(a) for a in args if typing.get_origin(a) is not Literal and _plain(a)]
        return " or ".join(dict.fromkeys(parts))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path (string)"
    container = origin or hint
    if container is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if _is_sequence(container):
        return f"a list of {describe(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(hint) or container in (dict, Mapping) or (
            isinstance(container, type) and issubclass(container, Mapping)):
        return "a mapping of keys"
    return getattr(hint, "__name__", str(hint))


def _plain(hint: Any) -> bool:
    """A hint a config file can satisfy (not e.g. an Accelerator object offered beside a string)."""
    return not (isinstance(hint, type) and hint.__module__ != "builtins" and not dataclasses.is_dataclass(hint)
                and not issubclass(hint, (os.PathLike, Mapping, Sequence)))


def _is_sequence(container: Any) -> bool:
    return container in (tuple, list, Sequence) or (isinstance(container, type) and container is not str
                                                    and issubclass(container, Sequence))
