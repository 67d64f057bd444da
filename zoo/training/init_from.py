"""`zoo-train init_from=SOURCE`: start a run from a pretrained model's weights (fine-tuning).

The entry point loads SOURCE with `zoo.load` (a registry name, an export folder, a `.ckpt`, a GPT-2
folder: the hub sits above training, so the loaded model and codec are passed down to here). The run
then takes from the source its model type and config, its codec (the data is encoded with it) and its
weights; nothing else: the optimizer, the learning-rate schedule and the step start fresh. Every
refusal happens before any data is read, and names both sides: the override or data set, and the
source's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from zoo.codecs.base import Codec
from zoo.codecs.text import TextCodec
from zoo.config import ConfigError, parameters
from zoo.models.base import build_model
from zoo.training.builders import import_target

# Settings that change how a model computes but not what: the kernels are numerically interchangeable
# (the math kernel is the oracle for the others). Dropout rates (`dropout`, `cond_dropout`) are taken too.
# Which other settings change the weights is not listed by hand: `model_section` builds the model both ways on
# the meta device and names the tensors that appear, vanish or change shape (bias='relative' adds the tables
# `attn.er`, position='learned' the table `wpe`; bias='alibi' or position='rotary' add none but change what
# the weights compute).
_COMPUTE_ONLY = frozenset({"kernel"})
# Settings that only decide how a new model's weights start (zero_init_proj: zero output projections). The run
# starts from the source's weights instead, so changing one would silently do nothing: refused as such. The
# architecture switches that change what the weights compute (qk_norm adds weights; activation=relu2 and
# logit_softcap keep the shapes) are refused by the general rule below, as any other such key.
_INIT_ONLY = frozenset({"zero_init_proj"})
Shapes = Mapping[str, tuple[int, ...]]  # state-dict key -> tensor shape


def model_section(source: str, source_type: str, source_config: Mapping[str, Any], section: Mapping[str, Any],
                  overrides: Collection[str]) -> dict[str, Any]:
    """The `model` section of a run initialised from `source`: the source's type and config, with the
    user's overrides of it (`overrides`: the command line's keys, e.g. {"model.dropout", "model"}) that
    keep every weight shape (dropout, the attention kernel...). Raises ConfigError for one that does not."""
    if "model" in overrides and section.get("type") != source_type:
        raise ConfigError(f"model={section.get('type')} does not fit init_from={source}, a {source_type} model; "
                          "leave `model=` out (the model comes from the source)")
    out = {"type": source_type, **source_config}
    changed = {k.removeprefix("model."): section[k.removeprefix("model.")] for k in overrides
               if k.startswith("model.") and k.removeprefix("model.") in section}
    changed = {k: v for k, v in changed.items() if k != "type" and v != source_config.get(k)}
    if not changed:
        return out
    reference = _shapes(source_type, source_config)
    for key, value in changed.items():
        if key not in source_config:
            raise ConfigError(f"model.{key} is not a setting of init_from={source}, a {source_type} model; its "
                              f"settings: {sorted(source_config)}")
        if key in _INIT_ONLY:
            raise ConfigError(f"model.{key}={value!r} only sets how a new model's weights start; init_from={source} "
                              f"starts from the source's weights, so it would have no effect: leave model.{key} out")
        try:
            shapes = _shapes(source_type, {**source_config, key: value})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model.{key}={value!r} does not fit init_from={source} ({e})") from None
        problem = _weight_change(reference, shapes)
        if problem is None and key not in _COMPUTE_ONLY and "dropout" not in key:
            problem = ("changes what the weights compute of", "")
        if problem:
            raise ConfigError(f"model.{key}={value!r} {problem[0]} init_from={source}, whose {key} is "
                              f"{source_config[key]!r}{problem[1]}; fine-tuning keeps the source's architecture: "
                              f"leave model.{key} out (dropout and the attention kernel may be changed)")
        out[key] = value
    return out


def _weight_change(source: Shapes, changed: Shapes) -> tuple[str, str] | None:
    """(what happens to the source's weights, the tensors it happens to) between two state-dict shape maps, or
    None when every tensor keeps its name and shape."""
    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    added, removed = sorted(set(changed) - set(source)), sorted(set(source) - set(changed))
    if added:
        return "adds weights to", f" (new: {some(added)})"
    if removed:
        return "removes weights of", f" (gone: {some(removed)})"
    if changed != source:
        return "changes the weight shapes of", ""
    return None


def _shapes(model_type: str, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(model_type, dict(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def data_section(source: str, codec: Codec | None, section: Mapping[str, Any],
                 overrides: Collection[str]) -> dict[str, Any]:
    """The data module's keywords with the source's codec in place of the data's own (a text module
    then takes `vocab_size=None`). Raises ConfigError naming the data set and the source's codec when
    the data module cannot take it (a text codec for MIDI files...) or the command line sets another."""
    if codec is None:
        raise ConfigError(f"init_from={source} comes without a codec (a GPT-2 folder needs vocab.json and "
                          "merges.txt), so its token ids cannot be matched to data")
    name = section.get("name", section.get("_target_"))
    for key in ("data.codec", "data/codec", "data.vocab_size"):
        if key in overrides:
            raise ConfigError(f"{key} cannot be set with init_from={source}: the data is encoded with the "
                              f"source's {_describe(codec)}")
    values = dict(section)
    cls = import_target(str(values.get("_target_")), section="data")
    accepted = parameters(cls) or {}
    if "codec" in accepted:
        values["codec"] = codec
        if isinstance(codec, TextCodec) and "vocab_size" in values:
            values["vocab_size"] = None
    else:  # image data: the codec follows from the data's own keys; `check_codec` compares after setup
        state = codec.to_dict()
        state = {**state, **state.get("image", {})}  # a caption + image codec: the image part's keys too
        keys = ("patch_size", "levels", "text_len", "on_long", "clusters")  # clusters: an ImageGPT's palette
        values |= {k: state[k] for k in keys if k in state and k in accepted}
    kwargs = {k: v for k, v in values.items() if k not in ("_target_", "name")}
    try:
        cls(**kwargs)  # the data modules' constructors check their codec (and read no data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data={name} cannot be encoded with init_from={source}'s {_describe(codec)}: {e}") from None
    return values


def check_codec(source: str, codec: Codec, data_name: str, data_codec: Codec) -> None:
    """The data module built its own codec (image data): it must be the source's, token for token."""
    if data_codec.to_dict() != codec.to_dict():
        raise codec_refusal(source, codec, data_name, ValueError(
            f"the data's {_describe(data_codec)} differs from it ({_codec_diff(codec, data_codec)})"))


def _codec_diff(a: Codec, b: Codec) -> str:
    da, db = a.to_dict(), b.to_dict()
    keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
    return ", ".join(f"{k}: {str(da.get(k))[:40]} vs {str(db.get(k))[:40]}" for k in keys[:3])


def codec_refusal(source: str, codec: Codec, data_name: str, error: Exception) -> ConfigError:
    """The error for data the source's codec cannot encode (found while the data is tokenised)."""
    return ConfigError(f"data={data_name} cannot be encoded with init_from={source}'s {_describe(codec)}: {error}")


def _describe(codec: Codec) -> str:
    return f"{getattr(codec, 'type_name', type(codec).__name__)} codec ({codec.vocab_size} tokens)"


def copy_weights(model: nn.Module, source_model: nn.Module, source: str) -> None:
    """Copy every tensor of `source_model` into `model` (same type and shapes, checked by `model_section`)."""
    own, theirs = model.state_dict(), source_model.state_dict()
    missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
    if missing or unexpected:
        raise ConfigError(f"init_from={source}: weights do not match the run's model: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for k, v in theirs.items():
            own[k].copy_(v.to(own[k].dtype))


def source_config(model: nn.Module) -> dict[str, Any]:
    """A loaded model's config as a plain dict (what `model_section` takes)."""
    return dataclasses.asdict(model.config)
