"""Hugging Face GPT-2 -> zoo's GPT: the config mapping and the state-dict adapter, beside the model they map to.

zoo's GPT names its modules as `GPT2LMHeadModel` does (zoo/models/gpt.py), so the weights import key for
key; the only change is HF's Conv1D matrices, stored (in, out), transposed to nn.Linear's (out, in). Reading
files (config.json, safetensors or a weights-only pickle, the tokenizer) is the hub's side: zoo/hub/gpt2.py.

    config = gpt_config_from_hf(hf_config_dict)      # GPTConfig, or an error naming the unsupported key
    model = GPT(config)
    load_hf_state_dict(model, hf_state_dict)          # checked whole before any tensor is copied
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zoo.models.gpt import GPT, GPTConfig

# HF's Conv1D layers: weight (in, out), transposed for nn.Linear
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# HF's GPT-2 activation names -> zoo's
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def gpt_config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """Map a Hugging Face GPT2Config dict (`config.to_dict()` or config.json) onto GPTConfig.

    Settings this GPT would compute differently (another MLP width or norm epsilon, no or
    per-layer attention scaling, cross-attention) are errors naming the key, never ignored.
    `reorder_and_upcast_attn` only changes fp16 rounding and is accepted. Dropout is not
    imported (inference); pass `dropout=` in `overrides` to train with it.
    """
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise ValueError(f"GPT-2 activation_function={act!r} is not supported; accepted: {sorted(ACTIVATIONS)}")
    n_embd = hf["n_embd"]
    unsupported = {  # key: (default, value zoo computes with)
        "n_inner": (None, (None, 4 * n_embd)),
        "layer_norm_epsilon": (1e-5, (1e-5,)),
        "scale_attn_weights": (True, (True,)),
        "scale_attn_by_inverse_layer_idx": (False, (False,)),
        "add_cross_attention": (False, (False,)),
    }
    for key, (default, accepted) in unsupported.items():
        if hf.get(key, default) not in accepted:
            raise ValueError(f"GPT-2 config {key}={hf[key]!r} is not supported by zoo's GPT; "
                             f"accepted: {list(accepted)}")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=n_embd, activation=ACTIVATIONS[act],
                     **({"tie_weights": bool(hf.get("tie_word_embeddings", True))} | overrides))


def zoo_state_dict(sd: dict[str, Tensor], model: GPT) -> dict[str, Tensor]:
    """A `GPT2LMHeadModel` / `GPT2Model` state dict in `model`'s keys and layouts, checked against it (keys,
    shapes, tying) without changing it; ValueError naming the first mismatch."""
    own = model.state_dict()
    sd = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
          for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # HF's mask buffers
    if "lm_head.weight" not in sd and "transformer.wte.weight" in sd:  # GPT2Model: the head is wte
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"GPT-2 state dict does not match this GPT: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    sd = {k: v.t() if k.endswith(CONV1D) else v for k, v in sd.items()}
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise ValueError(f"{k}: GPT-2 tensor has shape {tuple(v.shape)} (after the Conv1D transpose), "
                             f"this model expects {tuple(own[k].shape)}")
    if model.config.tie_weights and not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        raise ValueError("this GPT ties lm_head to wte (tie_weights=True) but the state dict holds a "
                         "different lm_head.weight; build it with tie_weights=False")
    return sd


def load_hf_state_dict(model: GPT, sd: dict[str, Tensor]) -> None:
    """Copy a `GPT2LMHeadModel` / `GPT2Model` state dict into `model`, key for key: everything is checked
    (`zoo_state_dict`) before anything is copied, so a mismatch leaves no half-loaded model."""
    own = model.state_dict()
    with torch.no_grad():
        for k, v in zoo_state_dict(sd, model).items():
            own[k].copy_(v)
