"""Whole images from class ids or captions: the conditional calls members, the hub and `zoo.eval` share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text_image import TextImageCodec
from zoo.models.base import GenerativeModel
from zoo.sampling.config import SamplingConfig
from zoo.sampling.loop import generate


# ---- whole images from classes or captions (members, hub and eval share these) ---------------------------
@torch.no_grad()
def sample_tokens(
    model: GenerativeModel,
    codec: ImagePatchCodec,
    labels: Tensor | Sequence[int] | None,
    *,
    num: int | None = None,
    prefix: Tensor | None = None,
    cfg: SamplingConfig | None = None,
    **overrides: Any,
) -> Tensor:
    """Sample whole images as tokens (B, T).

    labels: class ids (B,), checked against the codec (out of range -> ValueError naming the accepted
        ids); None samples `num` images without a condition (a conditional model then uses its
        "no condition" class).
    prefix: image tokens every row starts with, (n,) or (B, n); they are kept and the T − n others
        generated. `codec.prefix_length(rows)` tokens hold the top `rows` pixel rows.
    cfg / overrides: a `SamplingConfig` and field overrides (temperature, top_k, top_p, min_p, seed,
        guidance ...); `max_new_tokens` and `stop_tokens` are set here.
    """
    if labels is not None:
        labels = codec.check_class_ids(labels).reshape(-1)
        b = len(labels)
    elif num is None or num < 1:
        raise ValueError(f"sample_tokens without labels needs num >= 1 images, got num={num!r}")
    else:
        b = num
    device = next(model.parameters()).device
    cfg = replace(cfg or SamplingConfig(), **overrides)
    if prefix is None:
        prefix = torch.zeros(b, 0, dtype=torch.long)
    prefix = torch.as_tensor(prefix, dtype=torch.long)
    prefix = prefix.expand(b, -1) if prefix.dim() == 1 else prefix
    if prefix.shape[0] != b or prefix.shape[1] > codec.tokens_per_image:
        raise ValueError(f"prefix must be (n,) or ({b}, n) with n <= {codec.tokens_per_image}, "
                         f"got {tuple(prefix.shape)}")
    cond = labels.to(device) if labels is not None else None  # None: the model's "no condition"
    new = codec.tokens_per_image - prefix.shape[1]
    cfg = replace(cfg, max_new_tokens=new, stop_tokens=())
    rows = generate(model, prefix, cfg, cond=cond) if new else [[] for _ in range(b)]
    return torch.cat([prefix, torch.tensor(rows, dtype=torch.long).view(b, new)], dim=1)


@torch.no_grad()
def sample_images(model: GenerativeModel, codec: TextImageCodec, captions: Sequence[str],
                  cfg: SamplingConfig | None = None, **overrides: Any) -> Tensor:
    """One image per caption -> tokens (B, T). "" is the unconditional prompt. `cfg` / overrides:
    temperature, top_k, top_p, min_p, repetition_penalty, seed, guidance (None or 1 = plain conditional
    sampling: SamplingConfig normalises 1 to None, so no doubled batch is computed)."""
    if not captions:
        raise ValueError("sample_images needs at least one caption")
    cfg = replace(cfg or SamplingConfig(), **overrides)
    device = next(model.parameters()).device
    cond = codec.caption_ids(captions).to(device)
    cfg = replace(cfg, max_new_tokens=codec.tokens_per_image, stop_tokens=())
    rows = generate(model, [[] for _ in captions], cfg, cond=cond)
    return torch.tensor(rows, dtype=torch.long).view(len(captions), codec.tokens_per_image)

