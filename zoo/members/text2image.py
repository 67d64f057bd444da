"""The text-to-image member: captions -> image grids, for the training callback, zoo-sample and `zoo.load`.

`zoo.sampling.sample_images` is the one call: captions in, image tokens (B, T) out, through `zoo.sampling.generate`
with the captions as `cond` and, when `guidance` is set, the empty caption as `uncond`
(classifier-free guidance: logits = u + s·(c − u), one doubled batch, one KV cache).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.codecs.text_image import TextImageCodec
from zoo.members.base import Member, Samples, SampleSet, output_path, register_member
from zoo.members.image_io import save_grid_png
from zoo.members.serving import Limits, OnText, Option, OptionError, b64, guidance_option, sampling_options
from zoo.models.base import GenerativeModel
from zoo.sampling import OPTIONS, SamplingConfig, sample_images

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


def render(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path, step: int) -> SampleSet:
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


class Text2ImageMember(Member):
    """Text-to-image models: captions (`prompt`, or a batch `prompts`; a list given as `prompt` is a batch)
    -> a grid with one row per caption and `num_samples` columns; no caption = the empty, unconditional one.
    Value: float images (captions·num_samples, C, H, W) in [0, 1]. `out`: a .png file or a folder
    (text2image.png); the captions are listed beside it (.txt). `repetition_penalty` is honoured: it
    penalises image tokens already drawn in the same image (the caption is a condition, not a prefix)."""

    name = "text2image"
    codec_types = ("text_image",)
    model_types = ("text2image",)
    inputs = {"prompt": None, "prompts": [], "out": None}
    primary = "prompt"
    sampling = frozenset(OPTIONS) - {"stop", "max_new_tokens", "draft", "draft_tokens"}
    rejected = {"stop": "an image ends after its fixed number of tokens",
                "max_new_tokens": "an image is always generated whole (its number of tokens is fixed)",
                **dict.fromkeys(("draft", "draft_tokens"), "speculative decoding serves text and music models")}
    outputs = ("png",)

    def generate(self, model: GenerativeModel, codec: TextImageCodec, inputs: dict[str, Any],
                 sampling: SamplingConfig, *, on_text: Any = None) -> Samples:
        prompt = inputs["prompt"]
        captions = list(inputs["prompts"] or []) + (list(prompt) if isinstance(prompt, list | tuple) else
                                                    [] if prompt is None else [str(prompt)])
        captions = [c or "" for c in captions] or [""]
        for c in captions:
            codec.encode_caption(c)  # unknown characters / too long (on_long=error) fail here, before sampling
        n = sampling.num_samples
        tokens = sample_images(model, codec, [c for c in captions for _ in range(n)], sampling)
        out = Samples(codec.decode_batch(tokens.cpu()))
        path = output_path(inputs["out"], "text2image.png")
        if path is not None:
            path = save_grid_png(out.value, path, nrow=n, padding=PADDING)
            path.with_suffix(".txt").write_text(caption_rows(captions))
            out.files += [path, path.with_suffix(".txt")]
            out.lines.append(f"wrote {path}: {len(captions)} caption(s) × {n} sample(s): {captions}")
        return out

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        return render(module, datamodule, sampling, out_dir, step)

    # ---- zoo-serve: one caption -> one PNG grid ----
    def request_options(self, m: Any, limits: Limits) -> list[Option]:
        return [Option(name="caption", kind="string", default="", max_length=limits.max_prompt_chars,
                       sampling=False, help=f"what to draw, at most {m.codec.text_len} tokens (\"\" = anything)"),
                Option(name="num_samples", kind="integer", minimum=1,
                       maximum=min(limits.max_num_samples, limits.max_images), default=8,
                       sampling=False, help="images of the caption"),
                guidance_option(m), *sampling_options(m, max_tokens=None, repetition=False)]

    def check_request(self, m: Any, opts: dict[str, Any], limits: Limits) -> None:
        codec = m.codec
        try:
            n = len(codec.text.encode(opts["caption"]))
        except ValueError as e:
            raise OptionError("caption", str(e), "text in the model's vocabulary", opts["caption"][:80]) from None
        if n > codec.text_len:  # the codec would cut it silently
            raise OptionError("caption", f"{n} tokens is too long; at most {codec.text_len}",
                              f"at most {codec.text_len} tokens", n)

    def serve(self, m: Any, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        results = []
        for opts in batch:
            with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
                out = Path(tmp) / "grid.png"
                options = {k: v for k, v in opts.items() if k != "caption"}
                images = m.sample({"prompt": opts["caption"], **options, "out": out}).value
                results.append({"png": b64(out), "shape": list(images.shape), "rows": 1})
        return results


register_member(Text2ImageMember)
