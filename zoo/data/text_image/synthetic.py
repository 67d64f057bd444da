"""Synthetic captioned sets for compositional generalisation: `captioned_digits` (scikit-learn digits
side by side) and `captioned_shapes` (shapes drawn by Pillow); some two-part layouts are held out
of training for the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.data.download import need
from zoo.data.image import stratified_split
from zoo.data.text_image.base import CaptionedImageDataModule

Layout = tuple  # one caption's attributes, e.g. (left digit | None, right digit | None)


class _SyntheticCaptions(CaptionedImageDataModule):
    """Layouts -> captions and rendered images; two-part layouts partly held out for the test split."""

    def __init__(self, *, heldout_fraction: float = 0.15, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5), got {heldout_fraction}")
        self.heldout_fraction = heldout_fraction
        self.train_layouts: list[Layout] = []
        self.heldout_layouts: list[Layout] = []

    def layouts(self) -> list[Layout]:
        raise NotImplementedError

    def can_hold_out(self, layout: Layout) -> bool:
        return True

    def group(self, layout: Layout) -> Layout:
        """Held-out layouts have distinct groups (so e.g. a shape is held out on one side only)."""
        return layout

    def caption(self, layout: Layout) -> str:
        raise NotImplementedError

    def render(self, layout: Layout, g: torch.Generator, split: str) -> np.ndarray:
        """(C, H, W) uint8 levels of one image of `layout`, random choices from g."""
        raise NotImplementedError

    def _prepare(self) -> list[str]:
        every = self.layouts()
        self.heldout_layouts = []
        g = torch.Generator().manual_seed(self.split_seed)
        candidates = [x for x in every if self.can_hold_out(x)]
        k = max(1, round(self.heldout_fraction * len(candidates)))
        groups: set[Layout] = set()
        for i in torch.randperm(len(candidates), generator=g).tolist():
            if len(self.heldout_layouts) < k and self.group(candidates[i]) not in groups:
                groups.add(self.group(candidates[i]))
                self.heldout_layouts.append(candidates[i])
        held = set(self.heldout_layouts)
        self.train_layouts = [x for x in every if x not in held]
        for split, pool in (("val", self.train_layouts), ("test", self.heldout_layouts)):
            gs = torch.Generator().manual_seed(self.split_seed * 7919 + (1 if split == "val" else 2))
            chosen = [pool[i] for i in torch.randint(0, len(pool), (self.num_eval,), generator=gs).tolist()]
            levels = torch.from_numpy(np.stack([self.render(x, gs, split) for x in chosen]))
            self.splits[split] = (levels, [self.caption(x) for x in chosen])
        return [self.caption(x) for x in every]

    def _train_examples(self, g: torch.Generator, n: int) -> tuple[Tensor, list[str]]:
        chosen = [self.train_layouts[i] for i in torch.randint(0, len(self.train_layouts), (n,), generator=g).tolist()]
        levels = torch.from_numpy(np.stack([self.render(x, g, "train") for x in chosen]))
        return levels, [self.caption(x) for x in chosen]


class CaptionedDigitsDataModule(_SyntheticCaptions):
    """Layout (left digit or None, right digit or None); 8×8 scikit-learn digits (17 levels) per half.
    The digit images are split 80/10/10 per class (split_seed) so val/test also show unseen digit images."""

    name = "captioned_digits"
    height, width, channels, levels = 8, 16, 1, 17
    SIDES = ("left", "right")

    def layouts(self) -> list[Layout]:
        opts = [None, *range(10)]
        return [(a, b) for a in opts for b in opts if (a, b) != (None, None)]

    def can_hold_out(self, layout: Layout) -> bool:
        return None not in layout  # single digits all stay in training; pairs are the compositions

    def caption(self, layout: Layout) -> str:
        parts = [f"a {d} on the {side}" for d, side in zip(layout, self.SIDES) if d is not None]
        return " and ".join(parts)

    def _prepare(self) -> list[str]:
        # bundled with scikit-learn: no download
        d = need("sklearn.datasets", "image", "data=captioned_digits (scikit-learn's 8x8 digits)").load_digits()
        images = torch.from_numpy(np.asarray(d.images, dtype=np.uint8))  # (1797, 8, 8) in 0..16
        labels = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
        parts = stratified_split(labels, (0.1, 0.1), self.split_seed)
        self.pools = {s: [images[p][labels[p] == c] for c in range(10)]
                      for s, p in zip(("train", "val", "test"), parts)}
        return super()._prepare()

    def render(self, layout: Layout, g: torch.Generator, split: str) -> np.ndarray:
        canvas = np.zeros((1, 8, 16), dtype=np.uint8)
        for half, digit in enumerate(layout):
            if digit is not None:
                pool = self.pools[split][digit]
                canvas[0, :, 8 * half:8 * half + 8] = pool[int(torch.randint(0, len(pool), (1,), generator=g))]
        return canvas


class CaptionedShapesDataModule(_SyntheticCaptions):
    """Layout (size, colour, kind, side) drawn by Pillow on a black 12×12 RGB canvas, 2 levels per channel."""

    name = "captioned_shapes"
    height, width, channels, levels = 12, 12, 3, 2
    SIZES = ("small", "large")
    COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    KINDS = ("circle", "square", "triangle")
    SIDES = ("left", "right")
    EXTENT = {"small": 4, "large": 6}  # bounding box side in pixels

    def layouts(self) -> list[Layout]:
        return [(s, c, k, p) for s in self.SIZES for c in self.COLOURS for k in self.KINDS for p in self.SIDES]

    def group(self, layout: Layout) -> Layout:
        return layout[:3]  # a held-out shape (size, colour, kind) is still seen on the other side

    def caption(self, layout: Layout) -> str:
        size, colour, kind, side = layout
        return f"a {size} {colour} {kind} on the {side}"

    def render(self, layout: Layout, g: torch.Generator, split: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        size, colour, kind, side = layout
        e = self.EXTENT[size]
        img = Image.new("RGB", (12, 12))
        x0 = (0 if side == "left" else 6) + int(torch.randint(0, 6 - e + 1, (1,), generator=g))
        y0 = int(torch.randint(0, 12 - e + 1, (1,), generator=g))
        box = (x0, y0, x0 + e - 1, y0 + e - 1)
        draw, fill = ImageDraw.Draw(img), self.COLOURS[colour]
        if kind == "circle":
            draw.ellipse(box, fill=fill)
        elif kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0 + (e - 1) / 2, y0), (x0, y0 + e - 1), (x0 + e - 1, y0 + e - 1)], fill=fill)
        return (np.asarray(img, dtype=np.uint8) > 127).astype(np.uint8).transpose(2, 0, 1)  # (3, 12, 12) levels
