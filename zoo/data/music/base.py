"""What every music dataset shares: pieces -> framed event sequences, training windows (with
augmentation hooks), evaluation windows, the by-name split and the conversion cache's file name.
The loaders are `zoo.data.base.StreamDataModule`'s; the rules are in the package docstring
(`zoo/data/music/__init__.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from zoo.codecs.base import IGNORE_INDEX, Codec
from zoo.data.base import Batch, StreamDataModule
from zoo.data.download import cache_root

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_CACHE_FORMAT = 1  # bump when the cached note layout changes, so old caches are not reused
_SKIP_WARNINGS = 10  # skipped files named one by one (and in the summary); the rest only counted


def split_by_name(names: Sequence[str], val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Deterministic split of pieces by name (rule in the module docstring); sorted indices per split."""
    n = len(names)
    order = sorted(range(n), key=lambda i: hashlib.sha256(names[i].encode()).hexdigest())
    n_val = min(max(round(val_fraction * n), int(val_fraction > 0)), max(n - 1, 0))
    n_test = min(max(round(test_fraction * n), int(test_fraction > 0)), max(n - n_val - 1, 0))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {k: sorted(v) for k, v in parts.items()}


class MusicDataModule(StreamDataModule):
    """Shared loop: subclasses load pieces (`_load_splits`) and say how to encode/augment one.

    After `setup()`: `names[split]` and `pieces[split]` (piece objects: note arrays (N, 4) or
    grids (steps, 4)), `sequences[split]` (int64 arrays BOS + events + EOS, un-augmented). `codec`
    exists from construction on (its options are validated there).
    """

    name: ClassVar[str] = "music"
    crop_stride: ClassVar[int] = 1  # training windows start at multiples of this (JSB: a whole step)

    def __init__(
        self,
        *,
        block_size: int = 512,
        batch_size: int = 16,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        augment: bool = True,
        transpose_range: int = 3,
        stretch_range: tuple[float, float] = (0.95, 1.05),
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        codec: Mapping[str, Any] | Codec | str | None = None,
        max_val_windows: int | None = None,
    ) -> None:
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} and {batch_size}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must be >= 0 with a sum < 1, got {val_fraction} "
                             f"and {test_fraction}")
        if transpose_range < 0:
            raise ValueError(f"transpose_range must be >= 0 semitones, got {transpose_range}")
        stretch_range = tuple(float(s) for s in stretch_range)
        if len(stretch_range) != 2 or not 0 < stretch_range[0] <= stretch_range[1]:
            raise ValueError(f"stretch_range must be (low, high) with 0 < low <= high, got {stretch_range}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if max_val_windows is not None and max_val_windows < 1:
            raise ValueError(f"max_val_windows must be >= 1 or None (all), got {max_val_windows}")
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.block_size, self.val_fraction, self.test_fraction = block_size, val_fraction, test_fraction
        self.augment, self.transpose_range, self.stretch_range = augment, int(transpose_range), stretch_range
        self.cache_dir, self.max_val_windows = cache_dir, max_val_windows
        self.codec = self._make_codec(codec)
        self.names: dict[str, list[str]] = {}
        self.pieces: dict[str, list[Any]] = {}
        self.sequences: dict[str, list[np.ndarray]] = {}
        self.skipped_files: list[str] = []
        self.skip_reasons: dict[str, str] = {}
        self._train_weights: torch.Tensor | None = None

    # -------------------------------------------------------------- subclass hooks
    def _make_codec(self, options: Mapping[str, Any] | Codec | None) -> Codec:
        raise NotImplementedError

    def _load_splits(self) -> dict[str, tuple[list[str], list[Any]]]:
        """{split: (names, pieces)} for every split in SPLITS (lists may be empty except train)."""
        raise NotImplementedError

    def _encode(self, piece: Any) -> np.ndarray:
        """One piece -> its event ids (no BOS/EOS)."""
        raise NotImplementedError

    def _augmented_ids(self, index: int, g: torch.Generator) -> np.ndarray:
        """Training piece `index`, augmented with randomness from `g`, as event ids (no BOS/EOS)."""
        raise NotImplementedError

    def _cond(self, split: str, index: int) -> int | None:
        """The condition (a class id) of piece `index` of `split`, served as `cond` beside its windows (the
        training batches' (B,), each evaluation window's scalar); None (the default): unconditional data, the
        batches hold no `cond`."""
        return None

    # -------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        self._load_splits()  # downloads / converts once and fills the cache (local rank 0 only)

    def setup(self, stage: str | None = None) -> None:
        if self.sequences:
            return  # idempotent: Lightning calls setup once per stage
        splits = self._load_splits()
        if not splits["train"][1]:
            raise ValueError(f"{self.name}: the training split is empty")
        for split in SPLITS:
            names, pieces = splits[split]
            self.names[split], self.pieces[split] = list(names), list(pieces)
            self.sequences[split] = [self._frame(self._encode(p)) for p in pieces]
        lengths = [len(s) for s in self.sequences["train"]]
        self._train_weights = torch.tensor(lengths, dtype=torch.float64)
        log.info("%s: %s pieces (train/val/test), %d training tokens, vocab %d", self.name,
                 "/".join(str(len(self.pieces[s])) for s in SPLITS), sum(lengths), self.codec.vocab_size)

    def _frame(self, ids: np.ndarray) -> np.ndarray:
        return np.concatenate([[self.codec.bos_id], np.asarray(ids, dtype=np.int64), [self.codec.eos_id]])

    def is_setup(self) -> bool:
        return bool(self.sequences)  # the codec exists from construction on

    # -------------------------------------------------------------- batches
    def _window(self, seq: np.ndarray, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """idx/targets (block_size,) from seq[start : start + block_size + 1], padded at the end."""
        w = torch.as_tensor(seq[start:start + self.block_size + 1], dtype=torch.long)
        idx = torch.full((self.block_size,), self.codec.pad_id, dtype=torch.long)
        targets = torch.full((self.block_size,), IGNORE_INDEX, dtype=torch.long)
        idx[:len(w) - 1], targets[:len(w) - 1] = w[:-1], w[1:]
        return idx, targets

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        """`batch_size` training windows drawn with `g` (the BatchStream contract; see module doc), with their
        pieces' `cond` (B,) when the data is conditional (`_cond`)."""
        self._require_setup()
        picks = torch.multinomial(self._train_weights, batch_size, replacement=True, generator=g).tolist()
        rows = [self._window(self._train_tokens(i, g), 0) for i in picks]
        batch = {"idx": torch.stack([r[0] for r in rows]), "targets": torch.stack([r[1] for r in rows])}
        conds = [self._cond("train", i) for i in picks]
        if conds and conds[0] is not None:
            batch["cond"] = torch.tensor(conds, dtype=torch.long)
        return batch

    def _crop_start(self, length: int, g: torch.Generator) -> int:
        """A random window start in a sequence of `length`, a multiple of `crop_stride`.

        The last start may leave the window short (padded), so that the end of a piece (EOS) is
        reachable even when the stride does not divide the length.
        """
        n_starts = -(-max(length - self.block_size - 1, 0) // self.crop_stride) + 1
        return self.crop_stride * int(torch.randint(n_starts, (1,), generator=g))

    def _train_tokens(self, index: int, g: torch.Generator) -> np.ndarray:
        """Up to block_size + 1 consecutive tokens of training piece `index`, augmented if `augment`."""
        seq = self._frame(self._augmented_ids(index, g)) if self.augment else self.sequences["train"][index]
        start = self._crop_start(len(seq), g)
        return seq[start:start + self.block_size + 1]

    def eval_windows(self, split: str) -> list[Batch]:
        """Consecutive un-augmented windows of every piece of `split` (stride block_size), each with its piece's
        `cond` when the data is conditional (`_cond`)."""
        self._require_setup()
        out = []
        for i, seq in enumerate(self.sequences[split]):
            cond = self._cond(split, i)
            for start in range(0, len(seq) - 1, self.block_size):
                idx, targets = self._window(seq, start)
                window = {"idx": idx, "targets": targets}
                if cond is not None:
                    window["cond"] = torch.tensor(cond, dtype=torch.long)
                out.append(window)
        return out

    # -------------------------------------------------------------- what the shared loaders serve
    def batches_per_pass(self) -> int:
        return int(self._train_weights.sum()) // (self.batch_size * self.block_size)

    def eval_dataset(self, split: str) -> list[Batch]:
        return self.eval_windows(split)[:self.max_val_windows]

    # -------------------------------------------------------------- helpers for subclasses
    def _cache_file(self, key: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, **key}, sort_keys=True).encode()).hexdigest()
        return cache_root(self.cache_dir) / "music" / f"{self.name}-{digest[:16]}.npz"

    def _record_skips(self, skipped: Mapping[str, str], total: int) -> None:
        self.skipped_files = list(skipped)
        self.skip_reasons = dict(skipped)
        if skipped:
            listing = "; ".join(f"{name} ({why})" for name, why in list(skipped.items())[:_SKIP_WARNINGS])
            extra = len(skipped) - _SKIP_WARNINGS
            more = f"; and {extra} more (see skipped_files)" if extra > 0 else ""
            log.warning("%s: skipped %d of %d files: %s%s", self.name, len(skipped), total, listing, more)
