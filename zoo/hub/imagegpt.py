"""Hugging Face ImageGPT folders -> zoo's GPT and a colour-cluster codec (logits equal transformers').

Nothing is downloaded here: the folder is one `save_pretrained` wrote (model and image processor), or a
snapshot of a Hub repo such as openai/imagegpt-small (config.json, pytorch_model.bin or model.safetensors,
preprocessor_config.json). The weights map onto zoo's GPT (zoo.models.imagegpt_weights); the processor's
`clusters` become the codec (zoo.codecs.clusters).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from zoo.codecs.clusters import ColourClusterCodec
from zoo.hub.gpt2 import _read_weights
from zoo.hub.registry import CONFIG_FILE, HubError
from zoo.models.gpt import GPT
from zoo.models.gpt2_weights import load_hf_state_dict
from zoo.models.imagegpt_weights import gpt_config_from_imagegpt

PROCESSOR_FILE = "preprocessor_config.json"  # the image processor's settings, the colour clusters among them


def load_imagegpt(path: str | Path) -> tuple[GPT, ColourClusterCodec]:
    """Convert a Hugging Face ImageGPT folder into zoo's GPT (eval mode) and its colour-cluster codec.

    Weights: model.safetensors, else pytorch_model.bin read with weights_only=True (a pickle that would run code
    is refused). The model's logits equal `ImageGPTForCausalImageModeling`'s (tests/test_imagegpt.py).
    """
    folder = Path(path).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    hf = _json(folder / CONFIG_FILE, "a Hugging Face ImageGPT folder (save_pretrained output)")
    try:
        config = gpt_config_from_imagegpt(hf)
    except ValueError as e:
        raise HubError(f"{folder / CONFIG_FILE}: {e}") from e
    weights = next((f for f in (folder / "model.safetensors", folder / "pytorch_model.bin") if f.is_file()), None)
    if weights is None:
        raise HubError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin "
                       "(sharded checkpoints are not supported)")
    model = GPT(config)
    try:
        load_hf_state_dict(model, _read_weights(weights))
    except ValueError as e:
        raise HubError(f"{weights}: {e}") from e
    return model.eval(), codec_from_processor(folder, config.block_size)


def codec_from_processor(folder: Path, n_positions: int) -> ColourClusterCodec:
    """The colour-cluster codec of `folder`'s preprocessor_config.json, sized to the model's positions."""
    processor = _json(folder / PROCESSOR_FILE, "ImageGPT's image processor config, which holds the colour clusters")
    if processor.get("clusters") is None:
        raise HubError(f"{folder / PROCESSOR_FILE} has no `clusters`: without them the model's tokens have no colours")
    height, width = _size(processor.get("size"), n_positions)
    if height * width != n_positions:
        raise HubError(f"{folder / PROCESSOR_FILE}: images of {height}x{width} pixels do not fill the model's "
                       f"{n_positions} positions (n_positions)")
    try:
        return ColourClusterCodec(height=height, width=width, clusters=processor["clusters"])
    except ValueError as e:
        raise HubError(f"{folder / PROCESSOR_FILE}: {e}") from e


def _size(size: Any, n_positions: int) -> tuple[int, int]:
    """(height, width) from the processor's `size` ({"height", "width"}, or one int for a square), else the
    square that n_positions makes."""
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, int):
        return size, size
    side = math.isqrt(n_positions)
    return side, side


def _json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise HubError(f"no {path.name} in {path.parent}; expected {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HubError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from e


def imagegpt_config(model: GPT) -> dict[str, Any]:
    """The `config` a loaded ImageGPT carries (as an export's): model type and resolved GPTConfig."""
    return {"model_type": "gpt", "model_config": dataclasses.asdict(model.config)}

