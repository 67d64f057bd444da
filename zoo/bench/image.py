"""Image sampling with vs without the KV cache: zoo's ImageGPT, whole images, batch 1 and 16.

The model is the shipped `image-gpt-digits` (8x8 digits, 2x2 patches: 16 patches of 4 tokens, 0.47 M
parameters) through `zoo.load`; where it cannot be loaded (or in tiny mode), a random ImageGPT of the
same geometry and size. One call samples whole images with `zoo.members.image.sample_tokens`
(temperature 1, fixed seed, class-conditional), `use_cache=True` vs `use_cache=False` (recomputing the
prefix at every token); the gate: greedy, both give the same tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

import zoo
from zoo.bench.common import Row, Sizes, interleaved, median, ratio_stats, skipped
from zoo.codecs.image import ImagePatchCodec
from zoo.models.image_gpt import ImageGPT, ImageGPTConfig
from zoo.sampling import sample_tokens

log = logging.getLogger(__name__)


def load_model(s: Sizes, device: torch.device) -> tuple[Any, Any, str]:
    """(model, codec, description); falls back to a random model of the digits geometry."""
    why = "tiny mode"
    if s.image_model != "random":
        try:
            m = zoo.load(s.image_model, device=device)
            return m.model.eval(), m.codec, f"{s.image_model} (shipped weights)"
        except Exception as e:  # noqa: BLE001 - any failure: fall back, and say why
            why = f"zoo.load({s.image_model!r}) failed: {type(e).__name__}: {e}"
            log.warning("%s; using a random model of the same size", why)
    codec = ImagePatchCodec(height=8, width=8, levels=17, patch_size=2, num_classes=10)
    small = s.mode == "tiny"
    cfg = ImageGPTConfig.for_codec(codec, n_layer=1 if small else 3, n_head=2 if small else 4,
                                   n_embd=16 if small else 96, local_n_layer=1 if small else 2, local_n_head=2,
                                   local_n_embd=16 if small else 64)
    torch.manual_seed(0)
    return ImageGPT(cfg).to(device).eval(), codec, f"random ImageGPT, digits geometry ({why})"


def run(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    model, codec, desc = load_model(s, device)
    rows: list[Row] = []
    context: dict[str, Any] = {"model": desc, "tokens_per_image": codec.tokens_per_image,
                               "params": sum(p.numel() for p in model.parameters()), "gates": {}}
    for b in s.image_batches:
        section = f"image batch {b}"
        labels = torch.arange(b) % max(codec.num_classes, 1) if codec.num_classes else None

        def sample(use_cache: bool, labels: Any = labels, b: int = b, temperature: float = 1.0) -> torch.Tensor:
            return sample_tokens(model, codec, labels, num=b, seed=0, use_cache=use_cache, temperature=temperature)

        # gate greedy: sampled draws could flip on last-bit differences between the two paths
        a, c = sample(True, temperature=0.0), sample(False, temperature=0.0)
        if not torch.equal(a, c):
            rows.append(skipped(section, "KV cache vs recompute", "correctness gate failed: cached and recomputed "
                                "greedy sampling gave different tokens", status="gate failed"))
            continue
        context["gates"][section] = {"same_tokens_cached_and_recomputed": True}
        times = interleaved({"cache": lambda: sample(True), "no cache": lambda: sample(False)}, s.rounds, device)
        tokens = b * codec.tokens_per_image
        rows.append(Row(section, "KV cache vs recompute", "cached / recomputed tokens/s",
                        ratio_stats(times["no cache"], times["cache"]),
                        {"cached tokens/s": tokens / median(times["cache"]),
                         "recomputed tokens/s": tokens / median(times["no cache"])}))
        print(f"  {section}: cache {tokens / median(times['cache']):.0f} tok/s, "
              f"no cache {tokens / median(times['no cache']):.0f} tok/s", flush=True)
    return rows, context
