"""What every captioned-image dataset shares: the text-to-image codec fitted on the captions, and
(levels, caption) -> batch; the loaders are `zoo.data.base.StreamDataModule`'s. Batch layout and
split rules: the package docstring (`zoo/data/text_image/__init__.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text import TextCodecKind
from zoo.codecs.text_image import OnLong, TextImageCodec
from zoo.data.base import Batch, StreamDataModule

log = logging.getLogger(__name__)


class CaptionedImageDataModule(StreamDataModule):
    """Base class. After `setup()`: `codec` (TextImageCodec), `splits[name] = (levels uint8 (N, C, H, W),
    captions list[str])` for val and test, and for synthetic sets `train_layouts` / `heldout_layouts`."""

    name: ClassVar[str] = ""
    height: int
    width: int
    channels: int
    levels: int

    def __init__(self, *, batch_size: int = 64, patch_size: int = 2, seed: int = 0, split_seed: int = 0,
                 num_eval: int = 256, text_codec: TextCodecKind = "char",
                 text_vocab_size: int | None = None, text_len: int | None = None, on_long: OnLong = "truncate",
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        if batch_size < 1 or num_eval < 1:
            raise ValueError(f"batch_size and num_eval must be >= 1, got {batch_size} and {num_eval}")
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers, eval_batch_size=eval_batch_size)
        self.patch_size, self.split_seed, self.num_eval = patch_size, split_seed, num_eval
        self.text_codec, self.text_vocab_size = text_codec, text_vocab_size
        self.text_len, self.on_long = text_len, on_long
        self.codec: TextImageCodec | None = None
        self.splits: dict[str, tuple[Tensor, list[str]]] = {}

    # ---- subclass hooks ----------------------------------------------------------------------
    def _prepare(self) -> list[str]:
        """Load/split whatever is needed; return every caption the text codec must encode."""
        raise NotImplementedError

    def _train_examples(self, g: torch.Generator, n: int) -> tuple[Tensor, list[str]]:
        """n training examples drawn with `g`: (levels uint8 (n, C, H, W), captions)."""
        raise NotImplementedError

    # ---- setup / batches ---------------------------------------------------------------------
    def image_codec(self) -> ImagePatchCodec:
        return ImagePatchCodec(height=self.height, width=self.width, channels=self.channels, levels=self.levels,
                               patch_size=self.patch_size)

    def setup(self, stage: str | None = None) -> None:
        if self.codec is not None:
            return
        captions = self._prepare()
        self.codec = TextImageCodec.fit(captions, self.image_codec(), kind=self.text_codec,
                                        text_vocab_size=self.text_vocab_size, text_len=self.text_len,
                                        on_long=self.on_long)
        log.info("%s: %s; val/test %s examples", self.name, self.codec,
                 "/".join(str(len(self.splits[s][1])) for s in ("val", "test")))

    def _require_setup(self) -> TextImageCodec:
        super()._require_setup()
        return self.codec

    def to_batch(self, levels: Tensor, captions: Sequence[str]) -> Batch:
        return caption_batch(self._require_setup(), levels, captions)

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        return self.to_batch(*self._train_examples(g, batch_size))

    def batches_per_pass(self) -> int:
        return max(1, 1000 // self.batch_size)  # synthetic sets are endless: a nominal epoch of ~1000 examples

    def eval_dataset(self, split: str) -> list[tuple[Tensor, str]]:
        """The (levels, caption) examples of `split` in order; `eval_collate` makes the batches."""
        levels, captions = self.splits[split]
        return list(zip(levels, captions))

    def eval_collate(self) -> CaptionCollate:
        return CaptionCollate(self._require_setup())


class CaptionCollate:
    """collate_fn: a list of (levels, caption) -> the batch dict (a class, so workers can pickle it)."""

    def __init__(self, codec: TextImageCodec) -> None:
        self.codec = codec

    def __call__(self, items: list[tuple[Tensor, str]]) -> Batch:
        return caption_batch(self.codec, torch.stack([x for x, _ in items]), [c for _, c in items])


def caption_batch(codec: TextImageCodec, levels: Tensor, captions: Sequence[str]) -> Batch:
    """(levels uint8 (B, C, H, W), B captions) -> idx (image tokens), cond (caption ids), targets."""
    tokens = codec.image.levels_to_tokens(levels.long())
    caps = codec.caption_ids(captions)
    return {"idx": tokens, "targets": codec.targets(caps, tokens), "cond": caps}
