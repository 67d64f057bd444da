"""`StreamingTextDataModule`: train from prepared corpora with litdata's stateful streaming loader."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.codecs.text import TEXT_CODECS, TextCodec
from zoo.data.streaming.common import (
    Batch,
    CodecKind,
    is_url,
    litdata,
    load_manifest,
    log,
)


# ------------------------------------------------------------------------------------ data module
def _to_batch(windows: list[Any]) -> Batch:
    w = torch.stack([torch.as_tensor(np.asarray(x).astype(np.int64)) for x in windows])  # (B, T + 1)
    return {"idx": w[:, :-1], "targets": w[:, 1:]}


class StreamingTextDataModule(L.LightningDataModule):
    """Text prepared by `zoo-prepare`, streamed from litdata chunks (local folder or cloud URL).

    `path`: one prepared folder/URL, or a list of them mixed by `weights` (same codec required).
    `codec` / `vocab_size`: the codec the run expects (null = whatever was prepared); a prepared
    corpus with another one is refused. Batches: `idx`, `targets` (batch_size, block_size) int64.
    Validation: the first `max_val_windows` non-overlapping windows of each corpus's val split.
    """

    name = "streaming"

    def __init__(
        self,
        path: str | list[str],
        block_size: int,
        batch_size: int,
        weights: list[float] | None = None,
        codec: CodecKind | None = None,
        vocab_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        max_val_windows: int | None = 64,
        cache_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        paths = [path] if isinstance(path, str) else list(path)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(f"path must be a prepared folder/URL or a list of them, got {path!r}")
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} and {batch_size}")
        if weights is not None and (len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(paths)} non-negative numbers (one per path) with a positive "
                             f"sum, got {weights!r}")
        if codec is not None and codec not in TEXT_CODECS:
            raise ValueError(f"codec must be {', '.join(map(repr, TEXT_CODECS))} or null, got {codec!r}")
        self.paths = [p.rstrip("/") for p in paths]
        self.block_size, self.batch_size, self.weights = block_size, batch_size, weights
        self.expected_codec, self.expected_vocab = codec, vocab_size
        self.seed, self.shuffle, self.num_workers = seed, shuffle, num_workers
        self.max_val_windows, self.cache_dir, self.storage_options = max_val_windows, cache_dir, storage_options or {}
        self.codec: TextCodec | None = None
        self.manifests: list[dict[str, Any]] = []
        self.sample_prompts: list[str] = []
        self._train_loader: Any = None
        self._val_windows: list[Batch] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.codec is not None:
            return
        loaded = [load_manifest(p, self.storage_options) for p in self.paths]
        self.manifests = [m for m, _ in loaded]
        codec = loaded[0][1]
        for p, (_, other) in zip(self.paths[1:], loaded[1:]):
            if other.to_dict() != codec.to_dict():
                raise ValueError(f"corpora to mix must share one codec: {self.paths[0]!r} has {codec.type_name} "
                                 f"(vocab {codec.vocab_size}), {p!r} has {other.type_name} (vocab {other.vocab_size})"
                                 f"; prepare it with codec_from={self.paths[0]}")
        if self.expected_codec is not None and codec.type_name != self.expected_codec:
            raise ValueError(f"data.codec={self.expected_codec!r} but {self.paths[0]!r} was prepared with the "
                             f"{codec.type_name!r} codec; set data.codec=null or prepare again")
        if self.expected_vocab is not None and codec.vocab_size != self.expected_vocab:
            raise ValueError(f"data.vocab_size={self.expected_vocab} but {self.paths[0]!r} was prepared with a "
                             f"vocabulary of {codec.vocab_size}; set data.vocab_size=null or prepare again")
        self.codec = codec
        self.sample_prompts = self._prompts()
        log.info("streaming: %s, %d training tokens, codec %s (vocab %d)", ", ".join(self.paths),
                 sum(m["train_tokens"] for m in self.manifests), codec.type_name, codec.vocab_size)

    def _dataset(self, folder: str, *, shuffle: bool) -> Any:
        ld = litdata()
        from zoo.data.streaming.verify import VerifiedTokensLoader  # imports litdata: only once it is known there

        cache = None if self.cache_dir is None or not is_url(folder) else os.path.join(
            self.cache_dir, hashlib.sha256(folder.encode()).hexdigest()[:16])
        corpus, split = folder.rsplit("/", 1)
        sums = self.manifests[self.paths.index(corpus)].get("chunks", {}).get(split)
        loader = ld.TokensLoader(block_size=self.block_size + 1) if is_url(folder) or sums is None else \
            VerifiedTokensLoader(self.block_size + 1, sums)  # a corrupt chunk is an error naming it, not a bad batch
        return ld.StreamingDataset(folder, cache_dir=cache, item_loader=loader,
                                shuffle=shuffle, seed=self.seed, drop_last=True,
                                storage_options=self.storage_options)

    def train_dataloader(self) -> Any:
        """One stateful loader per run (Lightning saves and restores its position in checkpoints)."""
        ld = litdata()
        if self.codec is None:
            raise RuntimeError("StreamingTextDataModule: call setup() before the dataloaders")
        if self._train_loader is None:
            sets = [self._dataset(f"{p}/train", shuffle=self.shuffle) for p in self.paths]
            dataset = sets[0] if len(sets) == 1 else ld.CombinedStreamingDataset(
                sets, seed=self.seed, weights=self.weights, iterate_over_all=False)
            self._train_loader = ld.StreamingDataLoader(dataset, batch_size=self.batch_size, collate_fn=_to_batch,
                                                        num_workers=self.num_workers, drop_last=True)
        return self._train_loader

    def val_windows(self) -> list[Batch]:
        if self._val_windows is None:
            windows = []
            for p, m in zip(self.paths, self.manifests):
                if m["val_tokens"] < self.block_size + 1:
                    continue
                ds = self._dataset(f"{p}/val", shuffle=False)
                n = len(ds) if self.max_val_windows is None else min(len(ds), self.max_val_windows)
                for i in range(n):
                    w = torch.as_tensor(np.asarray(ds[i]).astype(np.int64))
                    windows.append({"idx": w[:-1], "targets": w[1:]})
            self._val_windows = windows
        return self._val_windows

    def val_dataloader(self) -> DataLoader | list:
        windows = self.val_windows()
        if not windows:
            return []  # no validation split long enough for one window
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def _prompts(self, n: int = 4) -> list[str]:
        """Up to `n` prompts: the first words of lines near the start of the validation text."""
        assert self.codec is not None
        windows = self.val_windows()[:4]
        ids = [t for w in windows for t in w["idx"].tolist() if t != self.codec.eos_id]
        lines = self.codec.decode(ids).split("\n")[1:-1]
        found: list[str] = []
        for line in lines:
            m = re.match(r"\S+(?:[ \t]+\S+){0,3}", line.strip())
            words = m.group()[:40] if m else ""
            if len(words) >= 8 and any(c.isalpha() for c in words) and words not in found:
                found.append(words)
        return [found[i * len(found) // n] for i in range(min(n, len(found)))]

