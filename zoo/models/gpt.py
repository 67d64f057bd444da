"""GPT: a causal decoder-only language model in the GPT-2 parameter layout.

Radford et al. 2019, "Language Models are Unsupervised Multitask Learners". Module names mirror
Hugging Face's `GPT2LMHeadModel` (`transformer.wte`, `transformer.h.N.attn.c_attn`, ...), so GPT-2
weights import key for key, only transposing HF's Conv1D matrices: the state-dict adapter lives beside
this file (`zoo.models.gpt2_weights`), not in the class.

Training convention: `logits[:, t]` predicts `idx[:, t + 1]` (the datamodule shifts the targets).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.core.cache import KVCache
from zoo.core.layers import Activation, Block, NormKind, make_norm, softcap
from zoo.core.positions import (
    AlibiPositionBias,
    PositionBias,
    RelativePositionBias,
    RotaryEmbedding,
    SumPositionBias,
)
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

Position = Literal["learned", "rotary", "none"]  # where absolute positions enter
AttentionBiasKind = Literal["none", "relative", "alibi", "relative+alibi"]  # the additive bias on the logits


@dataclass(kw_only=True)
class GPTConfig:
    """Attention is three settings, one meaning each (docs/configuration.md):
    - `position`: where absolute positions enter: a learned `wpe` table, rotary q/k (RoFormer), or none.
    - `bias`: the additive position bias on the attention logits: "relative", the Music Transformer's learned
      relative attention (`zoo.core.positions.RelativePositionBias`, L = `max_relative_position` distances,
      tables `transformer.h.N.attn.er`); "alibi" (Press et al. 2022: a fixed per-head linear bias on the
      distance, nothing learned, so the model reads sequences longer than it was trained on); both added
      ("relative+alibi"); or "none".
    - `kernel`: how attention is computed, never what: "math" (the reference), "sdpa", "chunked" (by query
      chunks, a fused block path on CPU for the relative bias), or "auto", the best of them for the bias
      (`chunked` for relative, else `sdpa`). Every kernel computes every bias.
    Configs saved with `kernel: relative`, `position: alibi` or `bias: true/false` (now `layer_bias`) load through
    `zoo.models.base.upgrade_config`.

    `n_kv_head` (None = `n_head`) is the number of key/value heads: fewer is grouped-query attention (1:
    multi-query), with a KV cache n_head / n_kv_head times smaller. `window` (None = full attention) is
    sliding-window attention: each token sees itself and the window - 1 before it; decoding then keeps a
    rolling cache of 2 · window positions and generates past `block_size` without end, which learned
    positions cannot (their table ends at block_size).

    `num_classes` > 0 makes the model class-conditional (the style-conditioned Music Transformer): a learned
    embedding of the class id (`transformer.cls`, num_classes + 1 rows; the last is "no condition") is added
    to every token's embedding, so the condition reaches every position however the sequence is cropped or
    slid (a prefix token would fall out of a sliding window). During training a `cond_dropout` fraction of
    rows get "no condition", which is what classifier-free guidance needs at sampling time.

    Switches from the modded-nanogpt speedrun lineage, all off by default (a config without them builds and
    computes exactly the model it did before): `qk_norm` RMS-normalises each head's queries and keys
    (`zoo.core.attention`), `activation="relu2"` is the ReLU² MLP, `zero_init_proj` initialises every block's
    output projections (`attn.c_proj`, `mlp.c_proj`) to zero so that each block starts as the identity, and
    `logit_softcap` bounds the output logits to (-cap, cap) by cap · tanh(logits / cap).

    `start_token` gives the model its own start-of-sequence token, as OpenAI's ImageGPT (Chen et al. 2020) has:
    `wte` gains one row past the vocabulary (id `vocab_size`, never predicted: `lm_head` keeps `vocab_size`
    rows, so the head cannot be tied) and the model puts that token in front of every sequence itself. The
    training convention is then the image models' (zoo.models.image_gpt): `logits[:, t]` predicts `idx[:, t]`
    from the start token and idx[:, :t], the datamodule gives idx == targets, and an empty prompt can be decoded.
    """

    vocab_size: int = 256  # training sets this from the data's codec
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    layer_bias: bool = True  # bias vectors in every Linear (but lm_head) and LayerNorm, as GPT-2
    norm: NormKind = "layernorm"
    activation: Activation = "gelu"
    position: Position = "learned"
    bias: AttentionBiasKind = "none"
    kernel: KernelName = "auto"
    max_relative_position: int | None = None  # bias="relative" only; None = block_size
    tie_weights: bool = True
    n_kv_head: int | None = None  # key/value heads; None = n_head (multi-head), 1 = multi-query
    window: int | None = None  # sliding-window attention span in positions; None = full causal attention
    qk_norm: bool = False  # RMS-normalise each head's q and k (learnable gains q_norm, k_norm)
    zero_init_proj: bool = False  # attn.c_proj and mlp.c_proj start at zero: every block starts as the identity
    logit_softcap: float | None = None  # cap · tanh(logits / cap); None = raw logits
    num_classes: int | None = None  # class/style conditions; None or 0 = unconditional
    cond_dropout: float = 0.1  # with num_classes: fraction of training rows given "no condition"
    start_token: bool = False  # the model begins every sequence with its own token (wte row vocab_size), as ImageGPT

    def __post_init__(self) -> None:
        refuse_old_spellings(self)
        validate_choices(self)
        if self.num_classes is None:
            self.num_classes = 0
        if self.num_classes < 0:
            raise ValueError(f"{type(self).__name__}.num_classes must be >= 0 (0 = unconditional), "
                             f"got {self.num_classes}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"{type(self).__name__}.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        require_positive(self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.position == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"position='rotary' needs an even head dim, got {self.n_embd // self.n_head}")
        if "relative" in self.bias:
            if self.max_relative_position is None:
                self.max_relative_position = self.block_size
            require_positive(self, "max_relative_position")
        elif self.max_relative_position is not None:
            raise ValueError("max_relative_position is only used with bias='relative' or 'relative+alibi', "
                             f"got bias={self.bias!r}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        require_positive(self, "n_kv_head")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"{type(self).__name__}.n_kv_head={self.n_kv_head} must divide n_head={self.n_head}; "
                             f"accepted: {[d for d in range(1, self.n_head + 1) if self.n_head % d == 0]}")
        if self.window is not None:
            require_positive(self, "window")
            if self.position == "learned":
                raise ValueError(f"{type(self).__name__}.window={self.window} with position='learned': sliding-window "
                                 "decoding goes past block_size, where a learned position table ends; use position="
                                 "'rotary', or 'none' with a bias ('relative', 'alibi'): they depend on distances only")
        check_softcap(self)
        if self.start_token and self.tie_weights:
            raise ValueError(f"{type(self).__name__}.start_token=True gives wte one row more than lm_head (the start "
                             "token is read, never predicted), so the head cannot be tied: set tie_weights=False")


def position_bias(c: GPTConfig) -> PositionBias | None:
    """The position-bias provider `c.bias` stands for, shared by every layer (what it learns is registered on
    each layer's attention). With "relative+alibi" the relative bias comes first: it keeps its fused path."""
    if c.bias == "none":
        return None
    parts = [RelativePositionBias(c.max_relative_position) if name == "relative" else AlibiPositionBias()
             for name in c.bias.split("+")]
    return parts[0] if len(parts) == 1 else SumPositionBias(*parts)


@register("gpt", GPTConfig)
class GPT(GenerativeModel):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        bias = position_bias(c)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size + c.start_token, c.n_embd),  # + the start token's row
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(
                Block(c.n_embd, c.n_head, layer_idx=i, kernel=c.kernel, position_bias=bias, dropout=c.dropout,
                      bias=c.layer_bias, norm=c.norm, activation=c.activation, n_kv_head=c.n_kv_head, window=c.window,
                      qk_norm=c.qk_norm)
                for i in range(c.n_layer)
            ),
            ln_f=make_norm(c.norm, c.n_embd, c.layer_bias),
        ))
        if c.position == "learned":
            self.transformer["wpe"] = nn.Embedding(c.block_size, c.n_embd)
        if c.num_classes:
            self.transformer["cls"] = nn.Embedding(c.num_classes + 1, c.n_embd)  # last row: no condition
        self.rotary = RotaryEmbedding(c.n_embd // c.n_head, c.block_size) if c.position == "rotary" else None
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 §2.3: scale residual projections by 1/sqrt(number of residual layers); or zero (zero_init_proj).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                init_proj(p, 0.02 / (2 * c.n_layer) ** 0.5, zero=c.zero_init_proj)
        if c.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, *, cond: Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> Tensor:
        """idx (B, T) -> logits (B, T, V), or (B, 1, V) with `last_only`.

        `cond`: class ids (B,) of a conditional model (None = no condition); must be None for an unconditional
        one. It is added at every position, so each call needs it: prefill and every decode step alike.
        With `start_token` the model reads its start token, then idx[:, :-1] (logits[:, t] predicts idx[:, t]);
        on an empty cache it reads the start token, then all of idx (T + 1 logits: the last predicts the next
        token), so that decoding can begin from nothing.
        """
        if self.config.start_token and (cache is None or cache.pos == 0):
            idx = self._behind_start(idx, whole=cache is not None)
        b, t = idx.shape
        ids = self.class_ids(cond, b, idx.device)
        if t == 0:
            raise ValueError("GPT needs at least one token per row (an empty prompt has nothing to condition "
                             "on; start it with a token such as the codec's end-of-text id)")
        offset = cache.pos if cache is not None else 0
        if self.config.window is None and offset + t > self.config.block_size:
            raise ValueError(f"sequence of {offset + t} tokens exceeds block_size={self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if ids is not None:
            if self.training and self.config.cond_dropout > 0:
                drop = torch.rand(b, device=idx.device) < self.config.cond_dropout
                ids = torch.where(drop, self.config.num_classes, ids)
            x = x + self.transformer.cls(ids).unsqueeze(1)
        if self.config.position == "learned":  # rows offset .. offset+T of the table: no index tensor to build
            x = x + self.transformer.wpe.weight[offset:offset + t]  # (T, C) broadcast over B
        if self.config.dropout > 0:
            x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, cache=cache, rotary=self.rotary)
        if cache is not None:
            cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return softcap(self.lm_head(self.transformer.ln_f(x)), self.config.logit_softcap)  # (B, T, V)

    def _behind_start(self, idx: Tensor, *, whole: bool) -> Tensor:
        """(B, T) -> the start token, then idx (whole) or idx without its last token: (B, T + 1) or (B, T)."""
        start = torch.full((idx.shape[0], 1), self.config.vocab_size, dtype=idx.dtype, device=idx.device)
        return torch.cat([start, idx if whole else idx[:, :-1]], dim=1)

    def prefill(self, idx: Tensor, *, cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Feed the prompt (B, T); return next-token logits (B, V). Without a cache, a `start_token` model reads
        the whole prompt behind its start token (forward would leave the last token out)."""
        if self.config.start_token and cache is None:
            cache = self.new_cache(idx.shape[0], idx.shape[1] + 1)
        return self(idx, cond=cond, cache=cache, last_only=True)[:, -1]

    def null_condition(self, batch: int, device: torch.device | str | None = None) -> Tensor | None:
        """(B,) the "no condition" id `num_classes`; None for an unconditional model."""
        k = self.config.num_classes
        return check_class_ids(None, k, batch, device or self.transformer.wte.weight.device) if k else None

    def class_ids(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """Validated class ids (B,) of a conditional model (None -> the "no condition" id `num_classes`);
        None for an unconditional model, which refuses a `cond`."""
        k = self.config.num_classes
        if not k:
            if cond is not None:
                raise ValueError(f"{type(self).__name__} is unconditional (num_classes=0); got a `cond` tensor")
            return None
        return check_class_ids(cond, k, batch, device)

    @property
    def max_len(self) -> int:
        """block_size; unbounded (sys.maxsize) with a sliding window: the rolling cache keeps memory constant."""
        return self.config.block_size if self.config.window is None else sys.maxsize

    def new_cache(self, batch: int, max_len: int | None = None, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """A KV cache of n_kv_head heads; with a window, a rolling one of 2 · window positions when max_len is
        longer (`KVCache`)."""
        c, p = self.config, next(self.parameters())
        return KVCache(c.n_layer, batch, c.n_kv_head, max_len or c.block_size, c.n_embd // c.n_head,
                       device=device or p.device, dtype=dtype or p.dtype, window=c.window)

    def decode_step_static(self, idx: Tensor, *, cache: KVCache, cond: Tensor | None = None,
                           compile: bool = False) -> Tensor:
        """`decode_step` with the same tensor shapes at every position; returns next-token logits (B, V).

        idx (B, T) holds the new tokens (T = 1 when decoding). The cache is switched to static mode
        (`KVCache.make_static`): attention runs over the whole (B, H, max_len, D) buffers with the unwritten
        keys masked and the position is a tensor, so with `compile=True` the step goes through one
        `torch.compile`d graph that is compiled once per (batch, cache length, dtype, model structure) and
        reused for every position and every later call with the same shapes. Inference only (no dropout).
        Results equal `decode_step`'s up to floating-point rounding (masked keys add exact zeros; the
        compiled kernels may sum in another order).
        """
        t = idx.shape[1]
        end = cache.pos + t
        if self.config.window is not None:
            raise ValueError(f"compile=True (the fixed-shape decode step) does not support model.window="
                             f"{self.config.window} yet: decode with compile=False (the rolling KV cache)")
        if end > min(self.config.block_size, cache.max_len):
            raise ValueError(f"sequence of {end} tokens exceeds block_size={self.config.block_size} or the "
                             f"cache's {cache.max_len} positions")
        if self.config.start_token and cache.pos == 0:
            raise ValueError("a start_token GPT reads its start token at prefill: call prefill before the first "
                             "decode_step_static")
        cache.make_static()
        ids = self.class_ids(cond, idx.shape[0], idx.device)
        logits = (_compiled_static_step() if compile else _static_step)(self, idx, cache, ids)
        cache.advance(t)
        return logits


def _static_step(model: GPT, idx: Tensor, cache: KVCache, ids: Tensor | None) -> Tensor:
    """GPT.forward for T new tokens on a static cache (`GPT.decode_step_static`), logits of the last (B, V).
    ids: the validated class ids (B,) of a conditional model, else None.

    A plain function of (model, idx, cache), not a method, so that one compiled graph serves every GPT
    of the same structure and no compiled object holds a model alive.
    """
    x = model.transformer.wte(idx)  # (B, T, C)
    if ids is not None:
        x = x + model.transformer.cls(ids).unsqueeze(1)
    if model.config.position == "learned":
        x = x + model.transformer.wpe(cache.positions(idx.shape[1]))  # (T, C) broadcast over B
    for block in model.transformer.h:
        x = block(x, cache=cache, rotary=model.rotary)
    return softcap(model.lm_head(model.transformer.ln_f(x[:, -1])), model.config.logit_softcap)  # (B, V)


_COMPILED_STEP: list = []  # the lazily built torch.compile of _static_step (compiling is not free)


def _compiled_static_step() -> Callable[[GPT, Tensor, KVCache, Tensor | None], Tensor]:
    if not _COMPILED_STEP:
        # dynamic=False: every step has the same shapes by construction; a new batch size or cache length
        # compiles a new specialised graph rather than a slower shape-generic one. The graphs are also
        # specialised to the model's weights (laid out in place by zoo.core.layers.lay_out_for_decoding, or the
        # (in, out) copies linear_weights_in_out keeps for a training model), so each model compiles once; past
        # torch._dynamo's recompile_limit (8 per process) the step runs uncompiled with a warning (fullgraph=True
        # would make that a hard error).
        _COMPILED_STEP.append(torch.compile(_static_step, dynamic=False))
    return _COMPILED_STEP[0]
