"""Captioned images from a folder: same-named .txt captions, or a CSV/JSONL index (`captions=`)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.data.image import OnError, UnreadableImageError, log_skipped, read_image_file, stratified_split
from zoo.data.text_image.base import CaptionedImageDataModule

log = logging.getLogger(__name__)


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
