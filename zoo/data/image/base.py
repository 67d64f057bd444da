"""What every image dataset shares: splits, quantisation, token batches (the loaders are
`zoo.data.base.StreamDataModule`'s). The families: `arrays` (digits, mnist5k), `torchvision_sets`
(MNIST, Fashion-MNIST, CIFAR-10), `folder` (any folder of images); the batch format and split rules
are in the package docstring (`zoo/data/image/__init__.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from zoo.codecs.clusters import ColourClusterCodec
from zoo.codecs.image import ImagePatchCodec
from zoo.data.base import Batch, StreamDataModule

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class RawImages:
    """Images as loaded: `pixels` (N, C, H, W) uint8 in [0, max_value], `labels` (N,) int64."""

    pixels: Tensor
    labels: Tensor
    max_value: int = 255


def stratified_split(
    labels: Tensor, fractions: tuple[float, ...], seed: int
) -> tuple[Tensor, ...]:
    """Split indices per class: returns (rest, part_1, ..., part_k) index tensors, each sorted.

    Part j takes round(fractions[j]·n_c) of the n_c examples of every class c (a seeded random
    choice), but every non-empty class keeps at least one example in `rest` (the training set).
    Deterministic in (labels, fractions, seed); the parts are disjoint and cover all indices.
    """
    g = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(labels).tolist():  # sorted
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        start, left = 0, len(members) - 1  # keep one for training
        for j, f in enumerate(fractions):
            k = min(round(f * len(members)), max(left, 0))
            parts[j + 1].append(members[start:start + k])
            start, left = start + k, left - k
        parts[0].append(members[start:])
    return tuple(torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.long) for p in parts)


class _LevelsDataset(Dataset):
    """One split, image by image: (levels (C, H, W) uint8, label) — batched by `TokenCollate`."""

    def __init__(self, levels: Tensor, labels: Tensor) -> None:
        self.levels, self.labels = levels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.levels[i], self.labels[i]


class TokenCollate:
    """collate_fn: a list of (levels, label) -> the token batch dict (a class, so workers can pickle it)."""

    def __init__(self, codec: ImagePatchCodec, with_cond: bool) -> None:
        self.codec, self.with_cond = codec, with_cond

    def __call__(self, items: list[tuple[Tensor, Tensor]]) -> Batch:
        levels = torch.stack([x for x, _ in items])
        labels = torch.stack([y for _, y in items])
        return _make_token_batch(self.codec, levels, labels, self.with_cond)


def _make_token_batch(codec: ImagePatchCodec, levels: Tensor, labels: Tensor, with_cond: bool) -> Batch:
    tokens = codec.levels_to_tokens(levels.long())  # (B, T)
    batch = {"idx": tokens, "targets": tokens.clone()}
    if with_cond:
        batch["cond"] = labels.long()
    return batch


class ImageDataModule(StreamDataModule):
    """Base class: load (subclass `_load`), split, quantise, serve token batches.

    After `setup()`: `codec` (ImagePatchCodec), `num_classes` (0 when unconditional), `class_names`
    (the dataset's classes, also when unconditional), `splits[name] = (levels uint8 (N, C, H, W),
    labels int64 (N,))` for name in train/val/test.

    Training batches (`StreamDataModule`'s stream) are random images drawn with replacement, a pure
    function of (seed, batch number); one pass is len(train) // batch_size batches. Val/test loaders
    iterate their split in order, `eval_batch_size` (default: batch_size) images per batch.
    """

    name: ClassVar[str] = ""
    height: int
    width: int
    channels: int
    native_levels: ClassVar[int | None] = None  # the dataset's own number of grey levels, if not 256

    def __init__(
        self,
        *,
        batch_size: int = 64,
        levels: int = 256,
        patch_size: int = 4,
        seed: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        root: str | Path | None = None,
        conditional: bool = True,
        eval_batch_size: int | None = None,
        clusters: list[list[float]] | None = None,
    ) -> None:
        """`clusters`: (k, 3) RGB colours in [-1, 1] (an ImageGPT's palette, which `zoo-train init_from=` fills in):
        each pixel becomes the id of its nearest cluster (`ColourClusterCodec`) instead of a level; the images are
        kept 8-bit (levels=256), and `patch_size` and classes do not apply."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1 or None, got {eval_batch_size}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction and test_fraction must be >= 0 with a sum < 1, got {val_fraction} and "
                f"{test_fraction}"
            )
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers, eval_batch_size=eval_batch_size)
        self.levels, self.patch_size, self.split_seed = levels, patch_size, split_seed
        self.val_fraction, self.test_fraction, self.conditional = val_fraction, test_fraction, conditional
        self.root = Path(root).expanduser() if root is not None else None
        # fail before any work: bad patch size / levels / channels / clusters raise here, naming the values
        ImagePatchCodec(
            height=self.height, width=self.width, channels=self.channels, levels=levels, patch_size=patch_size
        )
        self.clusters = clusters
        if clusters is not None:
            ColourClusterCodec(height=self.height, width=self.width, clusters=clusters)
            if self.channels != 3 or levels != 256:
                raise ValueError(f"{self.name}: clusters (colour-cluster tokens) need RGB images kept 8-bit: "
                                 f"channels=3 and levels=256, got channels={self.channels}, levels={levels}")
        if self.native_levels is not None and levels > self.native_levels:
            log.warning(
                "%s has %d grey levels but levels=%d: some levels never occur and bits/dim is not "
                "comparable with the native quantisation", self.name, self.native_levels, levels,
            )
        self.codec: ImagePatchCodec | ColourClusterCodec | None = None
        self.num_classes = 0
        self.class_names: list[str] = []
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    # ----------------------------------------------------- subclass hook
    def _load(self) -> tuple[RawImages, RawImages | None, list[str]]:
        """Return (train-or-all, official test split or None, class names)."""
        raise NotImplementedError

    # ------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.codec is not None:
            return  # idempotent: Lightning calls setup once per stage
        data, test, class_names = self._load()
        for raw in (data, test):
            if raw is not None:
                self._check_raw(raw, len(class_names))
        if test is None:
            train_i, val_i, test_i = stratified_split(
                data.labels, (self.val_fraction, self.test_fraction), self.split_seed
            )
            parts = {"train": (data, train_i), "val": (data, val_i), "test": (data, test_i)}
        else:
            train_i, val_i = stratified_split(data.labels, (self.val_fraction,), self.split_seed)
            parts = {"train": (data, train_i), "val": (data, val_i),
                     "test": (test, torch.arange(len(test.labels)))}
        if len(train_i) == 0:
            raise ValueError(f"{self.name}: the training split is empty")

        self.class_names = list(class_names)
        self.num_classes = len(class_names) if self.conditional and len(class_names) > 1 else 0
        if self.clusters is not None:
            self.num_classes = 0  # a colour-cluster model (ImageGPT) is unconditional
        if self.conditional and len(class_names) <= 1:
            log.info("%s: %d class(es) found; training unconditionally", self.name, len(class_names))
        self.codec = ImagePatchCodec(
            height=self.height, width=self.width, channels=self.channels, levels=self.levels,
            patch_size=self.patch_size, num_classes=self.num_classes,
            class_names=self.class_names if self.num_classes else None,
        ) if self.clusters is None else ColourClusterCodec(height=self.height, width=self.width, clusters=self.clusters)
        for split, (raw, idx) in parts.items():
            self.splits[split] = (self._quantize(raw.pixels[idx], raw.max_value), raw.labels[idx].clone())
        log.info(
            "%s: %s images of %s, %d levels, %d classes",
            self.name, "/".join(str(len(self.splits[s][1])) for s in SPLITS),
            self.codec.image_shape, self.levels, self.num_classes,
        )

    def _check_raw(self, raw: RawImages, n_classes: int) -> None:
        shape = (self.channels, self.height, self.width)
        if raw.pixels.ndim != 4 or tuple(raw.pixels.shape[1:]) != shape or raw.pixels.dtype != torch.uint8:
            raise ValueError(
                f"{self.name}: loaded pixels {tuple(raw.pixels.shape)} {raw.pixels.dtype}, expected "
                f"(N, {', '.join(map(str, shape))}) uint8"
            )
        if len(raw.labels) != len(raw.pixels):
            raise ValueError(f"{self.name}: {len(raw.pixels)} images but {len(raw.labels)} labels")
        if len(raw.labels) and (raw.labels.min() < 0 or raw.labels.max() >= max(n_classes, 1)):
            raise ValueError(f"{self.name}: labels outside [0, {n_classes})")

    def _quantize(self, pixels: Tensor, max_value: int, chunk: int = 4096) -> Tensor:
        assert self.codec is not None
        out = torch.empty_like(pixels, dtype=torch.uint8)
        for s in range(0, len(pixels), chunk):  # chunked: int64 intermediates of CIFAR-10 would be 1.2 GB
            out[s:s + chunk] = self._levels_codec.quantize_uint(pixels[s:s + chunk], max_value).to(torch.uint8)
        return out

    @property
    def _levels_codec(self) -> ImagePatchCodec:
        """The codec quantising pixels to the stored levels: with clusters 8-bit (tokens are made per batch)."""
        if isinstance(self.codec, ImagePatchCodec):
            return self.codec
        return ImagePatchCodec(height=self.height, width=self.width, channels=self.channels, levels=self.levels)

    def _require_setup(self) -> ImagePatchCodec:
        super()._require_setup()
        return self.codec

    # ------------------------------------------------------------ what the shared loaders serve
    @property
    def with_cond(self) -> bool:
        return self.num_classes > 0

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        """`batch_size` training images drawn with replacement using `g` (the BatchStream contract)."""
        codec = self._require_setup()
        levels, labels = self.splits["train"]
        pick = torch.randint(0, len(labels), (batch_size,), generator=g)
        return _make_token_batch(codec, levels[pick], labels[pick], self.with_cond)

    def batches_per_pass(self) -> int:
        return len(self.splits["train"][1]) // self.batch_size

    def eval_dataset(self, split: str) -> Dataset:
        levels, labels = self.splits[split]
        return _LevelsDataset(levels, labels)

    def eval_collate(self) -> TokenCollate:
        return TokenCollate(self._require_setup(), self.with_cond)
