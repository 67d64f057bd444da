"""Reading zoo checkpoints safely.

A Lightning `.ckpt` written by `zoo-train` carries, beside the weights, `ckpt["zoo"]`: the model
type and config, the codec state and the resolved training config. It is read with
`torch.load(weights_only=True)`, so a crafted pickle cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from zoo.codecs.base import Codec, codec_from_dict
from zoo.models.base import GenerativeModel, build_model


class CheckpointError(ValueError):
    pass


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a `.ckpt` file with weights_only=True; raise CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a .ckpt file written by zoo-train")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the save was probably interrupted")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused to load {path}: it contains objects other than tensors and plain "
                              f"data, which could run code when unpickled ({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    if "zoo" not in ckpt:
        raise CheckpointError(f"{path} is a Lightning checkpoint but not a zoo one (no 'zoo' metadata); "
                              "expected a checkpoint written by zoo-train")
    return ckpt


def model_from_checkpoint(path: str | Path, *, expect_type: str | None = None,
                          device: str | torch.device = "cpu") -> tuple[GenerativeModel, Codec | None, dict]:
    """Rebuild (model, codec, zoo metadata) from a zoo `.ckpt`; the model is in eval mode."""
    ckpt = read_checkpoint(path)
    meta = ckpt["zoo"]
    if expect_type is not None and meta["model_type"] != expect_type:
        raise CheckpointError(f"{path} holds a {meta['model_type']!r} model, expected {expect_type!r}")
    model = build_model(meta["model_type"], meta["model_config"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to wte
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match a {meta['model_type']} model with its config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    codec = codec_from_dict(meta["codec"]) if meta.get("codec") else None
    return model.to(device).eval(), codec, meta
