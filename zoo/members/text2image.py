"""Sampling images from captions: the training callback's caption -> image grids and zoo-sample's command.

`zoo.sampling.sample_images` is the one call: captions in, image tokens (B, T) out, through `zoo.sampling.generate`
with the captions as `cond` and, when `guidance_scale` is set, the empty caption as `uncond`
(classifier-free guidance: logits = u + s·(c − u), one doubled batch, one KV cache).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.codecs.text_image import TextImageCodec
from zoo.members.base import SampleSet, register_renderer
from zoo.members.image_io import save_grid_png
from zoo.models.base import GenerativeModel
from zoo.sampling import SamplingConfig, sample_images

log = logging.getLogger(__name__)

SAMPLES_PER_CAPTION = 8  # columns of the training-time grid
CAPTIONS_IN_GRID = 6  # rows of that grid: test-split (held-out) captions first
PADDING = 2


def caption_grid(model: GenerativeModel, codec: TextImageCodec, captions: Sequence[str], per_caption: int,
                 path: Path, cfg: SamplingConfig | None = None, **overrides: Any) -> Path:
    """A PNG grid: one row per caption, `per_caption` samples each; captions listed in `path`.txt."""
    repeated = [c for c in captions for _ in range(per_caption)]
    tokens = sample_images(model, codec, repeated, cfg, **overrides)
    out = save_grid_png(codec.decode_batch(tokens.cpu()), path, nrow=per_caption, padding=PADDING)
    Path(out).with_suffix(".txt").write_text(caption_rows(captions))
    return out


def caption_rows(captions: Sequence[str]) -> str:
    """The caption list written next to a grid: `row 0: 'a 7'` lines."""
    return "".join(f"row {i}: {c!r}\n" for i, c in enumerate(captions))


def render(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path, step: int) -> Any:
    """The training callback's renderer: held-out (test) captions first, then validation captions.

    Writes the grid `step_<step>.png` (one row per caption, listed in `step_<step>.txt`) and one strip
    per caption, `step_<step>/caption_<row>.png`, returned in `SampleSet.labelled` with the caption as
    its caption (what W&B shows under each image)."""
    captions: list[str] = []
    for split in ("test", "val"):
        for c in getattr(datamodule, "splits", {}).get(split, (None, []))[1]:
            if c not in captions and len(captions) < CAPTIONS_IN_GRID:
                captions.append(c)
    captions = captions or [""]
    codec = module.codec
    tokens = sample_images(module.model, codec, [c for c in captions for _ in range(SAMPLES_PER_CAPTION)], cfg)
    images = codec.decode_batch(tokens.cpu())  # (captions·SAMPLES_PER_CAPTION, C, H, W), caption-major
    path = save_grid_png(images, out_dir / f"step_{step:06d}.png", nrow=SAMPLES_PER_CAPTION, padding=PADDING)
    path.with_suffix(".txt").write_text(caption_rows(captions))
    out = SampleSet(images=[path], texts=[(c, f" -> row {i} of {path.name}") for i, c in enumerate(captions)])
    out.captions[str(path)] = f"step {step}: " + caption_rows(captions).strip().replace("\n", "; ")
    for i, c in enumerate(captions):
        strip = save_grid_png(images[i * SAMPLES_PER_CAPTION:(i + 1) * SAMPLES_PER_CAPTION],
                              out_dir / f"step_{step:06d}" / f"caption_{i}.png", nrow=SAMPLES_PER_CAPTION,
                              padding=PADDING)
        out.labelled.append((strip, c or "(empty caption: unconditional)"))
    return out


def sample_command(model: GenerativeModel, codec: TextImageCodec, opts: dict[str, Any]) -> None:
    """zoo-sample for text-to-image: prompt= or prompts= captions (rows) × num_samples (columns) -> PNG.

    Keys used: prompt, prompts, num_samples, guidance (null or 1 = none), temperature, top_k, top_p,
    min_p, seed, out (folder, default ./samples). No prompt = the empty caption (unconditional).
    """
    for key in ("labels", "primer", "stop"):
        if opts.get(key) not in (None, [], ""):
            raise SystemExit(f"zoo-sample: `{key}` does not apply to a text-to-image model (use prompt=)")
    captions = list(opts.get("prompts") or [])
    if opts.get("prompt") is not None:
        captions.append(str(opts["prompt"]))
    captions = captions or [""]
    guidance = opts.get("guidance")
    try:
        for c in captions:
            codec.encode_caption(c)  # unknown characters / too long (on_long=error) fail here
        cfg = SamplingConfig(temperature=opts.get("temperature", 1.0), top_k=opts.get("top_k"),
                             top_p=opts.get("top_p"), min_p=opts.get("min_p"), seed=opts.get("seed"),
                             guidance_scale=None if guidance is None else float(guidance))
    except ValueError as e:
        raise SystemExit(f"zoo-sample: {e}") from e
    n = int(opts.get("num_samples") or 1)
    path = caption_grid(model, codec, captions, n, Path(opts.get("out") or "samples") / "text2image.png", cfg)
    print(f"wrote {path}: {len(captions)} caption(s) × {n} sample(s): {captions}")


register_renderer(("text_image",), render)
