"""From files on disk to a `Pretrained` ready to sample: a folder written by zoo-export (safetensors, no
pickle), a zoo-train `.ckpt` (weights_only=True, through zoo.checkpoints: no Lightning) or a Hugging Face
GPT-2 or ImageGPT folder (converted); then the device and dtype the caller asked for."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.checkpoints.reading import model_from_checkpoint
from zoo.codecs.base import CODEC_FILE, load_codec
from zoo.hub.adapters import fold_adapters
from zoo.hub.gpt2 import load_gpt2
from zoo.hub.imagegpt import imagegpt_config, load_imagegpt
from zoo.hub.pretrained import Pretrained, generation_defaults, upgrade_options
from zoo.hub.registry import ADAPTER_WEIGHTS, CONFIG_FILE, EXPORT_FORMAT, GENERATION_FILE, WEIGHTS_FILE, HubError
from zoo.models.base import build_model


def load_export(folder: str | Path, device: str | torch.device = "cpu",
                dtype: torch.dtype | str | None = None) -> Pretrained:
    """Rebuild a model from a folder written by `zoo.hub.export.export` (safetensors, no pickle)."""
    folder = Path(folder)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{folder} is not an exported zoo model: missing {missing}; expected a folder written by "
                       f"zoo-export (model.safetensors, config.json, codec.json, generation_config.json)")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise HubError(f"{folder / CONFIG_FILE} is not valid JSON ({e}); the file is truncated or corrupt") from e
    if config.get("format") != EXPORT_FORMAT:
        raise HubError(f"{folder / CONFIG_FILE} has format {config.get('format')!r}, expected {EXPORT_FORMAT!r}")
    try:
        state = load_file(folder / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"cannot read {folder / WEIGHTS_FILE}: the file is truncated or corrupt ({e})") from e
    model = build_model(config["model_type"], config["model_config"])
    _load_state(model, state, source=str(folder / WEIGHTS_FILE))
    if (folder / ADAPTER_WEIGHTS).is_file():  # zoo-export adapters=separate: the fine-tuned model is base + adapters
        fold_adapters(model, folder)
    codec = load_codec(folder) if (folder / CODEC_FILE).is_file() else None
    gen_path = folder / GENERATION_FILE
    generation = upgrade_options(json.loads(gen_path.read_text())) if gen_path.is_file() else {}
    return ready(Pretrained(model, codec, generation, config=config, name=config.get("name"),
                             card=config.get("card", {})), device, dtype)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> Pretrained:
    """A zoo-train `.ckpt` (read with weights_only=True; a pickle that would run code is refused)."""
    model, codec, meta = model_from_checkpoint(path)
    cfg = {"model_type": meta["model_type"], "model_config": meta["model_config"],
           "train_config": meta.get("train_config", {})}
    return ready(Pretrained(model, codec, generation_defaults(cfg["train_config"]), config=cfg), device, dtype)


def gpt2_pretrained(path: Path, name: str) -> Pretrained:
    """A Hugging Face GPT-2 folder as zoo's GPT and a byte-level BPE codec (zoo.hub.gpt2)."""
    model, codec = load_gpt2(path)
    config = {"model_type": "gpt", "model_config": dataclasses.asdict(model.config)}
    return Pretrained(model, codec, {"temperature": 0.8, "top_k": 40}, config=config, name=name)


def imagegpt_pretrained(path: Path, name: str) -> Pretrained:
    """A Hugging Face ImageGPT folder as zoo's GPT and a colour-cluster codec (zoo.hub.imagegpt); sampled as
    the paper did: temperature 1, no top-k."""
    model, codec = load_imagegpt(path)
    return Pretrained(model, codec, {"temperature": 1.0}, config=imagegpt_config(model), name=name)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load, except that a tensor tied to one in the file (stored once by safetensors) may be absent."""
    own = model.state_dict()
    ptr = {k: (v.untyped_storage().data_ptr(), v.storage_offset()) for k, v in own.items()}
    present = {ptr[k] for k in state if k in ptr}
    missing = [k for k in sorted(set(own) - set(state)) if ptr[k] not in present]
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise HubError(f"{source}: weights do not match a {getattr(model, 'model_type', '?')} model with its config: "
                       f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise HubError(f"{source}: tensor shapes differ from the config's model (name, file, expected): {bad[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)  # casts (the shipped float16 -> float32) in the same pass


def ready(m: Pretrained, device: str | torch.device, dtype: torch.dtype | str | None) -> Pretrained:
    """`m` on `device` in `dtype` (None keeps float32; a name such as "bfloat16" is accepted), eval mode."""
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise HubError(f"dtype={dtype!r} is not a torch dtype; accepted e.g. 'float32', 'bfloat16', 'float16'")
        dtype = getattr(torch, dtype)
    m.model.to(device=device, dtype=dtype).eval()
    return m
