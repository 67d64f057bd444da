"""LoRA adapters exported apart from the base weights (zoo-export adapters=separate): both sides of the file format.

The files are peft's own (adapter_model.safetensors under PeftModel's key prefix + adapter_config.json), so
`peft.PeftModel.from_pretrained(base, folder)` applies them; `zoo.load` folds them in without peft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo.hub.registry import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, HubError


def write_adapters(folder: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """peft's adapter files: `state` (zoo.checkpoints.lora.lora_state_dict, keys relative to the model) under
    PeftModel's key prefix, so that `peft.PeftModel.from_pretrained(base, folder)` loads every adapter (without
    the prefix it loads none, with only a warning), and `config` as adapter_config.json."""
    save_file({PEFT_PREFIX + k: v.contiguous() for k, v in state.items()}, str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_WEIGHTS).chmod(0o644)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))


def fold_adapters(model: torch.nn.Module, folder: Path) -> None:
    """Fold the LoRA adapters of `folder` (peft's adapter_model.safetensors + adapter_config.json, as zoo-export
    adapters=separate writes them) into `model`'s weights, in place: W += (lora_alpha / r) · B A for every
    adapted nn.Linear, what peft's merge computes, in float32; no peft needed."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    odd = {k: config[k] for k in ("use_rslora", "use_dora", "fan_in_fan_out") if config.get(k)}
    if config.get("peft_type") != "LORA" or odd:
        raise HubError(f"{folder / ADAPTER_CONFIG}: zoo folds plain LoRA adapters (peft_type LORA), not "
                       f"peft_type={config.get('peft_type')!r} {odd or ''}; apply them with "
                       "peft.PeftModel.from_pretrained")
    scale = config["lora_alpha"] / config["r"]
    try:
        adapters = load_file(folder / ADAPTER_WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"cannot read {folder / ADAPTER_WEIGHTS}: the file is truncated or corrupt ({e})") from e
    adapters = {k.removeprefix(PEFT_PREFIX): v for k, v in adapters.items()}  # exports before issue 22 had no prefix
    own = model.state_dict()
    with torch.no_grad():
        for name in sorted({k.rpartition(".lora_")[0] for k in adapters}):
            a, b = (adapters.get(f"{name}.lora_{x}.weight") for x in "AB")
            weight = own.get(f"{name}.weight")
            if a is None or b is None or weight is None or weight.shape != (b.shape[0], a.shape[1]):
                raise HubError(f"{folder / ADAPTER_WEIGHTS}: the adapters of {name!r} do not fit this "
                               f"{getattr(model, 'model_type', '?')} model (lora_A, lora_B and a weight of "
                               f"shape (out, in) expected)")
            weight += (scale * (b.float() @ a.float())).to(weight.dtype)  # (out, r) @ (r, in)
