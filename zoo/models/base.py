"""What every zoo model shares: config validation, the generation interface, the model registry.

A zoo model is a plain `nn.Module` that
  * maps token ids (B, T) and an optional condition to logits (B, T, V) for training
    (`forward(idx, cond=None, cache=None)`; what position t predicts is documented per model);
  * supports incremental decoding through `prefill` and `decode_step`, which both return the
    distribution of the *next* token (B, V) — the only two calls `zoo.sampling` makes; both get the
    rows' condition (`cond`), so no condition is kept on the KV cache;
  * owns its condition: `null_condition` is its "no condition" value (what condition dropout trains and
    classifier-free guidance's unconditional rows get), None for a model that takes no condition, which
    is the one place that decides whether a model can take guidance;
  * has a `config` dataclass that validates itself in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from zoo.config import bad_value, check_fields
from zoo.core.attention import KVCache
from zoo.core.layers import Block


def validate_choices(config: Any) -> None:
    """Check every field of a config dataclass against its type hint (`Literal` choices, numbers, unions,
    lists), raising `zoo.config.ConfigError` naming `Class.field`, the value and what is accepted: the
    same checker zoo-train's pre-flight uses, so `GPTConfig(n_layer="abc")` and `model.n_layer=abc` get
    the same message. (A str where a number belongs would otherwise fail later with an unrelated error.)"""
    check_fields(config)


KernelName = Literal["auto", "math", "sdpa", "chunked"]  # a config's `kernel`: zoo.core.kernels.KERNEL_NAMES

# Values of model config keys as written before position, bias and kernel were three settings (issue 24):
# `kernel: relative` was the relative position bias, `position: alibi` the ALiBi bias, and `bias` a bool,
# the layers' bias vectors (now `layer_bias`). Saved configs are upgraded when loaded (`upgrade_config`, called
# by `build_model`); a config written today with one of them is refused, naming the new spelling.
_OLD_SPELLINGS = {
    ("kernel", "relative"): "relative attention is bias='relative' (kernel says how attention is computed: "
                            "'auto' picks 'chunked' for it)",
    ("position", "alibi"): "ALiBi is bias='alibi' (position says where absolute positions enter)",
    ("bias", bool): "the layers' bias vectors are layer_bias=true/false (bias is the attention's position bias)",
}


def upgrade_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model config in today's spelling (a new dict; a current config comes back unchanged): `bias` as a
    bool becomes `layer_bias`; `kernel: relative` becomes `bias: relative` with `kernel: auto` (which runs the
    `chunked` kernel it always ran); `position: alibi` becomes `bias: alibi` with `position: none`. Together the
    two old switches are `bias: relative+alibi`. The weights and the logits they give are unchanged."""
    c = dict(config)
    if isinstance(c.get("bias"), bool):
        c["layer_bias"] = c.pop("bias")
    parts = []
    if c.get("kernel") == "relative":
        parts.append("relative")
        c["kernel"] = "auto"
    if c.get("position") == "alibi":
        parts.append("alibi")
        c["position"] = "none"
    if parts:
        c["bias"] = "+".join(parts)
    return c


def refuse_old_spellings(config: Any, owner: str | None = None) -> None:
    """Raise a `ConfigError` naming `owner.key` and today's spelling for a value `upgrade_config` would rewrite.
    `config` is a config dataclass (owner: its class name) or a mapping (zoo-train's pre-flight: owner "model")."""
    values = config if isinstance(config, Mapping) else vars(config)
    for name in ("kernel", "position", "bias"):
        value = values.get(name)
        hint = _OLD_SPELLINGS.get((name, value if isinstance(value, str) else type(value)))
        if hint is not None:
            raise bad_value(owner or type(config).__name__, name, value,
                            f"is an older spelling: {hint}. Saved configs are upgraded when loaded")


def require_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_softcap(config: Any) -> None:
    """`logit_softcap` is None (off) or a positive finite number (the bound on |logits|)."""
    cap = config.logit_softcap
    if cap is not None and not 0 < cap < float("inf"):
        raise bad_value(type(config).__name__, "logit_softcap", cap,
                        "must be > 0 and finite (logits become cap · tanh(logits / cap)), or null for none")


def init_proj(weight: Tensor, std: float, *, zero: bool) -> None:
    """Initialise a residual output projection (`c_proj`): normal(0, std) as GPT-2 (§2.3 scales std by the
    depth), or zero (`zero_init_proj`: the block then adds nothing to the residual stream at the first step;
    its c_proj still gets a gradient, the layers before it do from the second step on)."""
    if zero:
        nn.init.zeros_(weight)
    else:
        nn.init.normal_(weight, mean=0.0, std=std)


def check_class_ids(cond: Tensor | None, num_classes: int, batch: int, device: torch.device | str) -> Tensor:
    """Validated class ids (B,) for a model with `num_classes` conditions; None -> the "no condition" id
    `num_classes` (classifier-free guidance's unconditional row)."""
    k = num_classes
    if cond is None:
        return torch.full((batch,), k, dtype=torch.long, device=device)
    if cond.shape != (batch,) or torch.is_floating_point(cond):
        raise ValueError(f"cond must be integer class ids of shape ({batch},), got {cond.dtype} "
                         f"{tuple(cond.shape)}")
    # exporting (ONNX): a graph cannot branch on token values; its Gather refuses an out-of-range id itself
    if cond.numel() and not torch.compiler.is_exporting() and (int(cond.min()) < 0 or int(cond.max()) > k):
        bad = sorted(set(cond[(cond < 0) | (cond > k)].tolist()))
        accepted = f"0..{k - 1}, or {k} for no condition" if k else "none (this model is unconditional)"
        raise ValueError(f"class id(s) {bad} out of range for num_classes={k}; accepted: {accepted}")
    return cond.long().to(device)


class GenerativeModel(nn.Module):
    """Defaults for a decoder-only next-token model: logits[:, t] predicts token t + 1."""

    config: Any

    def new_cache(self, batch: int, max_len: int | None = None, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        c = self.config
        p = next(self.parameters())
        return KVCache(c.n_layer, batch, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                       device=device or p.device, dtype=dtype or p.dtype)

    def null_condition(self, batch: int, device: torch.device | str | None = None) -> Tensor | None:
        """The "no condition" of `batch` rows (classifier-free guidance's unconditional rows, the condition
        that condition dropout trains); None: the model takes no condition, so it cannot take guidance."""
        return None

    def prefill(self, idx: Tensor, *, cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Feed the prompt (B, T); return next-token logits (B, V)."""
        return self(idx, cond=cond, cache=cache, last_only=True)[:, -1]

    def decode_step(self, idx: Tensor, *, cache: KVCache, cond: Tensor | None = None) -> Tensor:
        """Feed one new token per row (B, 1) on top of the cache; return next-token logits (B, V).
        `cond`: the rows' condition, the same as at prefill (`zoo.sampling.generate` passes it every step)."""
        return self(idx, cond=cond, cache=cache, last_only=True)[:, -1]

    def decode_tokens(self, idx: Tensor, *, cache: KVCache, cond: Tensor | None = None) -> Tensor:
        """Feed T new tokens per row (B, T) on top of a non-empty cache; return the logits after each (B, T, V).
        Speculative decoding's verification pass (`zoo.sampling.speculative`): one pass checks T drafted tokens."""
        return self(idx, cond=cond, cache=cache)

    @property
    def max_len(self) -> int:
        """Longest token stream the model can decode (prompt + generated)."""
        return self.config.block_size

    def blocks(self) -> list[nn.Module]:
        """The repeated transformer blocks: the unit of FSDP sharding and activation checkpointing."""
        return [m for m in self.modules() if isinstance(m, Block)]

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Embedding))
        return n


MODELS: dict[str, tuple[type, type]] = {}  # model type name -> (config class, model class)


def register(name: str, config_cls: type) -> typing.Callable[[type], type]:
    def wrap(model_cls: type) -> type:
        MODELS[name] = (config_cls, model_cls)
        model_cls.model_type = name
        return model_cls
    return wrap


def build_model(model_type: str, config: Mapping[str, Any]) -> GenerativeModel:
    """Instantiate a registered model from a plain dict, saved in any zoo version's spelling (`upgrade_config`);
    unknown keys are errors that name them."""
    if model_type not in MODELS:
        raise ValueError(f"unknown model type {model_type!r}; accepted: {sorted(MODELS)}")
    config = upgrade_config(config)
    config_cls, model_cls = MODELS[model_type]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown {model_type} config key(s) {unknown}; accepted: {sorted(known)}")
    return model_cls(config_cls(**config))
