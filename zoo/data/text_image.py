"""Captioned images for the text-to-image decoder: two synthetic sets and a folder reader.

Batches (what `Text2Image` and `GenerativeModule` consume; layout in zoo/codecs/text_image.py):

    idx      (B, T)        int64  the image's tokens (ImagePatchCodec layout)
    cond     (B, L)        int64  caption ids right-padded with the codec's pad_id (L = text_len)
    targets  (B, L−1+T)    int64  `TextImageCodec.targets`: caption tokens 1..L−1 (offset, -100 on
                                  padding), then the image tokens

* `captioned_digits`: an 8×16 canvas (17 grey levels) holding one or two scikit-learn digits in its
  left and right halves, captioned "a 3 on the left and a 7 on the right" / "a 3 on the left" /
  "a 7 on the right" (120 layouts).
* `captioned_shapes`: a 12×12 RGB canvas (2 levels per channel: pure colours) with one shape drawn
  by Pillow, captioned "a small red circle on the left" (kind × colour × size × side: 36 layouts);
  the shape's position inside its half is jittered.
* `image_text_folder`: a folder of images with same-named .txt captions (`cat.png` + `cat.txt`),
  or a CSV (columns path,caption) / JSONL ({"path": ..., "caption": ...}) given as `captions=`.
  Images without a caption (and unreadable files) are skipped, counted in `skipped` and named in a
  warning.

Compositional generalisation: the synthetic sets hold out a `heldout_fraction` of their two-part
layouts (digit pairs; shape attribute combinations), chosen from `split_seed`. Training never shows a
held-out caption; `val` holds `num_eval` examples of training layouts (drawn from images kept out of
training for digits) and `test` `num_eval` examples of the held-out layouts only. Everything is a
deterministic function of (`split_seed`, `seed`): training batches come from a `BatchStream`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text_image import OnLong, TextImageCodec
from zoo.data.base import Batch, BatchStream, stream_length
from zoo.data.download import need
from zoo.data.image import OnError, UnreadableImageError, log_skipped, read_image_file, stratified_split

log = logging.getLogger(__name__)

Layout = tuple  # one caption's attributes, e.g. (left digit | None, right digit | None)


class CaptionedImageDataModule(L.LightningDataModule):
    """Base class. After `setup()`: `codec` (TextImageCodec), `splits[name] = (levels uint8 (N, C, H, W),
    captions list[str])` for val and test, and for synthetic sets `train_layouts` / `heldout_layouts`."""

    name: ClassVar[str] = ""
    height: int
    width: int
    channels: int
    levels: int

    def __init__(self, *, batch_size: int = 64, patch_size: int = 2, seed: int = 0, split_seed: int = 0,
                 num_eval: int = 256, text_codec: Literal["char", "byte", "bpe"] = "char",
                 text_vocab_size: int | None = None, text_len: int | None = None, on_long: OnLong = "truncate",
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or num_eval < 1:
            raise ValueError(f"batch_size and num_eval must be >= 1, got {batch_size} and {num_eval}")
        self.batch_size, self.patch_size, self.seed, self.split_seed = batch_size, patch_size, seed, split_seed
        self.num_eval, self.text_codec, self.text_vocab_size = num_eval, text_codec, text_vocab_size
        self.text_len, self.on_long = text_len, on_long
        self.eval_batch_size, self.num_workers = eval_batch_size or batch_size, num_workers
        self.codec: TextImageCodec | None = None
        self.splits: dict[str, tuple[Tensor, list[str]]] = {}
        self._train_stream: BatchStream | None = None

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
        if self.codec is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for data")
        return self.codec

    def to_batch(self, levels: Tensor, captions: Sequence[str]) -> Batch:
        codec = self._require_setup()
        tokens = codec.image.levels_to_tokens(levels.long())
        caps = codec.caption_ids(captions)
        return {"idx": tokens, "targets": codec.targets(caps, tokens), "cond": caps}

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        return self.to_batch(*self._train_examples(g, batch_size))

    def train_dataloader(self) -> BatchStream:
        self._require_setup()
        length = stream_length(self.trainer, max(1, 1000 // self.batch_size))
        if self._train_stream is None:
            self._train_stream = BatchStream(self.make_batch, batch_size=self.batch_size, length=length,
                                             seed=self.seed)
        self._train_stream.length = length
        return self._train_stream

    def _eval_batches(self, split: str) -> list[Batch]:
        self._require_setup()
        levels, captions = self.splits[split]
        b = self.eval_batch_size
        return [self.to_batch(levels[s:s + b], captions[s:s + b]) for s in range(0, len(captions), b)]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_batches("val"), batch_size=None)  # batches made once, served in order

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._eval_batches("test"), batch_size=None)


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


class ImageTextFolderDataModule(CaptionedImageDataModule):
    """Images with captions from a folder (same-named .txt files) or a CSV/JSONL index (`captions=`).

    Images are converted to `channels` and resized to height×width (bilinear), quantised to `levels`;
    a seeded random val_fraction/test_fraction of them form val/test. `skipped` lists (path, reason)
    for every image without a caption or that Pillow cannot read; one warning gives their count and
    first names. `on_error="raise"` instead stops at the first unreadable image with
    `UnreadableImageError` naming it (images without a caption are always skipped: that is how a
    folder marks what to leave out). Caption files are read as UTF-8; invalid bytes become U+FFFD
    and the files that had any are named in a warning. A broken index (bad JSON line, invalid
    UTF-8) is a ValueError naming the file and line.
    """

    name = "image_text_folder"
    IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

    def __init__(self, *, root: str | Path, captions: str | Path | None = None, height: int = 16, width: int = 16,
                 channels: int = 3, levels: int = 16, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 on_error: OnError = "skip", **kwargs: Any) -> None:
        if root is None:
            raise ValueError("image_text_folder needs root=<folder of images>")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self._bad_captions: list[Path] = []
        self.root = Path(root).expanduser()
        self.captions_file = Path(captions).expanduser() if captions else None
        self.height, self.width, self.channels, self.levels = height, width, channels, levels
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must be >= 0 with a sum < 1, got {val_fraction} "
                             f"and {test_fraction}")
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        kwargs.setdefault("num_eval", 1)
        super().__init__(**kwargs)
        self.image_codec()  # bad geometry fails here, before any work
        self.skipped: list[tuple[Path, str]] = []

    def _index(self) -> list[tuple[Path, str | None]]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image_text_folder: root={self.root} is not a folder")
        if self.captions_file is None:
            files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
            return [(p, self._caption_file(p.with_suffix(".txt"))) for p in files]
        path = self.captions_file
        if not path.is_file():
            raise FileNotFoundError(f"image_text_folder: captions={path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"captions={path} is not valid UTF-8 (byte {e.start}); save it as UTF-8") from e
        if path.suffix.lower() == ".jsonl":
            rows = []
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}, line {line_no}: not valid JSON ({e})") from e
        elif path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            raise ValueError(f"captions={path}: expected a .csv (columns path,caption) or .jsonl file")
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ValueError(f"{path}: row {i + 1} has no 'path' string (got {got})")
            caption = row.get("caption")
            out.append((self.root / row["path"], caption.strip() if isinstance(caption, str) else None))
        return out

    def _caption_file(self, path: Path) -> str | None:
        if not path.is_file():
            return None
        data = path.read_bytes()
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._bad_captions.append(path)
            return data.decode("utf-8", errors="replace").strip()

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            return self._read_or_raise(path)
        except UnreadableImageError:
            return None

    def _read_or_raise(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise UnreadableImageError(f"{path}: no such file")
        return read_image_file(path, height=self.height, width=self.width, channels=self.channels)

    def _prepare(self) -> list[str]:
        images, captions, self.skipped, self._bad_captions = [], [], [], []
        index = self._index()
        for path, caption in index:
            if not caption:
                self.skipped.append((path, "no caption"))
                continue
            try:
                arr = self._read_or_raise(path)
            except UnreadableImageError as e:
                if self.on_error == "raise":
                    raise UnreadableImageError(f"image_text_folder: {e} (on_error=raise; set data.on_error=skip to "
                                               "skip such files)") from e
                log.debug("image_text_folder: %s", e)
                self.skipped.append((path, "unreadable"))
                continue
            images.append(arr)
            captions.append(caption)
        if self._bad_captions:
            log.warning("image_text_folder: %d caption file(s) are not valid UTF-8 (bad bytes replaced by U+FFFD): %s",
                        len(self._bad_captions), ", ".join(str(p) for p in self._bad_captions[:10]))
        if self.skipped:
            n_none = sum(r == "no caption" for _, r in self.skipped)
            log_skipped("image_text_folder", f"({n_none} without a caption, {len(self.skipped) - n_none} unreadable)",
                        self.skipped, len(index), self.root, logger=log)
        if not images:
            raise ValueError(f"image_text_folder: no captioned readable images under {self.root} "
                             f"({len(self.skipped)} skipped)")
        levels = self.image_codec().quantize_uint(torch.from_numpy(np.stack(images)), 255).to(torch.uint8)
        train, val, test = stratified_split(torch.zeros(len(captions), dtype=torch.long),
                                            (self.val_fraction, self.test_fraction), self.split_seed)
        self.train = (levels[train], [captions[i] for i in train.tolist()])
        for name, idx in (("val", val), ("test", test)):
            self.splits[name] = (levels[idx], [captions[i] for i in idx.tolist()])
        return captions

    def _train_examples(self, g: torch.Generator, n: int) -> tuple[Tensor, list[str]]:
        levels, captions = self.train
        pick = torch.randint(0, len(captions), (n,), generator=g)
        return levels[pick], [captions[i] for i in pick.tolist()]
