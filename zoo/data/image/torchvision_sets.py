"""torchvision's MNIST, Fashion-MNIST and CIFAR-10 with their official splits, downloaded (md5-checked
by torchvision) into the zoo cache.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from zoo.data.download import cache_root
from zoo.data.image.base import ImageDataModule, RawImages


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
