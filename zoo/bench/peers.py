"""Peer GPT implementations at zoo's weights, and the correctness gate every comparison passes first.

Peers (pip-installable; each is optional and reported as unavailable, with the reason, when it cannot
be imported):
- `transformers` GPT2LMHeadModel: zoo's `GPT` imports its state dict key for key
  (`zoo.models.gpt2_weights.load_hf_state_dict`), so a random HF model is built and zoo gets its weights.
- `x-transformers` TransformerWrapper + Decoder: pre-norm, learned absolute positions (scaled by
  d^-1/2 inside x-transformers, undone when copying), tied embeddings, SDPA attention. Its norms and
  attention projections have no bias, so it is compared with a zoo GPT built with `layer_bias=False`.
- `litgpt` GPT (GPT-NeoX-style MLP, sequential residual, LayerNorm): it has rotary positions only, no
  learned absolute table, and an untied head, so it is compared with a zoo GPT built with
  `position="rotary"`, its head tied to the embedding by sharing the parameter.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.models.gpt import GPT, GPTConfig
from zoo.models.gpt2_weights import gpt_config_from_hf, load_hf_state_dict
from zoo.sampling import generate

Logits = Callable[[Tensor], Tensor]  # idx (B, T) -> logits (B, T, V)
LITGPT_TARGET = Path(os.environ.get("ZOO_BENCH_LITGPT", "/tmp/litgpt_pkg"))  # pip install --no-deps --target


class GateError(RuntimeError):
    """A peer does not compute the same function as zoo at the same weights: its row is not timed."""


def hf_gpt2(*, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int, activation: str,
            std: float = 0.02, seed: int = 0) -> nn.Module:
    """A random `transformers.GPT2LMHeadModel` without dropout; `activation` is its activation_function."""
    import transformers

    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size,
                                  vocab_size=vocab_size, activation_function=activation, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                                  pad_token_id=0, initializer_range=std)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def zoo_from_hf(hf: nn.Module, **overrides: Any) -> GPT:
    model = GPT(gpt_config_from_hf(hf.config.to_dict(), **overrides))
    load_hf_state_dict(model, hf.state_dict())
    return model


def zoo_gpt(*, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int, seed: int = 0,
            **fields: Any) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                         vocab_size=vocab_size, **fields))


def hf_logits(hf: nn.Module) -> Logits:
    return lambda x: hf(x, use_cache=False).logits


def refuse_switches(c: Any, peer: str) -> None:
    """Issue 23's architecture switches have no counterpart in the peers' GPT-2 models: refuse them by name
    rather than let the logit gate find the difference."""
    on = {k: v for k, v in {"qk_norm": c.qk_norm, "logit_softcap": c.logit_softcap}.items() if v}
    if c.activation == "relu2":
        on["activation"] = c.activation
    if on:
        raise ValueError(f"{peer} has no counterpart for zoo's {', '.join(f'{k}={v!r}' for k, v in on.items())}; "
                         "map a zoo GPT without them (qk_norm=False, logit_softcap=None, no relu2)")


# ---- x-transformers --------------------------------------------------------------------------------
def xtransformers_from_zoo(zoo: GPT) -> nn.Module:
    """An x-transformers decoder holding `zoo`'s weights (zoo: layer_bias=False, learned positions, tied)."""
    from x_transformers import Decoder, TransformerWrapper

    c = zoo.config
    refuse_switches(c, "x-transformers")
    if c.layer_bias or c.position != "learned" or c.bias != "none" or not c.tie_weights or c.norm != "layernorm":
        raise ValueError("x-transformers maps onto a zoo GPT with layer_bias=False, position='learned', bias='none', "
                         f"tie_weights=True, norm='layernorm'; got layer_bias={c.layer_bias}, position={c.position!r}, "
                         f"bias={c.bias!r}, "
                         f"tie_weights={c.tie_weights}, norm={c.norm!r}")
    act = nn.GELU(approximate="tanh" if c.activation == "gelu_tanh" else "none")
    xt = TransformerWrapper(num_tokens=c.vocab_size, max_seq_len=c.block_size, tie_embedding=True,
                            tie_embedding_scale=1.0,  # its default d^-1/2 would scale the logits
                            attn_layers=Decoder(dim=c.n_embd, depth=c.n_layer, heads=c.n_head,
                                                attn_dim_head=c.n_embd // c.n_head, attn_flash=True,
                                                ff_no_bias=True, ff_custom_activation=act))
    z = zoo.state_dict()
    sd: dict[str, Tensor] = {"token_emb.emb.weight": z["transformer.wte.weight"],
                             # x-transformers multiplies its position table by d^-1/2 (AbsolutePositionalEmbedding)
                             "pos_emb.emb.weight": z["transformer.wpe.weight"] * c.n_embd**0.5,
                             "attn_layers.final_norm.gamma": z["transformer.ln_f.weight"] - 1.0}
    for i in range(c.n_layer):
        p, a, f = f"transformer.h.{i}.", f"attn_layers.layers.{2 * i}.", f"attn_layers.layers.{2 * i + 1}."
        q, k, v = z[p + "attn.c_attn.weight"].split(c.n_embd, dim=0)  # (C, C) each, rows = output features
        # x-transformers' norms multiply by (gamma + 1) (Decoder's default norm_add_unit_offset=True)
        sd |= {a + "0.0.gamma": z[p + "ln_1.weight"] - 1.0, a + "1.to_q.weight": q, a + "1.to_k.weight": k,
               a + "1.to_v.weight": v, a + "1.to_out.weight": z[p + "attn.c_proj.weight"],
               f + "0.0.gamma": z[p + "ln_2.weight"] - 1.0, f + "1.ff.0.0.weight": z[p + "mlp.c_fc.weight"],
               f + "1.ff.2.weight": z[p + "mlp.c_proj.weight"]}
    xt.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    return xt


# ---- litgpt ----------------------------------------------------------------------------------------
def import_litgpt_model() -> tuple[types.ModuleType | None, str]:
    """`litgpt.model`, or None and why not.

    litgpt cannot be pip-installed beside transformers 5 (its pins downgrade huggingface_hub); it can be
    unpacked without dependencies (`pip install --no-deps --target /tmp/litgpt_pkg litgpt`, or
    $ZOO_BENCH_LITGPT). `litgpt/__init__.py` imports its whole CLI and API (psutil, jsonargparse, loggers),
    which such an install lacks; `litgpt.model` itself needs only `litgpt.config` and, for legacy
    checkpoint keys this benchmark never loads, one function of a conversion script. So the package is
    registered without running its `__init__` and that function is replaced by one that raises.
    """
    if "litgpt.model" in sys.modules:
        return sys.modules["litgpt.model"], ""
    try:
        installed = importlib.util.find_spec("litgpt") is not None
    except ValueError:  # a module object without a spec under that name: not a real installation
        installed = False
    if installed:
        try:
            return importlib.import_module("litgpt.model"), ""
        except Exception as e:  # noqa: BLE001 - any import failure means "not available", with the reason
            return None, f"installed but `import litgpt.model` failed: {type(e).__name__}: {e}"
    root = LITGPT_TARGET / "litgpt"
    if not (root / "model.py").is_file():
        return None, (f"not installed and no unpacked copy at {LITGPT_TARGET} (pip install --no-deps --target "
                      f"{LITGPT_TARGET} litgpt)")
    saved = {k: v for k, v in sys.modules.items() if k == "litgpt" or k.startswith("litgpt.")}
    pkg = types.ModuleType("litgpt")
    pkg.__path__ = [str(root)]
    scripts = types.ModuleType("litgpt.scripts")
    scripts.__path__ = [str(root / "scripts")]
    convert = types.ModuleType("litgpt.scripts.convert_hf_checkpoint")

    def qkv_reassemble(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("zoo-bench loads litgpt.model without its checkpoint-conversion scripts")

    convert.qkv_reassemble = qkv_reassemble
    sys.modules.update({"litgpt": pkg, "litgpt.scripts": scripts, "litgpt.scripts.convert_hf_checkpoint": convert})
    try:
        return importlib.import_module("litgpt.model"), ""
    except Exception as e:  # noqa: BLE001
        for k in [k for k in sys.modules if k == "litgpt" or k.startswith("litgpt.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        return None, f"`import litgpt.model` from {LITGPT_TARGET} failed: {type(e).__name__}: {e}"


def litgpt_from_zoo(zoo: GPT, litgpt_model: types.ModuleType) -> nn.Module:
    """A litgpt GPT holding `zoo`'s weights (zoo: position='rotary', layernorm, GELU MLP, tied head)."""
    c = zoo.config
    refuse_switches(c, "litgpt")
    if (c.position != "rotary" or c.bias != "none" or c.norm != "layernorm" or c.activation == "swiglu"
            or not c.tie_weights):
        raise ValueError("litgpt maps onto a zoo GPT with position='rotary', bias='none', norm='layernorm', a GELU "
                         f"activation and tie_weights=True; got position={c.position!r}, bias={c.bias!r}, "
                         f"norm={c.norm!r}, activation={c.activation!r}, tie_weights={c.tie_weights}")
    cfg = litgpt_model.Config(name="zoo-gpt", block_size=c.block_size, vocab_size=c.vocab_size,
                              padded_vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                              n_embd=c.n_embd, n_query_groups=c.n_head, head_size=c.n_embd // c.n_head,
                              rotary_percentage=1.0, rope_base=10000, parallel_residual=False, bias=c.layer_bias,
                              lm_head_bias=False, norm_class_name="LayerNorm", norm_eps=1e-5,
                              mlp_class_name="GptNeoxMLP", intermediate_size=4 * c.n_embd,
                              gelu_approximate="tanh" if c.activation == "gelu_tanh" else "none")
    lit = litgpt_model.GPT(cfg)
    z = zoo.state_dict()
    names = {"ln_1": "norm_1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "norm_2",
             "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
    sd = {"transformer.wte.weight": z["transformer.wte.weight"], "lm_head.weight": z["transformer.wte.weight"]}
    for key in ("weight", "bias") if c.layer_bias else ("weight",):
        sd[f"transformer.ln_f.{key}"] = z[f"transformer.ln_f.{key}"]
    for i in range(c.n_layer):
        for ours, theirs in names.items():
            for key in ("weight", "bias") if c.layer_bias else ("weight",):
                sd[f"transformer.h.{i}.{theirs}.{key}"] = z[f"transformer.h.{i}.{ours}.{key}"]
    lit.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=False)
    lit.lm_head.weight = lit.transformer.wte.weight  # tie, as zoo does
    return lit


# ---- the gate --------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(logits: Logits, prompt: Tensor, n: int) -> list[list[int]]:
    """Greedy continuation by recomputing the whole prefix: the peer-agnostic reference decoder."""
    seq = prompt
    for _ in range(n):
        nxt = logits(seq)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompt.shape[1]:].tolist()


@torch.no_grad()
def check_gate(name: str, zoo: GPT, peer: nn.Module, peer_logits: Logits, idx: Tensor, *, new_tokens: int,
               atol: float = 1e-4, rtol: float = 1e-4) -> dict[str, Any]:
    """Same logits (eval, fp32, within atol/rtol) and the same greedy tokens as zoo, or GateError.

    zoo decodes through `zoo.sampling.generate` (its KV cache); the peer by recomputation.
    """
    was = zoo.training, peer.training
    zoo.eval(), peer.eval()
    try:
        idx = idx[:2]  # two rows are as strong a check as eight, at a quarter of the cost
        a, b = zoo(idx), peer_logits(idx)
        if a.shape != b.shape:
            raise GateError(f"{name}: logits shape {tuple(b.shape)}, zoo {tuple(a.shape)}")
        diff = (a - b).abs().max().item()
        if not torch.allclose(a, b, atol=atol, rtol=rtol):
            raise GateError(f"{name}: logits differ from zoo's at the same weights (max abs diff {diff:.3g}, "
                            f"tolerance atol={atol:g} rtol={rtol:g}); the peer does not compute the same model, "
                            "so its timing would not be comparable")
        prompt = idx[:, : max(1, min(16, idx.shape[1], zoo.config.block_size - new_tokens))]
        ours = generate(zoo, prompt, temperature=0, max_new_tokens=new_tokens)
        theirs = greedy(peer_logits, prompt, new_tokens)
        if ours != theirs:
            row = next(i for i, (u, v) in enumerate(zip(ours, theirs)) if u != v)
            pos = next(i for i, (u, v) in enumerate(zip(ours[row], theirs[row])) if u != v)
            raise GateError(f"{name}: greedy tokens differ from zoo's (row {row}, first at new token {pos}: zoo "
                            f"{ours[row][pos]}, peer {theirs[row][pos]})")
    finally:
        zoo.train(was[0]), peer.train(was[1])
    return {"max_abs_logit_diff": diff, "greedy_tokens": new_tokens * idx.shape[0],
            "distinct_tokens": len({t for r in ours for t in r})}
