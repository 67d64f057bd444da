"""Caption faithfulness and caption bits for the text-to-image decoder, judged inside the project.

* `DigitsReader` / `ShapesReader`: small CNNs (zoo/eval/classifier.py) trained on freshly rendered
  synthetic data, that read a layout back from an image: (left digit | None, right digit | None)
  from each 8×8 half of a captioned_digits canvas; (size, colour, kind, side) from a captioned_shapes
  canvas (one classifier over the 36 layouts). `reader.accuracy` is its own accuracy on the test
  split's real renders — report it beside every faithfulness figure (a judge is only as good as that).
* `faithfulness`: the fraction of generated images whose read-back layout equals the caption's,
  e.g. on the held-out layouts, with a given guidance scale.
* `caption_bits`: test bits/dim of the image part with the caption and with the empty caption
  (unconditional); their difference × dims is how many bits the caption saves per image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.eval.classifier import ImageClassifier, predict, train_classifier
from zoo.models.text2image import Text2Image
from zoo.sampling import sample_images

log = logging.getLogger(__name__)
Layout = tuple  # one caption's attributes, as zoo.data.text_image writes them: (left | None, right | None), ...
BLANK = 10  # the digits reader's class for an empty half


class DigitsReader:
    """Reads (left, right) digits (None = empty half) from (N, 1, 8, 16) float images in [0, 1].

    `dm`: a set-up captioned_digits data module (its `pools` of digit images and `splits`)."""

    def __init__(self, dm: Any, *, epochs: int = 30, seed: int = 0) -> None:
        def halves(split: str) -> tuple[Tensor, Tensor]:
            images = torch.cat(dm.pools[split]).float()[:, None] / 16
            labels = torch.cat([torch.full((len(p),), c) for c, p in enumerate(dm.pools[split])])
            blank = torch.zeros(max(1, len(labels) // 10), 1, 8, 8)
            return torch.cat([images, blank]), torch.cat([labels, torch.full((len(blank),), BLANK)])

        self.classifier: ImageClassifier = train_classifier(*halves("train"), *halves("val"), epochs=epochs, seed=seed)
        levels, captions = dm.splits["test"]
        layouts = [_digits_layout(c) for c in captions]
        self.accuracy = layout_accuracy(self.read(levels.float() / 16), layouts)

    @staticmethod
    def parse(caption: str) -> Layout:
        return _digits_layout(caption)

    def read(self, images: Tensor) -> list[Layout]:
        left, right = predict(self.classifier, images[..., :8]), predict(self.classifier, images[..., 8:])
        return [tuple(None if d == BLANK else d for d in pair) for pair in zip(left.tolist(), right.tolist())]


def _digits_layout(caption: str) -> Layout:
    left = right = None
    for part in caption.split(" and "):
        words = part.split()  # "a 3 on the left"
        if words[-1] == "left":
            left = int(words[1])
        else:
            right = int(words[1])
    return (left, right)


class ShapesReader:
    """Reads (size, colour, kind, side) from (N, 3, 12, 12) float images in [0, 1].

    `dm`: a set-up captioned_shapes data module (its `layouts()`, `render` and `splits`)."""

    def __init__(self, dm: Any, *, per_layout: int = 60, epochs: int = 15, seed: int = 0) -> None:
        self.layouts = dm.layouts()
        g = torch.Generator().manual_seed(10_000 + seed)  # renders apart from the training stream's

        def renders(n: int) -> tuple[Tensor, Tensor]:
            ids = [i for i in range(len(self.layouts)) for _ in range(n)]
            images = np.stack([dm.render(self.layouts[i], g, "train") for i in ids])
            return torch.from_numpy(images).float(), torch.tensor(ids)

        self.classifier = train_classifier(*renders(per_layout), *renders(max(2, per_layout // 5)), epochs=epochs,
                                           seed=seed)
        levels, captions = dm.splits["test"]
        self.accuracy = layout_accuracy(self.read(levels.float()), [_shapes_layout(c) for c in captions])

    @staticmethod
    def parse(caption: str) -> Layout:
        return _shapes_layout(caption)

    def read(self, images: Tensor) -> list[Layout]:
        return [self.layouts[i] for i in predict(self.classifier, images).tolist()]


def _shapes_layout(caption: str) -> Layout:
    words = caption.split()  # "a small red circle on the left"
    return (words[1], words[2], words[3], words[-1])


def layout_accuracy(read: Sequence[Layout], wanted: Sequence[Layout]) -> float:
    return sum(a == b for a, b in zip(read, wanted, strict=True)) / max(1, len(wanted))


@torch.no_grad()
def faithfulness(model: Text2Image, dm: Any,
                 reader: DigitsReader | ShapesReader, captions: Sequence[str], *, guidance: float | None = None,
                 seed: int = 0, temperature: float = 1.0, batch_size: int = 64) -> float:
    """Fraction of `captions` whose generated image (one each) the reader reads back as the caption's layout.

    `dm`: the data module the reader was built from (its `codec` encodes the captions)."""
    codec = dm.codec
    read: list[Layout] = []
    for s in range(0, len(captions), batch_size):
        tokens = sample_images(model, codec, captions[s:s + batch_size], guidance=guidance,
                               seed=seed + s, temperature=temperature)
        read += reader.read(codec.decode_batch(tokens))
    return layout_accuracy(read, [reader.parse(c) for c in captions])


@torch.no_grad()
def caption_bits(model: Text2Image, codec: object, levels: Tensor, captions: Sequence[str], *,
                 batch_size: int = 128) -> dict[str, float]:
    """Image-part bits/dim with the caption ("conditional") and with the empty caption ("unconditional")."""
    was = model.training
    model.eval()
    totals = {"conditional": 0.0, "unconditional": 0.0}
    count = 0
    for s in range(0, len(captions), batch_size):
        tokens = codec.image.levels_to_tokens(levels[s:s + batch_size].long())
        caps = codec.caption_ids(captions[s:s + batch_size])
        for key, cond in (("conditional", caps), ("unconditional", None)):
            logits = model.image_logits(tokens, cond)
            totals[key] += float(F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="sum"))
        count += tokens.numel()
    model.train(was)
    out = {k: v / count / math.log(2) for k, v in totals.items()}
    out["bits_saved_per_image"] = (out["unconditional"] - out["conditional"]) * codec.tokens_per_image
    return out
