"""Any folder of images (sub-folders = classes), and the Pillow reader that `zoo.data.text_image`
shares: unreadable files are skipped and counted or stop the run (`on_error`), mismatched sizes are
resized or rejected (`on_mismatch`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from zoo.data.image.base import ImageDataModule, RawImages

log = logging.getLogger(__name__)


_MODES = {1: "L", 3: "RGB"}


class ImageMismatchError(ValueError):
    """An image's size or channel count differs from the configured one (on_mismatch='reject')."""


class UnreadableImageError(ValueError):
    """A file in an image folder that Pillow cannot decode (not an image, truncated, corrupt)."""


OnError = Literal["skip", "raise"]


def _channel_count(img: Any) -> int:
    if img.mode == "P":
        return 4 if "transparency" in img.info else 3
    return len(img.getbands())


def read_image_file(path: Path, *, height: int, width: int, channels: int,
                    on_mismatch: Literal["resize", "reject"] = "resize") -> np.ndarray:
    """One image file -> (channels, height, width) uint8.

    Raises `UnreadableImageError` naming the file and Pillow's complaint for anything Pillow cannot
    decode (whatever it raises: fuzzing shows OSError, ValueError, SyntaxError, EOFError, struct.error,
    IndexError, ... and DecompressionBombError for images above Pillow's pixel limit), and
    `ImageMismatchError` for a size/channel mismatch when `on_mismatch="reject"`. Pillow's warnings
    about corrupt metadata are logged at DEBUG level, not shown.
    """
    from PIL import Image

    expected = (width, height)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as img:
                img.load()
                size, mode, nch = img.size, img.mode, _channel_count(img)
                if (size != expected or nch != channels) and on_mismatch == "reject":
                    raise ImageMismatchError(
                        f"{path} is {size[0]}x{size[1]} mode {mode} ({nch} channels); expected {width}x{height} "
                        f"with {channels} channel(s) ({_MODES[channels]}). Use on_mismatch='resize' to convert it"
                    )
                img = _to_mode(img, _MODES[channels])
                if img.size != expected:
                    img = img.resize(expected, Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except ImageMismatchError:
        raise
    except MemoryError as e:
        raise UnreadableImageError(f"{path}: not a readable image (too large to decode in memory)") from e
    except Exception as e:  # noqa: BLE001 - any decoder failure on user bytes is "unreadable", never a crash
        raise UnreadableImageError(f"{path}: not a readable image ({type(e).__name__}: {e or 'no detail'})") from e
    for w in caught:
        log.debug("%s: %s", path, w.message)
    if arr.shape[:2] != (height, width):  # e.g. a palette image that converted to an unexpected layout
        raise UnreadableImageError(f"{path}: decoded to shape {arr.shape}, expected {height}x{width}")
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def log_skipped(source: str, what: str, skipped: list[tuple[Path, str]], total: int, root: Path,
                logger: logging.Logger = log) -> None:
    """One warning for all skipped files: the count, the total, and the first few names with reasons."""
    if not skipped:
        return
    shown = "; ".join(f"{_relative(p, root)} ({why})" for p, why in skipped[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    logger.warning("%s: skipped %d %s of %d file(s) under %s: %s%s", source, len(skipped), what, total, root, shown,
                   more)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images. With sub-folders, each sub-folder is a class (sorted names -> ids 0..K−1)
    and its images (searched recursively) belong to it; without, all images are one unlabeled set.

    Every file is tried with Pillow (hidden files are ignored). A file Pillow cannot read (not an
    image, truncated, corrupt) is skipped with `on_error="skip"` (the default: a scraped folder
    nearly always holds a stray .txt or .DS_Store; the skips are listed in `skipped_files` and one
    warning gives their count and first names) or stops the run with `UnreadableImageError` naming
    the file with `on_error="raise"`. Images whose size or channel count differs from (height,
    width, channels) are resized (bilinear, aspect ratio not kept) and converted (transparency
    composited over black) with `on_mismatch="resize"`, or rejected with `ImageMismatchError`
    naming the file with `on_mismatch="reject"`.
    """

    name = "image_folder"

    def __init__(
        self,
        *,
        root: str | Path,
        height: int = 32,
        width: int = 32,
        channels: int = 3,
        on_mismatch: Literal["resize", "reject"] = "resize",
        on_error: OnError = "skip",
        levels: int = 256,
        patch_size: int = 4,
        **kwargs: Any,
    ) -> None:
        if root is None:
            raise ValueError("image_folder needs root=<folder of images>")
        if on_mismatch not in ("resize", "reject"):
            raise ValueError(f"on_mismatch must be 'resize' or 'reject', got {on_mismatch!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.height, self.width, self.channels = height, width, channels
        super().__init__(root=root, levels=levels, patch_size=patch_size, **kwargs)
        self.on_mismatch, self.on_error = on_mismatch, on_error
        self.skipped_files: list[Path] = []
        self.skip_reasons: dict[Path, str] = {}

    def _scan(self) -> tuple[list[tuple[Path, int]], list[str]]:
        root = self.root
        assert root is not None
        if not root.is_dir():
            raise FileNotFoundError(f"image_folder: root={root} is not a folder")
        visible = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        class_dirs = [p for p in visible if p.is_dir()]
        if not class_dirs:
            return [(p, 0) for p in visible if p.is_file()], []
        loose = [p for p in visible if p.is_file()]
        if loose:
            log.warning("image_folder: %d file(s) at the top of %s ignored (images belong in class "
                        "sub-folders): %s", len(loose), root, ", ".join(p.name for p in loose[:10]))
        files = []
        for label, d in enumerate(class_dirs):
            files += [(p, label) for p in sorted(d.rglob("*"))
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)]
        return files, [d.name for d in class_dirs]

    def _read(self, path: Path) -> np.ndarray | None:
        """(C, H, W) uint8, or None if Pillow cannot read it; raises on a mismatch in reject mode."""
        try:
            return read_image_file(path, height=self.height, width=self.width, channels=self.channels,
                                   on_mismatch=self.on_mismatch)
        except UnreadableImageError as e:
            log.debug("image_folder: %s", e)
            return None

    def _load(self) -> tuple[RawImages, None, list[str]]:
        files, class_names = self._scan()
        images, labels, skipped = [], [], []
        for path, label in files:
            try:
                arr = read_image_file(path, height=self.height, width=self.width, channels=self.channels,
                                      on_mismatch=self.on_mismatch)
            except UnreadableImageError as e:
                if self.on_error == "raise":
                    raise UnreadableImageError(f"image_folder: {e} (on_error=raise; set data.on_error=skip to "
                                               "skip such files)") from e
                skipped.append((path, str(e).removeprefix(f"{path}: ")))
            else:
                images.append(arr)
                labels.append(label)
        self.skipped_files = [p for p, _ in skipped]
        self.skip_reasons = dict(skipped)
        log_skipped("image_folder", "unreadable", skipped, len(files), self.root)
        if not images:
            raise ValueError(f"image_folder: no readable images under {self.root} ({len(skipped)} skipped)")
        counts = np.bincount(labels, minlength=max(len(class_names), 1))
        for name, n in zip(class_names, counts):
            if n == 0:
                log.warning("image_folder: class folder %r holds no readable image", name)
        pixels = torch.from_numpy(np.stack(images))
        return RawImages(pixels, torch.tensor(labels, dtype=torch.long)), None, class_names


def _to_mode(img: Any, mode: str) -> Any:
    """Convert to L or RGB: 16-bit grey scaled to 8 bits, transparency composited over black."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow clips (rather than scales) 16-bit values when converting to L; 16-bit PNGs open as
        # I;16 or I depending on the Pillow version, so an I image with values above 255 is 16-bit
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode != "I" or arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(np.round(arr / scale), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img if img.mode == mode else img.convert(mode)
