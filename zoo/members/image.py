"""Sampling images: class grids (rows = classes) and completions, for the training callback and zoo-sample.

`zoo.sampling.sample_tokens` is the one call that turns a model, a codec and class ids into images: it drives
`zoo.sampling.generate` with an empty prompt (the model's class token starts the image) or a prefix of
image tokens (completion: the top rows given, the rest generated), with classifier-free guidance when
the sampling config sets `guidance`. `render` draws the training-time grids; `ImageMember` is the member
that zoo-sample, `zoo.load(...).generate` and the training callback ask.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.codecs.clusters import ColourClusterCodec
from zoo.codecs.image import ImagePatchCodec
from zoo.members.base import Member, Samples, SampleSet, output_path, register_member
from zoo.members.image_io import save_grid_png
from zoo.members.serving import Limits, OnText, Option, OptionError, b64, guidance_option, sampling_options
from zoo.models.base import GenerativeModel
from zoo.sampling import OPTIONS, SamplingConfig, sample_tokens

log = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 8  # columns of the training-time grid
UNCONDITIONAL_ROWS = 4  # rows of that grid for an unconditional model
HIDDEN = 0.5  # grey shown where a completion's prompt hides the image
PADDING = 2  # grid lines in pixels: thick enough to separate dark-background images


def hide_below(codec: ImagePatchCodec, images: Tensor, rows: int) -> Tensor:
    """Float images (B, C, H, W) with every pixel row from `rows` down painted grey (what a prompt shows)."""
    images = images.clone()
    images[:, :, rows:] = HIDDEN
    return images


def class_label(codec: ImagePatchCodec, class_id: int) -> str:
    """"class 3", or "class 3 (cat)" when the codec's class name says more than the id."""
    names = codec.class_names or []
    name = names[class_id] if class_id < len(names) else str(class_id)
    return f"class {class_id}" if name == str(class_id) else f"class {class_id} ({name})"


def render(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path, step: int) -> SampleSet:
    """The training callback's image renderer: a grid of samples (rows = classes, SAMPLES_PER_CLASS
    columns; UNCONDITIONAL_ROWS rows without classes) and, when the datamodule has a test split, a
    completion grid (rows: originals, their top half given, the completions), captioned with the
    classes they show. A class-conditional model also gets one strip per class (`step_<step>/class_<id>.png`,
    `SampleSet.labelled`, captioned with the class). Returns a SampleSet."""
    model, codec = module.model, module.codec
    k = codec.num_classes
    labels = torch.arange(k).repeat_interleave(SAMPLES_PER_CLASS) if k else None
    tokens = sample_tokens(model, codec, labels, num=UNCONDITIONAL_ROWS * SAMPLES_PER_CLASS, cfg=cfg)
    images = codec.decode_batch(tokens.cpu())  # (rows·SAMPLES_PER_CLASS, C, H, W), class-major
    out = SampleSet()
    grid = save_grid_png(images, out_dir / f"step_{step:06d}.png", nrow=SAMPLES_PER_CLASS, padding=PADDING)
    out.images.append(grid)
    out.captions[str(grid)] = (f"step {step}: one row per class: " + ", ".join(class_label(codec, c) for c in range(k))
                               if k else f"step {step}: unconditional samples")
    for c in range(k):
        strip = save_grid_png(images[c * SAMPLES_PER_CLASS:(c + 1) * SAMPLES_PER_CLASS],
                              out_dir / f"step_{step:06d}" / f"class_{c}.png", nrow=SAMPLES_PER_CLASS, padding=PADDING)
        out.labelled.append((strip, class_label(codec, c)))
    test = getattr(datamodule, "splits", {}).get("test")
    rows = half_rows(codec)
    if test is not None and len(test[1]) and rows:
        levels, test_labels = test[0][:SAMPLES_PER_CLASS].long(), test[1][:SAMPLES_PER_CLASS]
        n = codec.prefix_length(rows)
        prefix = codec.levels_to_tokens(levels)[:, :n]
        done = sample_tokens(model, codec, test_labels if k else None, num=len(test_labels), prefix=prefix,
                             cfg=cfg)
        originals = codec.dequantize(levels)
        grid = torch.cat([originals, hide_below(codec, originals, rows), codec.decode_batch(done.cpu())])
        path = save_grid_png(grid, out_dir / f"step_{step:06d}_completion.png", nrow=len(test_labels),
                             padding=PADDING)
        out.images.append(path)
        columns = ", ".join(class_label(codec, int(c)) for c in test_labels) if k else "test images"
        out.captions[str(path)] = (f"step {step}: completions; rows = originals, their top {rows} pixel rows "
                                   f"given, completed; columns = {columns}")
    return out


def half_rows(codec: ImagePatchCodec) -> int:
    """The top half of the image, rounded down to whole patch rows (0 if that is nothing)."""
    return (codec.height // 2) // codec.patch_size * codec.patch_size


# ---- zoo-sample ---------------------------------------------------------------------------------------

def parse_labels(codec: ImagePatchCodec, labels: Any) -> Tensor | None:
    """zoo-sample's `labels`: None (every class), an id, a class name or a list of them -> ids (K,).

    Strings are looked up among the class names first, then read as ids. Raises ValueError naming
    the bad value and the accepted ids and names.
    """
    k, names = codec.num_classes, codec.class_names or []
    if k == 0:
        if labels not in (None, []):
            raise ValueError(f"labels={labels!r}: this model is unconditional (no classes)")
        return None
    if labels is None:
        return torch.arange(k)
    ids = []
    for item in labels if isinstance(labels, (list, tuple)) else [labels]:
        if isinstance(item, str) and item in names:
            ids.append(names.index(item))
        elif (isinstance(item, int) and not isinstance(item, bool)) or (isinstance(item, str) and item.isdigit()):
            ids.append(int(item))
        else:
            raise ValueError(f"unknown label {item!r}; accepted: class ids 0..{k - 1}"
                             + (f" or names {names}" if names else ""))
    if not ids:
        raise ValueError("labels is an empty list; give class ids or names, or null for every class")
    return codec.check_class_ids(ids)


def load_primer(codec: ImagePatchCodec | ColourClusterCodec, path: str | Path) -> tuple[Tensor, str | None]:
    """An image file -> (its T tokens, a one-line note when it had to be converted, else None).

    Any size and mode is accepted: the picture is converted to the codec's channels and, when its size differs,
    scaled so that its short side fits (bicubic) and centre-cropped to the codec's height × width (what
    ImageGPT's paper did with ImageNet photos), then quantised."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"primer image not found: {path}")
    note = None
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            img = img.convert("L" if codec.channels == 1 else "RGB")
            if img.size != (codec.width, codec.height):
                img = ImageOps.fit(img, (codec.width, codec.height), Image.Resampling.BICUBIC)
                note = (f"primer {path.name} ({size[0]}x{size[1]} {mode}) resized and centre-cropped to the model's "
                        f"{codec.width}x{codec.height}")
            elif img.mode != mode:
                note = f"primer {path.name} converted from {mode} to {img.mode}"
            pixels = np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy warns otherwise)
    except OSError as e:
        raise ValueError(f"cannot read primer image {path}: {e}") from e
    return torch.tensor(codec.encode(pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1))), note


class ImageMember(Member):
    """Class-conditional (or unconditional) image models: `labels` (ids or names; None = every class) ->
    a grid with one row per label and `num_samples` columns; with `primer` (an image file) its top `rows`
    pixel rows are kept and the rest generated. Value: float images (rows·num_samples, C, H, W) in [0, 1].
    `out`: a .png file or a folder (samples.png, or completion.png with a primer)."""

    name = "image"
    codec_types = ("image_patch", "colour_clusters")
    model_types = ("image_gpt",)
    inputs = {"labels": None, "primer": None, "rows": None, "out": None}
    primary = "labels"
    sampling = frozenset(OPTIONS) - {"stop", "max_new_tokens", "draft", "draft_tokens"}
    rejected = {"stop": "an image ends after its fixed number of tokens (use labels=, primer=)",
                "max_new_tokens": "an image is always generated whole (its number of tokens is fixed)",
                **dict.fromkeys(("draft", "draft_tokens"), "speculative decoding serves text and music models")}
    outputs = ("png",)

    def generate(self, model: GenerativeModel, codec: ImagePatchCodec, inputs: dict[str, Any],
                 sampling: SamplingConfig, *, on_text: Any = None) -> Samples:
        labels = parse_labels(codec, inputs["labels"])
        n = sampling.num_samples
        prefix = rows = primer = note = None
        if inputs["primer"]:
            rows = half_rows(codec) if inputs["rows"] is None else int(inputs["rows"])
            if not 0 < rows < codec.height:
                raise ValueError(f"rows={rows}: keep between 1 and {codec.height - 1} pixel rows of the primer")
            primer, note = load_primer(codec, inputs["primer"])
            prefix = primer[:codec.prefix_length(rows)]
        elif inputs["rows"] is not None:
            raise ValueError(f"rows={inputs['rows']} needs primer= (an image whose top rows are kept)")
        row_labels = labels.repeat_interleave(n) if labels is not None else None
        tokens = sample_tokens(model, codec, row_labels, num=n, prefix=prefix, cfg=sampling)
        images = codec.decode_batch(tokens.cpu())  # (rows·n, C, H, W)
        out = Samples(images, lines=[note] if note else [])
        path = output_path(inputs["out"], "samples.png" if prefix is None else "completion.png")
        if path is None:
            return out
        if prefix is None:
            path = save_grid_png(images, path, nrow=n, padding=PADDING)
        else:  # first column: what the model was shown
            shown = hide_below(codec, codec.decode(primer)[None], rows)
            per_row = images.view(-1, n, *images.shape[1:])
            grid = torch.cat([shown.expand(len(per_row), 1, *shown.shape[1:]), per_row], dim=1).flatten(0, 1)
            path = save_grid_png(grid, path, nrow=n + 1, padding=PADDING)
        names = ([codec.class_names[i] if codec.class_names else str(i) for i in labels.tolist()]
                 if labels is not None else ["(unconditional)"])
        out.files.append(path)
        out.lines.append(f"wrote {path}: {len(names)} row(s) ({', '.join(names)}) × {n} sample(s)")
        return out

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        return render(module, datamodule, sampling, out_dir, step)

    # ---- zoo-serve: labels -> one PNG grid ----
    def request_options(self, m: Any, limits: Limits) -> list[Option]:
        """labels and guidance for a class-conditional model only (an unconditional one, such as ImageGPT, takes
        neither: `parse_labels` and the sampling loop would refuse them)."""
        names = m.codec.class_names or list(range(m.codec.num_classes))
        conditional = m.codec.num_classes > 0
        labels = [Option(name="labels", kind="labels", nullable=True, default=None, sampling=False,
                         max_length=limits.max_images,
                         help=f"class ids or names, one grid row each (null = every class): {names}")]
        return [*(labels if conditional else []),
                Option(name="num_samples", kind="integer", minimum=1, maximum=limits.max_num_samples,
                       default=4, sampling=False, help="images per label" if conditional else "images"),
                *([guidance_option(m)] if conditional else []), *sampling_options(m, max_tokens=None, repetition=False)]

    @staticmethod
    def _rows(m: Any, opts: dict[str, Any]) -> int:
        try:
            ids = parse_labels(m.codec, opts.get("labels"))
        except ValueError as e:  # accepted: the field's own (Option.accepted)
            raise OptionError("labels", str(e), received=opts.get("labels")) from None
        return 1 if ids is None else len(ids)

    def check_request(self, m: Any, opts: dict[str, Any], limits: Limits) -> None:
        images, most = self._rows(m, opts) * opts["num_samples"], limits.max_images
        if images > most:
            raise OptionError("num_samples", f"{images} images (labels x num_samples) is too many; at most "
                              f"{most}", f"labels x num_samples <= {most}", opts["num_samples"])

    def serve(self, m: Any, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        results = []
        for opts in batch:
            with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
                out = Path(tmp) / "grid.png"
                images = m.sample({**opts, "out": out}).value
                results.append({"png": b64(out), "shape": list(images.shape), "rows": self._rows(m, opts)})
        return results


register_member(ImageMember)
