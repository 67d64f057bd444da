"""GGUF export of GPT-architecture models for llama.cpp: `zoo-export ... format=gguf`, or

    from zoo.hub.gguf_export import export_gguf, check_gguf
    path = export_gguf(zoo.load("gpt-pydoc"), "gpt-pydoc.gguf")
    check_gguf(zoo.load("gpt-pydoc"), path)   # llama.cpp's logits vs PyTorch's, else the file read back

Written with the `gguf` package (`pip install 'zoo[gguf]'`) under llama.cpp's `gpt2` architecture: its tensor
names (token_embd, position_embd, blk.N.attn_norm / attn_qkv / attn_output / ffn_norm / ffn_up / ffn_down,
output_norm, output) and `gpt2.*` hyperparameters. zoo's GPT keeps nn.Linear's (out, in) weights and a fused
q, k, v projection in GPT-2's order, so each tensor is stored as it is, in float32 (no quantization: the file
holds exactly the PyTorch weights). Only the GPT-2 layout maps: learned positions, LayerNorm with biases, GELU,
no position bias, as many key/value heads as query heads, no class condition, window or softcap; anything else
is refused naming the field. llama.cpp computes GELU with its tanh approximation, so a model trained with
exact GELU (`activation: gelu`, gpt-pydoc) agrees to about 5e-3 in logits of magnitude ~10 (TOLERANCE).

The vocabulary: llama.cpp's `gpt2` tokenizer (byte-level BPE). A char codec's characters become tokens in
GPT-2's byte-to-unicode spelling (" " is "Ġ"), and each character of more than one UTF-8 byte gets the merges
that join its bytes, so llama.cpp tokenizes text into the same ids as the codec. A byte codec's 256 bytes are
GPT-2's byte alphabet; a byte-level BPE codec's (GPT-2's own, or one zoo trained) vocabulary and merges are written as
they are, its special tokens as control tokens. A model with no codec (a GPT-2 folder without vocab files) gets
placeholder tokens "<0>", "<1>", ...: token ids in, logits out (llama.cpp's `none` tokenizer would leave it no
vocabulary size, and it refuses the embedding then).
"""

from __future__ import annotations

import importlib.util
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.hub.pretrained import Pretrained

GGUF_FILE = "model.gguf"
TOLERANCE = 1e-2  # max |llama.cpp logits - PyTorch logits| check_gguf accepts; gpt-pydoc measured 5e-3 (GELU: tanh
# approximation in llama.cpp, exact in gpt-pydoc; llama.cpp's own float32 sums)
_INSTALL = "pip install 'zoo[gguf]'"
INERT_MERGE = "ĠĠ ĠĠ"
_GPT2_LAYOUT = {"norm": ("layernorm",), "layer_bias": (True,), "activation": ("gelu", "gelu_tanh"),
                "position": ("learned",), "bias": ("none",), "qk_norm": (False,), "window": (None,),
                "logit_softcap": (None,), "num_classes": (0,), "zero_init_proj": (False, True)}


def check_gpt2_layout(m: Pretrained | nn.Module) -> nn.Module:
    """The model if llama.cpp's gpt2 architecture can run it; ValueError naming the first field that differs."""
    model = m.model if isinstance(m, Pretrained) else m
    if getattr(model, "model_type", None) != "gpt":
        raise ValueError(f"format=gguf takes GPT-architecture models (model_type 'gpt', e.g. gpt-pydoc or gpt2), "
                         f"got {getattr(model, 'model_type', type(model).__name__)!r}; format=onnx takes every model")
    c = model.config
    for name, accepted in _GPT2_LAYOUT.items():
        if getattr(c, name) not in accepted:
            raise ValueError(f"format=gguf: GPTConfig.{name}={getattr(c, name)!r} has no place in llama.cpp's gpt2 "
                             f"architecture; accepted: {list(accepted)}")
    if c.n_kv_head != c.n_head:
        raise ValueError(f"format=gguf: n_kv_head={c.n_kv_head} must equal n_head={c.n_head} (llama.cpp's gpt2)")
    return model


@lru_cache(maxsize=1)
def byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the spelling of byte-level BPE vocabularies)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in keep)
    return {b: chr(b) if b in keep else chr(256 + i) for i, b in enumerate(extra)} | {b: chr(b) for b in keep}


def vocabulary(codec: Any, vocab_size: int) -> tuple[list[str], list[str], list[int], int | None]:
    """(tokens, merges, token types, end-of-text id) for llama.cpp's gpt2 tokenizer."""
    import gguf

    normal, control = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    if codec is None:  # ids only; llama.cpp's `none` tokenizer would leave it no vocabulary size (measured)
        return [f"<{i}>" for i in range(vocab_size)], [], [normal] * vocab_size, None
    table = byte_chars()
    if getattr(codec, "type_name", None) == "byte":  # one token per byte, then end-of-text
        tokens = [table[b] for b in range(256)] + (["<|endoftext|>"] if codec.eos_id is not None else [])
        return tokens, [], [normal] * 256 + [control] * (len(tokens) - 256), codec.eos_id
    chars = getattr(codec, "chars", None)
    if chars is not None:  # a char codec: one token per character
        tokens, merges = [], []
        for ch in chars:
            pieces = [table[b] for b in ch.encode("utf-8")]
            tokens.append("".join(pieces))
            merges += [f"{''.join(pieces[:i])} {pieces[i]}" for i in range(1, len(pieces))]
        return tokens, list(dict.fromkeys(merges)), [normal] * len(tokens), None
    tokenizer = getattr(codec, "tokenizer", None)  # BPECodec: a Hugging Face `tokenizers` byte-level BPE
    if tokenizer is None or not hasattr(tokenizer, "to_str"):
        raise ValueError(f"format=gguf: no llama.cpp vocabulary for a {type(codec).__name__}; a char, byte or "
                         "byte-level BPE codec, or none, is accepted")
    state = json.loads(tokenizer.to_str())
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in state.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, merges, [control if t in special else normal for t in tokens], getattr(codec, "eos_id", None)


def export_gguf(m: Pretrained, path: str | Path) -> Path:
    """Write the model as a llama.cpp GGUF file (see the module docstring); returns the path."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"GGUF export needs the gguf package: {_INSTALL}")
    import gguf

    model = check_gpt2_layout(m)
    c = model.config
    codec = m.codec if isinstance(m, Pretrained) else None
    tokens, merges, types, eos = vocabulary(codec, c.vocab_size)
    if len(tokens) != c.vocab_size:
        raise ValueError(f"format=gguf: the codec has {len(tokens)} tokens, the model {c.vocab_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_name(getattr(m, "name", None) or path.stem)
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.n_embd)
    w.add_feed_forward_length(model.transformer.h[0].mlp.c_fc.out_features)
    w.add_block_count(c.n_layer)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(model.transformer.ln_f.eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    # llama.cpp's gpt2 tokenizer will not load without merges and gguf writes no empty array: a vocabulary without
    # merges gets INERT_MERGE, which never applies (no merge makes the two-character symbols it joins)
    w.add_token_merges(merges or [INERT_MERGE])
    w.add_add_bos_token(False)
    if eos is not None:
        w.add_eos_token_id(eos)
        w.add_bos_token_id(eos)  # GPT-2's <|endoftext|> is both
    for name, tensor in gguf_tensors(model).items():
        w.add_tensor(name, tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_tensors(model: nn.Module) -> dict[str, np.ndarray]:
    """llama.cpp gpt2 tensor name -> float32 array, in zoo's (out, in) layout."""
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["transformer.wte.weight"], "position_embd.weight": sd["transformer.wpe.weight"],
           "output_norm.weight": sd["transformer.ln_f.weight"], "output_norm.bias": sd["transformer.ln_f.bias"]}
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(model.config.n_layer):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"blk.{i}.{theirs}.{p}"] = sd[f"transformer.h.{i}.{ours}.{p}"]
    if model.lm_head.weight is not model.transformer.wte.weight:  # tied: llama.cpp reuses token_embd
        out["output.weight"] = sd["lm_head.weight"]
    return out


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, tensors) as the `gguf` package's reader sees the file (tensors in PyTorch's shape order)."""
    import gguf

    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: np.asarray(t.data).reshape(tuple(reversed(t.shape.tolist()))) for t in r.tensors}
    return meta, tensors


def llama_logits(path: str | Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits (T, V) for token ids, through llama-cpp-python."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=max(len(ids), 8), logits_all=True, verbose=False, n_threads=1,
                type_k=0, type_v=0)  # GGML_TYPE_F32 keys and values: the default float16 cache rounds them
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


def check_gguf(m: Pretrained, path: str | Path, *, tolerance: float = TOLERANCE) -> str:
    """A line saying how the file agrees with the PyTorch model: llama.cpp's logits over a full context of token
    ids when llama-cpp-python is installed (ValueError past `tolerance`), else the gguf reader's tensors, which
    must equal the weights exactly."""
    model = check_gpt2_layout(m)
    meta, tensors = read_gguf(path)
    expected = gguf_tensors(model)
    differ = sorted(k for k in expected if k not in tensors or not np.array_equal(tensors[k], expected[k]))
    if differ or set(tensors) != set(expected):
        raise ValueError(f"{path}: tensors {differ or sorted(set(tensors) ^ set(expected))} differ from the model")
    if importlib.util.find_spec("llama_cpp") is None:
        return (f"{len(tensors)} tensors equal to the PyTorch weights ({meta['general.architecture']} architecture); "
                "llama.cpp not run: pip install llama-cpp-python")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (model.config.block_size,), generator=g)
    with torch.no_grad():
        ref = model.float().cpu()(ids[None])[0].numpy()
    diff = float(np.abs(llama_logits(path, ids.tolist()) - ref).max())
    if not diff <= tolerance or math.isnan(diff):
        raise ValueError(f"{path}: llama.cpp's logits differ from PyTorch's by {diff:.3g} > {tolerance}")
    return f"llama.cpp logits within {diff:.2g} of PyTorch's over {len(ids)} tokens"
