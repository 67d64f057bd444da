"""ImageGPT: images as sequences of patches — a global transformer over patches, a local one inside each.

The MEGABYTE design (Yu et al. 2023, "MEGABYTE: Predicting Million-byte Sequences with Multiscale
Transformers", section 2) applied to images. The token layout is `ImagePatchCodec`'s
(zoo/codecs/image.py): N patches in raster order, each P = p·p·C sub-pixel values, T = N·P tokens.

* Global model: causal over patches. Its input at position k is the start embedding, which carries
  the class (k = 0), or the embedding of patch k − 1 (k > 0), plus a learned position. The patch
  embedding is a sum of per-(slot, value) embeddings: a linear map of the patch's concatenated
  one-hot sub-pixels, i.e. MEGABYTE's concatenated byte embeddings (eq. 2) in one table. So the
  global output h_k has seen the class and patches 0 .. k − 1.
* Local model: causal inside one patch. Its input at slot p is slice p of `to_local(h_k)` (MEGABYTE
  eq. 4: one slice of the global output per local position; the projection bias doubles as the local
  position embedding) plus the embedding of sub-pixel p − 1 of the same patch (none at p = 0). Its
  output at slot p gives the logits of sub-pixel p.

`patch_size=1` (P = 1) gives an ImageGPT-style pixel model (Chen et al. 2020) with a class token: the
local model would attend over a single position, so set `local_n_layer=0` to bypass it — the logits
are then `lm_head(ln_f(to_local(h_k)))`. `local_n_layer=0` is allowed for any P; sub-pixels of a
patch then see only the sub-pixel before them (besides the global state).

Training convention (unlike GPT): logits[:, t] predicts idx[:, t] from idx[:, :t] and the class; the
datamodule gives idx == targets, the model shifts internally behind the start embedding.
Conditioning: class ids in [0, num_classes); id `num_classes` is "no condition" (classifier-free
guidance, Ho & Salimans 2022), used when `cond` is None and, during training, for a `cond_dropout`
fraction of the batch. A model with num_classes == 0 is unconditional.

Prefix hook: the global stream starts with `prefix_len` inputs from `_prefix` (here 1: the class/start
embedding); zoo/models/text2image.py overrides both to put a caption in front of the start token, and
`_image_forward` hands back the global outputs at those extra positions.

Decoding (`prefill` / `decode_step`) is exact: the global KV cache advances once per completed patch,
the local KV cache restarts at every patch.

Shape legend: B batch, N patches, P tokens per patch, T = N·P, V vocab (levels), C global width,
L local width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core.attention import KVCache
from zoo.core.layers import Activation, Block, NormKind, make_norm, softcap
from zoo.models.base import (
    GenerativeModel,
    KernelName,
    check_class_ids,
    check_softcap,
    init_proj,
    refuse_old_spellings,
    register,
    require_positive,
    validate_choices,
)


@dataclass(kw_only=True)
class ImageGPTConfig:
    # Image geometry: training leaves these null in conf/model/image_gpt.yaml and takes them from the
    # codec attributes of the same name (zoo.training.builders.build_module).
    vocab_size: int  # sub-pixel levels
    num_patches: int  # N
    patch_tokens: int  # P = patch_size² · channels
    num_classes: int = 0  # 0 = unconditional
    n_layer: int = 4  # global model
    n_head: int = 4
    n_embd: int = 128
    local_n_layer: int = 2  # 0 = no local transformer (e.g. patch_size=1)
    local_n_head: int = 2
    local_n_embd: int = 64
    dropout: float = 0.0
    cond_dropout: float = 0.1  # fraction of training rows whose class becomes "no condition"
    layer_bias: bool = True  # bias vectors in every Linear (but lm_head) and LayerNorm
    norm: NormKind = "layernorm"
    activation: Activation = "gelu"
    kernel: KernelName = "auto"  # how attention is computed; learned positions, no position bias: auto = sdpa
    # Speedrun switches, off by default (as GPTConfig's), for the global and the local transformer alike:
    qk_norm: bool = False  # RMS-normalise each head's q and k (learnable gains q_norm, k_norm)
    zero_init_proj: bool = False  # attn.c_proj and mlp.c_proj start at zero: every block starts as the identity
    logit_softcap: float | None = None  # cap · tanh(logits / cap) on the output logits; None = raw logits

    def __post_init__(self) -> None:
        refuse_old_spellings(self)
        validate_choices(self)
        require_positive(self, "vocab_size", "num_patches", "patch_tokens", "n_layer", "n_head", "n_embd",
                         "local_n_head", "local_n_embd")
        for name in ("num_classes", "local_n_layer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ImageGPTConfig.{name} must be an integer >= 0, got {value!r}")
        for width, heads in (("n_embd", "n_head"), ("local_n_embd", "local_n_head")):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f"ImageGPTConfig.{width}={getattr(self, width)} must be divisible by "
                                 f"{heads}={getattr(self, heads)}")
        for name in ("dropout", "cond_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ImageGPTConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        check_softcap(self)

    @classmethod
    def for_codec(cls, codec: Any, **fields: Any) -> ImageGPTConfig:
        """A config whose geometry (vocab_size, num_patches, patch_tokens, num_classes) is the codec's."""
        geometry = {k: getattr(codec, k) for k in ("vocab_size", "num_patches", "patch_tokens", "num_classes")}
        return cls(**(geometry | fields))


class ImageGPTCache:
    """Decoding state: the global and local KV caches, the tokens so far, the current patch's slices.

    `pos` is the number of image tokens consumed (the next token to predict is token `pos`).
    """

    def __init__(self, model: ImageGPT, batch: int, device: torch.device | str, dtype: torch.dtype) -> None:
        c = model.config
        self.global_kv = KVCache(c.n_layer, batch, c.n_head, model.prefix_len - 1 + c.num_patches,
                                 c.n_embd // c.n_head, device, dtype)
        self.local_kv = KVCache(c.local_n_layer, batch, c.local_n_head, c.patch_tokens,
                                c.local_n_embd // c.local_n_head, device, dtype)
        self.tokens = torch.zeros(batch, c.num_patches * c.patch_tokens, dtype=torch.long, device=device)
        self.slices: Tensor | None = None  # (B, P, L): to_local(h_k) for the patch being decoded
        self.pos = 0


@register("image_gpt", ImageGPTConfig)
class ImageGPT(GenerativeModel):
    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__()
        self.config = c = config
        n, p, v = c.num_patches, c.patch_tokens, c.vocab_size
        block = dict(kernel=c.kernel, dropout=c.dropout, bias=c.layer_bias, norm=c.norm, activation=c.activation,
                     qk_norm=c.qk_norm)
        self.global_model = nn.ModuleDict(dict(
            cls_emb=nn.Embedding(c.num_classes + 1, c.n_embd),  # last row: no condition / start of image
            patch_emb=nn.Embedding(p * v, c.n_embd),  # row s·V + value: sub-pixel value in slot s
            wpe=nn.Embedding(self.prefix_len - 1 + n, c.n_embd),  # prefix, then patches 0 .. N − 2
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(Block(c.n_embd, c.n_head, layer_idx=i, **block) for i in range(c.n_layer)),
            ln_f=make_norm(c.norm, c.n_embd, c.layer_bias),
        ))
        self.local_model = nn.ModuleDict(dict(
            to_local=nn.Linear(c.n_embd, p * c.local_n_embd),  # one L-slice of h_k per slot
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(Block(c.local_n_embd, c.local_n_head, layer_idx=i, **block)
                            for i in range(c.local_n_layer)),
            ln_f=make_norm(c.norm, c.local_n_embd, c.layer_bias),
            lm_head=nn.Linear(c.local_n_embd, v, bias=False),
        ))
        if p > 1:  # the previous sub-pixel of the patch; with P = 1 there is none
            self.local_model["wte"] = nn.Embedding(v, c.local_n_embd)
        self.register_buffer("slot_offset", torch.arange(p) * v, persistent=False)  # (P,)
        self.apply(self._init_weights)
        # GPT-2 §2.3: residual projections scaled by 1/sqrt(number of residual layers), per stack; or zero.
        for stack, layers in ((self.global_model, c.n_layer), (self.local_model, c.local_n_layer)):
            for name, param in stack.named_parameters():
                if name.endswith("c_proj.weight"):
                    init_proj(param, 0.02 / math.sqrt(2 * max(layers, 1)), zero=c.zero_init_proj)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # ---- pieces --------------------------------------------------------------------------------
    @property
    def prefix_len(self) -> int:
        """Global positions before patch 0's embedding; the last one's output predicts patch 0.
        Here the class/start token alone; subclasses (text2image) put a caption in front of it."""
        return 1

    @property
    def max_len(self) -> int:
        return self.config.num_patches * self.config.patch_tokens

    def null_condition(self, batch: int, device: torch.device | str | None = None) -> Tensor | None:
        """(B,) the "no condition" id `num_classes` (the start token an unconditional row begins with);
        None for an unconditional model, which takes no condition (and so no guidance)."""
        k = self.config.num_classes
        return check_class_ids(None, k, batch, device or self.global_model.cls_emb.weight.device) if k else None

    def class_ids(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Validated class ids (B,); None -> the "no condition" id `num_classes`."""
        return check_class_ids(cond, self.config.num_classes, batch, device)

    def _prefix(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """The global inputs in front of the patches (B, prefix_len, C): here the class/start embedding."""
        return self._start(cond, batch, device)

    def _start(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        ids = self.class_ids(cond, batch, device)
        c = self.config
        if self.training and c.cond_dropout > 0 and c.num_classes > 0:
            ids = torch.where(torch.rand(batch, device=device) < c.cond_dropout, c.num_classes, ids)
        return self.global_model.cls_emb(ids)[:, None]  # (B, 1, C)

    def _embed_patches(self, patches: Tensor) -> Tensor:
        """(B, n, P) token ids -> (B, n, C): the sum over slots of that slot's value embedding."""
        return self.global_model.patch_emb(patches + self.slot_offset).sum(dim=2)

    def _global(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Global inputs (B, n, C) at positions offset .. offset + n − 1 -> outputs h (B, n, C)."""
        g = self.global_model
        offset = cache.pos if cache is not None else 0
        x = x + g.wpe.weight[offset:offset + x.shape[1]]  # rows offset .. offset+n of the table: no index tensor
        if self.config.dropout > 0:  # the no-op module call costs per decoded token
            x = g.drop(x)
        for block in g.h:
            x = block(x, cache=cache)
        if cache is not None:
            cache.advance(x.shape[1])
        return g.ln_f(x)

    def _local(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Local inputs (B', m, L) -> logits (B', m, V)."""
        lm = self.local_model
        if self.config.dropout > 0:
            x = lm.drop(x)
        for block in lm.h:
            x = block(x, cache=cache)
        if cache is not None:
            cache.advance(x.shape[1])
        return softcap(lm.lm_head(lm.ln_f(x)), self.config.logit_softcap)

    def _slices(self, h: Tensor) -> Tensor:
        """Global outputs (B, n, C) -> per-slot local inputs (B, n, P, L)."""
        c = self.config
        return self.local_model.to_local(h).view(*h.shape[:2], c.patch_tokens, c.local_n_embd)

    def _check_tokens(self, idx: Tensor) -> None:
        if idx.dim() != 2 or torch.is_floating_point(idx):
            raise ValueError(f"expected integer token ids (B, T), got {idx.dtype} {tuple(idx.shape)}")
        if idx.shape[1] > self.max_len:
            raise ValueError(f"{idx.shape[1]} tokens exceed the image's {self.max_len} "
                             f"({self.config.num_patches} patches of {self.config.patch_tokens})")
        if idx.numel() and not torch.compiler.is_exporting() and (
                int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")

    # ---- training ------------------------------------------------------------------------------
    def forward(self, idx: Tensor, *, cond: Tensor | None = None, cache: None = None) -> Tensor:
        """idx (B, t), 1 <= t <= T -> logits (B, t, V); logits[:, i] predicts idx[:, i] from idx[:, :i]."""
        if cache is not None:
            raise ValueError("ImageGPT.forward does not take a cache; decode with prefill / decode_step")
        return self._image_forward(idx, cond)[0]

    def _image_forward(self, idx: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """idx (B, t) -> (image logits (B, t, V), global outputs at the prefix positions before the
        start token (B, prefix_len − 1, C), which subclasses with a caption prefix read)."""
        self._check_tokens(idx)
        b, t = idx.shape
        if t == 0:
            raise ValueError("forward needs at least one token; prefill handles empty prompts")
        p, m = self.config.patch_tokens, self.prefix_len
        n = (t + p - 1) // p  # patches touched (not -(-t // p): ONNX exports SymInt // as Div, which truncates)
        patches = F.pad(idx, (0, n * p - t)).view(b, n, p)  # (B, n, P); padding only feeds positions >= t
        x = torch.cat([self._prefix(cond, b, idx.device), self._embed_patches(patches[:, :-1])], dim=1)
        h = self._global(x)  # (B, m − 1 + n, C)
        x = self._slices(h[:, m - 1:])  # (B, n, P, L): h_k has seen the prefix and patches < k
        if p > 1:  # slot s also sees sub-pixel s − 1 of its own patch
            x = x + F.pad(self.local_model.wte(patches[:, :, :-1]), (0, 0, 1, 0))
        logits = self._local(x.flatten(0, 1))  # (B·n, P, V)
        return logits.view(b, n * p, -1)[:, :t], h[:, :m - 1]

    # ---- decoding ------------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int | None = None, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> ImageGPTCache:
        if max_len is not None and max_len > self.max_len:
            raise ValueError(f"max_len={max_len} exceeds the image's {self.max_len} tokens")
        param = next(self.parameters())
        return ImageGPTCache(self, batch, device or param.device, dtype or param.dtype)

    def prefill(self, idx: Tensor, *, cond: Tensor | None = None, cache: ImageGPTCache | None = None) -> Tensor:
        """Feed the first n tokens (B, n), n >= 0 (n = 0: nothing but the class); return logits (B, V) of
        token n. Without a cache, this recomputes everything (the reference for cached decoding)."""
        self._check_tokens(idx)
        b, n = idx.shape
        if n >= self.max_len:
            raise ValueError(f"a prompt of {n} tokens is a whole image ({self.max_len} tokens): nothing to predict")
        if cache is None:  # one dummy token at position n: causality keeps it out of logits[:, n]
            return self._image_forward(F.pad(idx, (0, 1)), cond)[0][:, n]
        if cache.pos != 0:
            raise ValueError(f"prefill needs a fresh cache, this one has consumed {cache.pos} tokens")
        p = self.config.patch_tokens
        k, s = divmod(n, p)  # token n is slot s of patch k
        x = torch.cat([self._prefix(cond, b, idx.device), self._embed_patches(idx[:, :k * p].view(b, k, p))], 1)
        cache.slices = self._slices(self._global(x, cache.global_kv)[:, -1:])[:, 0]  # (B, P, L)
        cache.tokens[:, :n] = idx
        cache.pos = n
        x = cache.slices[:, :s + 1]  # slots 0 .. s of patch k
        if s:
            x = x + F.pad(self.local_model.wte(idx[:, k * p:]), (0, 0, 1, 0))
        return self._local(x, cache.local_kv)[:, -1]

    def decode_step(self, idx: Tensor, *, cache: ImageGPTCache, cond: Tensor | None = None) -> Tensor:
        """Feed token `cache.pos` (B, 1); return logits (B, V) of the token after it. `cond` is not read: the
        condition entered the global KV cache at prefill (the prefix every later position attends to)."""
        return self._step(idx, cache, lambda patch: self._slices(self._global(self._embed_patches(patch),
                                                                              cache.global_kv))[:, 0],
                          lambda x: self._local(x, cache.local_kv)[:, -1])

    def decode_step_static(self, idx: Tensor, *, cache: ImageGPTCache, cond: Tensor | None = None,
                           compile: bool = False) -> Tensor:
        """`decode_step` with fixed tensor shapes in its two parts, as `zoo.models.gpt.GPT.decode_step_static`:
        the global step of a completed patch and the local step of a sub-pixel run on static caches
        (`KVCache.make_static`) and, with `compile=True`, through one `torch.compile`d graph each (compiled once
        per batch size and model); picking the patch and the slot by Python position stays eager, between
        them. Results equal `decode_step`'s up to floating-point rounding. Inference only."""
        g, loc = cache.global_kv, cache.local_kv
        g.make_static()
        loc.make_static()
        global_fn, local_fn = _compiled_steps() if compile else (_static_global, _static_local)

        def global_step(patch: Tensor) -> Tensor:
            slices = global_fn(self, patch, g)
            g.advance(1)
            return slices

        def local_step(x: Tensor) -> Tensor:
            logits = local_fn(self, x, loc)
            loc.advance(1)
            return logits
        return self._step(idx, cache, global_step, local_step)

    def _step(self, idx: Tensor, cache: ImageGPTCache, global_step: Any, local_step: Any) -> Tensor:
        """A decode step: global_step(patch (B, 1, P)) -> the next patch's slices (B, P, L), local_step(x (B, 1, L))
        -> logits (B, V), each advancing its own cache."""
        t = cache.pos
        if t + 1 >= self.max_len:
            raise ValueError(f"the image is complete after token {t}: nothing left to predict")
        cache.tokens[:, t] = idx[:, 0]
        cache.pos = t + 1
        p = self.config.patch_tokens
        k, s = divmod(t + 1, p)
        if s == 0:  # patch k − 1 is complete: one global step, then slot 0 of patch k on a fresh local cache
            cache.slices = global_step(cache.tokens[:, (k - 1) * p:k * p].view(-1, 1, p))
            cache.local_kv.restart()
            x = cache.slices[:, :1]
        else:
            x = cache.slices[:, s:s + 1] + self.local_model.wte(idx)
        return local_step(x)


def _static_global(model: ImageGPT, patch: Tensor, cache: KVCache) -> Tensor:
    """`ImageGPT._global` of one completed patch (B, 1, P) on a static cache (not advanced here): the next patch's
    local inputs (B, P, L). A plain function, so that one compiled graph serves every model of the class."""
    g = model.global_model
    x = model._embed_patches(patch) + g.wpe(cache.positions(1))  # (B, 1, C)
    for block in g.h:
        x = block(x, cache=cache)
    return model._slices(g.ln_f(x))[:, 0]


def _static_local(model: ImageGPT, x: Tensor, cache: KVCache) -> Tensor:
    """`ImageGPT._local` of one sub-pixel's input (B, 1, L) on a static cache (not advanced here): logits (B, V)."""
    lm = model.local_model
    for block in lm.h:
        x = block(x, cache=cache)
    return softcap(lm.lm_head(lm.ln_f(x[:, -1])), model.config.logit_softcap)


_COMPILED_STEPS: list = []  # the lazily built torch.compile of (_static_global, _static_local)


def _compiled_steps() -> tuple[Any, Any]:
    if not _COMPILED_STEPS:  # dynamic=False: fixed shapes by construction (see zoo.models.gpt._compiled_static_step)
        _COMPILED_STEPS.extend(torch.compile(f, dynamic=False) for f in (_static_global, _static_local))
    return _COMPILED_STEPS[0], _COMPILED_STEPS[1]
