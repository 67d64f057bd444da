"""Text2Image: a DALL-E-style decoder — caption tokens, then the image's patches, in one causal stream.

Ramesh et al. 2021 ("Zero-Shot Text-to-Image Generation", section 2.2): one autoregressive
transformer over the concatenation of the caption's tokens and the image's tokens. Here the image
part is `ImageGPT`'s MEGABYTE patch machinery unchanged (zoo/models/image_gpt.py): this class only
puts a caption in front of the start token of the global transformer, so the global stream is

    position:  0 .. L−1             L              L+1 .. L+N−1
    input:     caption tokens       start-of-image patch 0 .. N−2 embeddings
    output:    predicts caption i+1 predicts patch 0 (through the local model), then patches 1 .. N−1

The caption is `L = text_len` text ids padded on the right with `pad_id = text_vocab_size`, the
"no caption" token: an empty caption is all padding, which is exactly the unconditional prompt that
caption dropout (`cond_dropout`, default 15%) trains and classifier-free guidance uses for its
unconditional rows (`null_caption`, the model's `null_condition`). Caption attention is causal like
everything else (the DALL-E "row/column" sparse masks are not needed at these sizes).

Training output (`forward`): joint logits (B, L−1+t, V+V_text) over one vocabulary, image levels
0..V−1 then caption ids offset by V; the first L−1 rows predict caption tokens 1..L−1 (text head,
image entries −inf), the last t rows the image tokens (local head, text entries −inf). A −inf entry
has probability exactly 0, so the cross-entropy of a row equals that of its own head. Targets in
this layout come from `TextImageCodec.targets`.

Loss weighting: DALL-E weights the text and image cross-entropies 1:7 (`text_loss_weight`,
`image_loss_weight`). `GenerativeModule` takes one mean over all targets, so the weights act on the
gradients (`_ScaleGrad`): each part's logits get their gradient scaled so that the total gradient is
that of w_t·mean(text CE) + w_i·mean(image CE) with w_t + w_i = 1; the logged loss stays the plain
mean over all tokens. Rows whose caption was dropped get no text gradient (their caption input is
padding; predicting the caption from nothing is not a useful signal).

Sampling: `prefill` / `decode_step` are ImageGPT's and return image logits (B, V) only: `zoo.sampling`
generates the image given `cond` = captions (B, L) and, for guidance, the model's `null_condition`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.core.layers import softcap
from zoo.models.base import register
from zoo.models.image_gpt import ImageGPT, ImageGPTConfig


@dataclass(kw_only=True)
class Text2ImageConfig(ImageGPTConfig):
    # Geometry left null in conf/model/text2image.yaml is taken from TextImageCodec's attributes.
    text_vocab_size: int  # caption tokens 0..text_vocab_size−1; id text_vocab_size is padding / no caption
    text_len: int  # L: caption positions in front of the image
    cond_dropout: float = 0.15  # caption dropout: share of training rows whose caption becomes empty
    text_loss_weight: float = 1.0  # DALL-E: 1
    image_loss_weight: float = 7.0  # DALL-E: 7

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("text_vocab_size", "text_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Text2ImageConfig.{name} must be a positive integer, got {value!r}")
        if self.num_classes != 0:
            raise ValueError(f"Text2ImageConfig.num_classes must be 0 (the caption is the condition), "
                             f"got {self.num_classes}")
        for name in ("text_loss_weight", "image_loss_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Text2ImageConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.image_loss_weight == 0:
            raise ValueError("Text2ImageConfig.image_loss_weight must be > 0 (the image is what is generated)")

    @classmethod
    def for_codec(cls, codec: Any, **fields: Any) -> Text2ImageConfig:
        """A config whose geometry (image levels, patches, text vocabulary and length) is the codec's."""
        keys = ("vocab_size", "num_patches", "patch_tokens", "text_vocab_size", "text_len")
        return cls(**({k: getattr(codec, k) for k in keys} | fields))


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient multiplied by `scale` (a tensor broadcastable to x) backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


@register("text2image", Text2ImageConfig)
class Text2Image(ImageGPT):
    config: Text2ImageConfig

    def __init__(self, config: Text2ImageConfig) -> None:
        super().__init__(config)  # the patch model; its position table already covers the caption
        c = config
        self.global_model["wte_text"] = nn.Embedding(c.text_vocab_size + 1, c.n_embd)  # last row: padding
        self.text_head = nn.Linear(c.n_embd, c.text_vocab_size, bias=False)
        for module in (self.global_model["wte_text"], self.text_head):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def prefix_len(self) -> int:
        return self.config.text_len + 1  # the caption, then the start-of-image token

    @property
    def pad_id(self) -> int:
        return self.config.text_vocab_size

    def null_caption(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        """(B, L) all padding: the empty caption, i.e. the unconditional prompt (guidance's unconditional rows)."""
        device = device or next(self.parameters()).device
        return torch.full((batch, self.config.text_len), self.pad_id, dtype=torch.long, device=device)

    def null_condition(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        """The model's "no condition": the empty caption (`null_caption`)."""
        return self.null_caption(batch, device)

    def captions(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Validated caption ids (B, L); None -> the null caption."""
        if cond is None:
            return self.null_caption(batch, device)
        c = self.config
        if cond.shape != (batch, c.text_len) or torch.is_floating_point(cond):
            raise ValueError(f"cond must be integer caption ids of shape ({batch}, {c.text_len}) padded with "
                             f"{self.pad_id}, got {cond.dtype} {tuple(cond.shape)}")
        if cond.numel() and not torch.compiler.is_exporting() and (
                int(cond.min()) < 0 or int(cond.max()) > self.pad_id):
            raise ValueError(f"caption ids must lie in [0, {c.text_vocab_size}] ({self.pad_id} = padding), got "
                             f"range [{int(cond.min())}, {int(cond.max())}]")
        return cond.long()

    def _prefix(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        text = self.global_model.wte_text(self.captions(cond, batch, device))  # (B, L, C)
        return torch.cat([text, self._start(None, batch, device)], dim=1)  # (B, L + 1, C)

    # ---- training ------------------------------------------------------------------------------
    def forward(self, idx: Tensor, *, cond: Tensor | None = None, cache: None = None) -> Tensor:
        """idx (B, t) image tokens, cond (B, L) captions or None -> joint logits (B, L−1+t, V+V_text)
        (layout in the module docstring)."""
        if cache is not None:
            raise ValueError("Text2Image.forward does not take a cache; decode with prefill / decode_step")
        c = self.config
        b, t = idx.shape[0], idx.shape[-1]
        caps = self.captions(cond, b, idx.device)
        dropped = torch.zeros(b, dtype=torch.bool, device=idx.device)
        if self.training and c.cond_dropout > 0:
            dropped = torch.rand(b, device=idx.device) < c.cond_dropout
        image, h_text = self._image_forward(idx, torch.where(dropped[:, None], self.pad_id, caps))
        text = softcap(self.text_head(h_text[:, :-1]), c.logit_softcap)  # (B, L − 1, V_text): predicts caption i + 1
        if self.training and torch.is_grad_enabled():
            text, image = self._weight_gradients(text, image, caps, dropped)
        v, vt = c.vocab_size, c.text_vocab_size
        neg = float("-inf")
        return torch.cat([
            torch.cat([text.new_full((b, text.shape[1], v), neg), text], dim=-1),
            torch.cat([image, image.new_full((b, t, vt), neg)], dim=-1),
        ], dim=1)

    def _weight_gradients(self, text: Tensor, image: Tensor, caps: Tensor, dropped: Tensor) -> tuple[Tensor, Tensor]:
        """Scale each part's gradient so that mean-over-all-targets CE trains w_t·text + w_i·image means."""
        c = self.config
        valid = caps[:, 1:] != self.pad_id  # (B, L − 1): the caption targets TextImageCodec.targets keeps
        keep = valid & ~dropped[:, None]
        n_all = int(valid.sum()) + image.shape[0] * image.shape[1]
        n_text, n_image = int(keep.sum()), image.shape[0] * image.shape[1]
        w_text = c.text_loss_weight / (c.text_loss_weight + c.image_loss_weight) if n_text else 0.0
        s_text = torch.where(keep, w_text * n_all / max(n_text, 1), 0.0)[..., None]  # (B, L − 1, 1)
        s_image = torch.tensor((1 - w_text) * n_all / n_image, device=image.device)
        return _ScaleGrad.apply(text, s_text), _ScaleGrad.apply(image, s_image)

    def image_logits(self, idx: Tensor, cond: Tensor | None = None) -> Tensor:
        """Image logits only (B, t, V) for image tokens idx (B, t) given captions (no dropout): for bits/dim."""
        return self._image_forward(idx, self.captions(cond, idx.shape[0], idx.device))[0]


def text_positions(config: Text2ImageConfig) -> int:
    """Rows of the joint logits that predict caption tokens (L − 1)."""
    return config.text_len - 1


def image_bits(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed negative log2-likelihood (per row, (B,)) of image tokens (B, T) under image logits (B, T, V)."""
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")
    return nll.sum(1) / math.log(2)
