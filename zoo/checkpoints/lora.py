"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on any zoo model, through `peft`.

A targeted `nn.Linear` W (out, in) becomes W x + (alpha / rank) · B A x with A (rank, in), B (out, rank),
B zero at the start (so a LoRA model starts equal to its base); only A and B train. Targets are
module-name suffixes: by default every attention and MLP projection of the shared core blocks
(`c_attn`, `q_proj`, `kv_proj`, `c_proj`, `c_fc`, `c_gate`), which every member is built from;
embeddings and output heads stay frozen.

Why peft: it is the maintained reference implementation (Hugging Face), and `inject_adapter_in_model`
wraps plain `nn.Module`s: each target becomes a `peft.tuners.lora.Linear` holding the original layer as
`base_layer`, so zoo's models need no change. Its state dict renames a wrapped weight to
`...c_attn.base_layer.weight` and adds `...lora_A.default.weight`; a LoRA run's checkpoint therefore
records its LoRA settings (`ckpt["zoo"]["lora"]`) so that readers wrap the model before loading.
`merge_lora` gives back a plain model with the base model's exact keys (what an export holds) and
`lora_state_dict` the adapters alone (an adapter file). Decoding works unchanged: the CPU decode fast
path (`zoo.core.layers.linear_weights_in_out`) only patches plain `nn.Linear`s, here the frozen
`base_layer`s and the adapters' own A and B, and the wrapper still adds their product.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from zoo.config import bad_value, check_fields
from zoo.data.download import need

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("c_attn", "q_proj", "kv_proj", "c_proj", "c_fc", "c_gate")
_ATTR = "zoo_lora"  # the LoRAConfig of a wrapped model, as a dict (what a checkpoint records)


@dataclass(kw_only=True)
class LoRAConfig:
    """zoo-train's `lora` section. rank 0 = off (the model is left as it is)."""

    rank: int = 0
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input only
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # nn.Linear name suffixes

    def __post_init__(self) -> None:
        check_fields(self)
        self.targets = list(self.targets)
        if self.rank < 0:
            raise bad_value(type(self).__name__, "rank", self.rank, "must be >= 0 (0 = no LoRA)")
        if self.alpha <= 0:
            raise bad_value(type(self).__name__, "alpha", self.alpha, "must be > 0")
        if not 0 <= self.dropout < 1:
            raise bad_value(type(self).__name__, "dropout", self.dropout, "must be in [0, 1)")
        if self.rank and not self.targets:
            raise bad_value(type(self).__name__, "targets", self.targets,
                            f"must name at least one nn.Linear, e.g. {list(DEFAULT_TARGETS)}")


def _peft() -> Any:
    return need("peft", "lora", "LoRA (lora.rank > 0)")


def lora_settings(model: nn.Module) -> dict[str, Any] | None:
    """The LoRAConfig (as a dict) `model` was wrapped with, None for a plain model."""
    return getattr(model, _ATTR, None)


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def apply_lora(model: nn.Module, config: LoRAConfig | dict[str, Any]) -> nn.Module:
    """Wrap `model`'s target layers with rank-`config.rank` adapters, in place; freeze everything else.

    Returns `model`. rank 0 leaves it untouched. A ValueError names the targets when none matches."""
    if isinstance(config, dict):
        config = LoRAConfig(**config)
    if config.rank == 0:
        return model
    if lora_settings(model) is not None:
        raise ValueError("this model already has LoRA adapters")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    linear = sorted({n.rpartition(".")[2] for n in names})
    if not any(n == t or n.endswith("." + t) for n in names for t in config.targets):  # peft's suffix rule
        raise ValueError(f"lora.targets={config.targets} matches no nn.Linear of this {type(model).__name__}; "
                         f"its nn.Linear names: {linear}")
    peft = _peft()
    peft_config = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                  target_modules=config.targets, bias="none")
    peft.inject_adapter_in_model(peft_config, model)
    for name, p in model.named_parameters():  # adapters only, whatever peft's defaults
        p.requires_grad_("lora_" in name)
    setattr(model, _ATTR, dataclasses.asdict(config))
    return model


def parameter_summary(model: nn.Module) -> str:
    """'LoRA rank 8 on 16 layers: 73,728 trainable of 1,857,536 parameters (3.97%)'."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = lora_settings(model) or {"rank": 0}
    return (f"LoRA rank {settings['rank']} on {len(_lora_layers(model))} layers: {trainable:,} trainable of "
            f"{total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")


def _replace_lora_layers(model: nn.Module, *, merge: bool) -> nn.Module:
    for name, layer in _lora_layers(model):
        if merge:
            layer.merge(safe_merge=True)  # W += (alpha / rank) · B A; refuses a non-finite result
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.get_base_layer())
    if hasattr(model, _ATTR):
        delattr(model, _ATTR)
    vars(model).pop("peft_config", None)  # what inject_adapter_in_model left on the model
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight, in place, and return the plain model: the same outputs
    (up to float rounding), the base model's exact state-dict keys, no peft needed to load it. A model
    without adapters comes back as it is."""
    return _replace_lora_layers(model, merge=True) if lora_settings(model) is not None else model


def unload_lora(model: nn.Module) -> nn.Module:
    """Drop the adapters, in place, and return the plain base model (its weights as before fine-tuning)."""
    return _replace_lora_layers(model, merge=False) if lora_settings(model) is not None else model


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters alone, in peft's file layout (`transformer.h.0.attn.c_attn.lora_A.weight`, ...):
    what a separate adapter file holds; `load_lora_state_dict` puts it back on a wrapped base model."""
    if lora_settings(model) is None:
        raise ValueError("this model has no LoRA adapters (train with lora.rank > 0)")
    return {k: v.detach() for k, v in _peft().get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load adapters written by `lora_state_dict` into `model` (wrapped by `apply_lora` with the same settings)."""
    result = _peft().set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        raise ValueError(f"adapter weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def peft_adapter_config(model: nn.Module) -> dict[str, Any]:
    """An `adapter_config.json` for the separate adapter file (peft's keys), from the model's settings."""
    s = lora_settings(model)
    if s is None:
        raise ValueError("this model has no LoRA adapters (train with lora.rank > 0)")
    return {"peft_type": "LORA", "r": s["rank"], "lora_alpha": s["alpha"], "lora_dropout": s["dropout"],
            "target_modules": s["targets"], "bias": "none"}
