"""Hugging Face GPT-2 folders -> zoo's GPT and a byte-level BPE codec (logits equal transformers').

Nothing is downloaded: the folder is one `save_pretrained` wrote, or a copy of the Hub's files.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.checkpoints.files import unpickler_reason
from zoo.codecs.base import Codec
from zoo.codecs.text import BPECodec
from zoo.hub.registry import CONFIG_FILE, HubError
from zoo.models.gpt import GPT
from zoo.models.gpt2_weights import gpt_config_from_hf, load_hf_state_dict

log = logging.getLogger(__name__)


def load_gpt2(path: str | Path) -> tuple[torch.nn.Module, Codec | None]:
    """Convert a Hugging Face GPT-2 folder (or a weights file inside one) into zoo's GPT and BPE codec.

    Reads config.json, then model.safetensors or pytorch_model.bin (torch.load with weights_only=True,
    so a pickle that would run code is refused), and vocab.json + merges.txt when present (codec None
    otherwise). The model's logits equal `GPT2LMHeadModel`'s (tests/test_hub.py).
    """
    p = Path(path).expanduser()
    folder, weights = (p, None) if p.is_dir() else (p.parent, p)
    if not (folder / CONFIG_FILE).is_file():
        raise HubError(f"no config.json in {folder}; expected a Hugging Face GPT-2 folder (save_pretrained output)")
    hf = json.loads((folder / CONFIG_FILE).read_text())
    if hf.get("model_type") != "gpt2":
        raise HubError(f"{folder / CONFIG_FILE} describes model_type={hf.get('model_type')!r}; only 'gpt2' converts")
    if weights is None:
        candidates = [folder / "model.safetensors", folder / "pytorch_model.bin"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise HubError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin "
                           "(sharded checkpoints are not supported)")
    state = _read_weights(weights)
    model = GPT(gpt_config_from_hf(hf))
    load_hf_state_dict(model, state)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    codec = None
    if vocab.is_file() and merges.is_file():
        eos = "<|endoftext|>" if "<|endoftext|>" in json.loads(vocab.read_text()) else None
        codec = BPECodec.from_gpt2_files(vocab, merges, eos_token=eos)
    else:
        log.warning("%s has no vocab.json + merges.txt: loaded the GPT-2 weights without a tokenizer", folder)
    return model.eval(), codec


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch pickle, never running pickled code."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = unpickler_reason(str(e))
        if "GLOBAL " not in reason:
            raise HubError(f"cannot read {path}: the file is truncated or corrupt ({reason})") from e
        raise HubError(f"refused to load {path}: it holds objects other than tensors and plain data, which "
                       f"could run code when unpickled ({reason})") from e
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise HubError(f"cannot read {path}: the file is truncated or corrupt ({e})") from e
