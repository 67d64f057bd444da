"""Reading zoo checkpoints safely: the metadata and the model they hold, no Lightning needed.

A Lightning `.ckpt` written by `zoo-train` carries, beside the weights, `ckpt["zoo"]`: the format
version, the model type and config, the codec state and the resolved training config. It is read
with `torch.load(weights_only=True)`, so a crafted pickle cannot run code: anything other than
tensors and plain containers is refused before it is built.

Every way a file can be wrong ends in a `CheckpointError` (a ValueError) that names the file and
what is wrong: missing/empty/truncated/corrupt, not a checkpoint, not a zoo checkpoint, written by a
newer zoo (format version above `CHECKPOINT_VERSION`), metadata that is not a model
zoo knows, or weights that do not fit the model the metadata describes (RELIABILITY.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.checkpoints.files import CheckpointError, safe_load
from zoo.checkpoints.lora import apply_lora, merge_lora
from zoo.codecs.base import Codec, codec_from_dict
from zoo.models.base import GenerativeModel, build_model

CHECKPOINT_VERSION = 1  # ckpt["zoo"]["version"] that zoo-train writes (zoo.training.module) and the newest read here


def supported_version() -> int:
    """The newest checkpoint format this zoo reads (`CHECKPOINT_VERSION`)."""
    return CHECKPOINT_VERSION


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a `.ckpt` file with weights_only=True; raise CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        if (path / ".metadata").is_file():  # torch.distributed.checkpoint folder (strategy=fsdp, sharded)
            raise CheckpointError(f"{path} is a sharded (distributed) checkpoint folder; consolidate it into one "
                                  f"file first: zoo-export checkpoint={path} out=model.ckpt")
        raise CheckpointError(f"{path} is a folder; expected a .ckpt file written by zoo-train")
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    if "zoo" not in ckpt:
        raise CheckpointError(f"{path} is a Lightning checkpoint but not a zoo one (no 'zoo' metadata); "
                              "expected a checkpoint written by zoo-train")
    check_metadata(ckpt, source=path)
    return ckpt


def check_metadata(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> None:
    """Check `ckpt["zoo"]` (format version, model type and config) of a loaded checkpoint; CheckpointError
    naming `source` otherwise. Also usable on a checkpoint Lightning loaded itself (e.g. when resuming)."""
    path = source
    meta = ckpt.get("zoo")
    if meta is None:
        raise CheckpointError(f"{path} has no 'zoo' metadata; expected a checkpoint written by zoo-train")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the 'zoo' metadata is a {type(meta).__name__}, expected a dict; the "
                              "checkpoint is corrupt or was not written by zoo-train")
    version, supported = meta.get("version", 1), supported_version()
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not a positive integer; "
                              "the checkpoint is corrupt")
    if version > supported:
        raise CheckpointError(f"{path} was written by a newer zoo (checkpoint format version {version}); this zoo "
                              f"reads versions up to {supported}. Upgrade zoo (pip install -U zoo) to load it.")
    for key, kind in (("model_type", str), ("model_config", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: the 'zoo' metadata has {key}={meta.get(key)!r:.80}, expected a "
                                  f"{kind.__name__}; the checkpoint is corrupt")
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(ckpt['state_dict']).__name__}, expected a dict")


def model_from_checkpoint(path: str | Path, *, expect_type: str | None = None, device: str | torch.device = "cpu",
                          keep_lora: bool = False) -> tuple[GenerativeModel, Codec | None, dict]:
    """Rebuild (model, codec, zoo metadata) from a zoo `.ckpt`; the model is in eval mode.

    A LoRA run's checkpoint (`meta["lora"]`) gives a plain model with the adapters merged into its
    weights, or with `keep_lora=True` the wrapped model (`zoo.checkpoints.lora`: adapters separate)."""
    ckpt = read_checkpoint(path)
    meta = ckpt["zoo"]
    if expect_type is not None and meta["model_type"] != expect_type:
        raise CheckpointError(f"{path} holds a {meta['model_type']!r} model, expected {expect_type!r}")
    try:
        model = build_model(meta["model_type"], meta["model_config"])
    except (ValueError, TypeError) as e:  # unknown type, unknown/invalid config field
        raise CheckpointError(f"{path}: its metadata does not describe a model this zoo can build ({e})") from e
    if meta.get("lora"):
        apply_lora(model, meta["lora"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
             if isinstance(k, str) and k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: weights of another size of model
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit a {meta['model_type']} model with its config "
                              f"({' '.join(first[:3])[:400]})") from e
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to wte
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match a {meta['model_type']} model with its config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if meta.get("lora") and not keep_lora:
        model = merge_lora(model)
    try:
        codec = codec_from_dict(meta["codec"]) if meta.get("codec") else None
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: its codec state cannot be rebuilt ({e})") from e
    return model.to(device).eval(), codec, meta
