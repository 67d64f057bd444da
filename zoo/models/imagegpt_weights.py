"""Hugging Face ImageGPT -> zoo's GPT: the config mapping, beside the model it maps to.

`ImageGPTForCausalImageModeling` (Chen et al. 2020) is GPT-2's layout with four differences, each a GPTConfig
setting rather than another model class:
  * its layer norm divides by the root mean square without subtracting the mean and has no bias: norm="rmsnorm"
    (eps `layer_norm_epsilon`);
  * its MLP activation is "quick_gelu", x · sigmoid(1.702 x);
  * a start-of-image token, the last id of the HF vocabulary (vocab_size − 1), is read but never predicted: zoo's
    vocab_size is the clusters alone and start_token=True adds the start row to `wte`;
  * its head is untied and `vocab_size − 1` wide: tie_weights=False.
The state dict then maps key for key as GPT-2's does (`zoo.models.gpt2_weights.load_hf_state_dict`: HF's Conv1D
matrices transposed, checked whole before anything is copied).
"""

from __future__ import annotations

from typing import Any

from zoo.models.gpt import GPTConfig

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def gpt_config_from_imagegpt(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """Map a Hugging Face ImageGPTConfig dict (config.json) onto GPTConfig; a setting zoo's GPT would compute
    differently is a ValueError naming the key. Dropout is not imported (inference): pass `dropout=` to train."""
    if hf.get("model_type") != "imagegpt":
        raise ValueError(f"model_type={hf.get('model_type')!r} is not an ImageGPT config ('imagegpt')")
    act = hf.get("activation_function", "quick_gelu")
    if act not in ACTIVATIONS:
        raise ValueError(f"ImageGPT activation_function={act!r} is not supported; accepted: {sorted(ACTIVATIONS)}")
    n_embd = hf["n_embd"]
    unsupported = {  # key: (default, values zoo computes with)
        "n_inner": (None, (None, 4 * n_embd)),
        "layer_norm_epsilon": (1e-5, (1e-5,)),
        "scale_attn_weights": (True, (True,)),
        "scale_attn_by_inverse_layer_idx": (False, (False,)),
        "add_cross_attention": (False, (False,)),
        "tie_word_embeddings": (False, (False,)),
    }
    for key, (default, accepted) in unsupported.items():
        if hf.get(key, default) not in accepted:
            raise ValueError(f"ImageGPT config {key}={hf[key]!r} is not supported by zoo's GPT; "
                             f"accepted: {list(accepted)}")
    return GPTConfig(vocab_size=hf["vocab_size"] - 1, block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=n_embd, norm="rmsnorm", activation=ACTIVATIONS[act],
                     tie_weights=False, start_token=True, **overrides)
