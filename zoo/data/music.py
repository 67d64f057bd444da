"""Music datamodules: Bach chorales (embedded default), JSB Chorales grid, MAESTRO, any MIDI folder.

Every module serves the same batches (`zoo.data.base`): `idx` and `targets`, (batch_size,
block_size) int64, targets = the next token, -100 where the piece ran out (a piece shorter than the
block, or a window at its end; `idx` there holds the codec's PAD id). Each piece is one sequence
BOS + events + EOS. `codec` takes the codec's options (a dict) or a ready codec of the right type.

Training batches come from one resumable `BatchStream`: a piece is drawn with probability
proportional to its length, then a random window of block_size + 1 tokens. With `augment=True` the
piece is first transposed by a whole number of semitones drawn from ±`transpose_range` (only shifts
that keep every note inside the codec's range are drawn, so no note is ever lost) and, for
performance-event data, time-stretched by a factor drawn uniformly from `stretch_range`, both
applied to the note list before encoding. All randomness comes from the stream's generator: batch b
is a pure function of (seed, b). Validation and test never augment: every piece is cut into
consecutive windows (stride block_size, the last one padded), so each token after BOS is predicted
exactly once and the loss is a deterministic per-token NLL. `max_val_windows` (for quick runs)
caps the validation and test loaders at their first windows in that order; None = all.

Splits: `maestro` and `jsb_chorales` keep their official splits; `bach_chorales` and `midi_folder`
split by file: the files sorted by the sha256 of their name (path relative to the folder), the first
round(val_fraction·n) to val, the next round(test_fraction·n) to test (each at least one file when
its fraction is > 0 and enough files exist; train always keeps one), the rest to train. The split
depends only on the set of names, never on `seed`.

Notes extracted from MIDI (bach_chorales, midi_folder, maestro) are cached once in
`<cache_dir>/music/<name>-<key>.npz` (numpy arrays only, loaded without pickle), keyed by the file
list (with sizes and modification times) and the codec's options, so later runs skip parsing.
Unreadable files (not MIDI, truncated, corrupt, no notes) are skipped with a warning naming each, a
summary count, and `skipped_files` when `on_error="skip"` (the default: a MIDI collection scraped
from the web nearly always holds a few broken files, and one should not cost a day of training), or
stop the run with a `MidiError` naming the first such file when `on_error="raise"` (for curated data,
where a broken file is a bug to fix).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.codecs.base import IGNORE_INDEX, Codec
from zoo.codecs.jsb import JSBGridCodec, grid_array
from zoo.codecs.midi import (
    END,
    PITCH,
    START,
    MidiError,
    PerformanceCodec,
    load_midi,
    midi_from_bytes,
    stretch_notes,
    transpose_notes,
)
from zoo.data.base import Batch, BatchStream, stream_length
from zoo.data.download import cache_root, download, need

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_CACHE_FORMAT = 1  # bump when the cached note layout changes, so old caches are not reused
_SKIP_WARNINGS = 10  # skipped files named one by one (and in the summary); the rest only counted

JSB_URL = "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master/Jsb16thSeparated.json"
JSB_SHA256 = "79294cc374f9252e95ef4b703161524c1c53dc1f712c236f00f1c1f5d54af5a7"
_MARGIN_SECONDS = 1.0  # context kept around a training window when re-encoding part of a long piece
_BACH_SUFFIXES = (".mxl", ".krn", ".xml")  # the chorales; the corpus's .rntxt files are harmonic analyses


def split_by_name(names: Sequence[str], val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Deterministic split of pieces by name (rule in the module docstring); sorted indices per split."""
    n = len(names)
    order = sorted(range(n), key=lambda i: hashlib.sha256(names[i].encode()).hexdigest())
    n_val = min(max(round(val_fraction * n), int(val_fraction > 0)), max(n - 1, 0))
    n_test = min(max(round(test_fraction * n), int(test_fraction > 0)), max(n - n_val - 1, 0))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {k: sorted(v) for k, v in parts.items()}


class MusicDataModule(L.LightningDataModule):
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
        codec: Mapping[str, Any] | Codec | None = None,
        max_val_windows: int | None = None,
    ) -> None:
        super().__init__()
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
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.augment, self.transpose_range, self.stretch_range = augment, int(transpose_range), stretch_range
        self.cache_dir, self.num_workers, self.max_val_windows = cache_dir, num_workers, max_val_windows
        self.codec = self._make_codec(codec)
        self.names: dict[str, list[str]] = {}
        self.pieces: dict[str, list[Any]] = {}
        self.sequences: dict[str, list[np.ndarray]] = {}
        self.skipped_files: list[str] = []
        self.skip_reasons: dict[str, str] = {}
        self._train_weights: torch.Tensor | None = None
        self._train_stream: BatchStream | None = None

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

    def _require_setup(self) -> None:
        if not self.sequences:
            raise RuntimeError(f"{type(self).__name__}: call setup() before using the data")

    # -------------------------------------------------------------- batches
    def _window(self, seq: np.ndarray, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """idx/targets (block_size,) from seq[start : start + block_size + 1], padded at the end."""
        w = torch.as_tensor(seq[start:start + self.block_size + 1], dtype=torch.long)
        idx = torch.full((self.block_size,), self.codec.pad_id, dtype=torch.long)
        targets = torch.full((self.block_size,), IGNORE_INDEX, dtype=torch.long)
        idx[:len(w) - 1], targets[:len(w) - 1] = w[:-1], w[1:]
        return idx, targets

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        """`batch_size` training windows drawn with `g` (the BatchStream contract; see module doc)."""
        self._require_setup()
        picks = torch.multinomial(self._train_weights, batch_size, replacement=True, generator=g).tolist()
        rows = [self._window(self._train_tokens(i, g), 0) for i in picks]
        return {"idx": torch.stack([r[0] for r in rows]), "targets": torch.stack([r[1] for r in rows])}

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
        """Consecutive un-augmented windows of every piece of `split` (stride block_size)."""
        self._require_setup()
        out = []
        for seq in self.sequences[split]:
            for start in range(0, len(seq) - 1, self.block_size):
                idx, targets = self._window(seq, start)
                out.append({"idx": idx, "targets": targets})
        return out

    # -------------------------------------------------------------- loaders
    def train_dataloader(self) -> BatchStream:
        """The same resumable stream on every call; its length follows the attached trainer."""
        self._require_setup()
        length = stream_length(self.trainer, int(self._train_weights.sum()) // (self.batch_size * self.block_size))
        if self._train_stream is None:
            self._train_stream = BatchStream(self.make_batch, batch_size=self.batch_size, length=length,
                                             seed=self.seed)
        self._train_stream.length = length
        return self._train_stream

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.eval_windows("val")[:self.max_val_windows], batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.eval_windows("test")[:self.max_val_windows], batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

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


# ================================================================== performance events (MIDI)
class PerformanceDataModule(MusicDataModule):
    """MIDI-derived pieces: note arrays (N, 4) encoded by `PerformanceCodec` (options via `codec`)."""

    codec: PerformanceCodec

    def __init__(self, *, max_files: int | None = None, on_error: Literal["skip", "raise"] = "skip",
                 **kwargs: Any) -> None:
        if max_files is not None and max_files < 1:
            raise ValueError(f"max_files must be >= 1 or None, got {max_files}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.max_files, self.on_error = max_files, on_error
        super().__init__(**kwargs)
        self._loaded: dict[str, tuple[list[str], list[np.ndarray]]] | None = None
        self._train_steps: list[np.ndarray] = []

    def _make_codec(self, options: Mapping[str, Any] | Codec | None) -> Codec:
        if isinstance(options, PerformanceCodec):
            return options
        if isinstance(options, Codec):
            raise ValueError(f"{self.name} needs a PerformanceCodec (or its options), got {type(options).__name__}")
        return PerformanceCodec(**dict(options or {}))

    def _encode(self, piece: np.ndarray) -> np.ndarray:
        return self.codec.encode_notes(piece)

    def setup(self, stage: str | None = None) -> None:
        if self.sequences:
            return
        super().setup(stage)
        # time step of every framed training token (BOS at 0, EOS at the end), for windowed re-encoding
        self._train_steps = []
        for notes in self.pieces["train"]:
            steps = self.codec.encode_notes(notes, return_times=True)[1]
            self._train_steps.append(np.concatenate([[0], steps, [steps[-1]]]).astype(np.int32))

    def _draw_augmentation(self, notes: np.ndarray, g: torch.Generator) -> tuple[int, float]:
        """A transposition that keeps every note in 0..127 and a stretch factor, drawn from `g`."""
        r = self.transpose_range
        lo = max(-r, -int(notes[:, PITCH].min())) if len(notes) else -r
        hi = min(r, 127 - int(notes[:, PITCH].max())) if len(notes) else r
        shift = int(torch.randint(lo, hi + 1, (1,), generator=g))
        a, b = self.stretch_range
        return shift, a + (b - a) * float(torch.rand((), generator=g, dtype=torch.float64))

    def _augmented_ids(self, index: int, g: torch.Generator) -> np.ndarray:
        notes = self.pieces["train"][index]
        shift, factor = self._draw_augmentation(notes, g)
        return self.codec.encode_notes(stretch_notes(transpose_notes(notes, shift), factor))

    def _train_tokens(self, index: int, g: torch.Generator) -> np.ndarray:
        """As the base class, but a long piece (MAESTRO: ~10^4 notes) is not re-encoded whole.

        The window is placed on the un-augmented sequence; only the notes sounding within
        `_MARGIN_SECONDS` of its time span are augmented and encoded, and the window is cut from
        that at the same (stretched) time. Events near the window differ from a crop of the whole
        augmented piece only when no note starts within the margin before the window (then its first
        VELOCITY or TIME_SHIFT event may differ): a valid event sequence either way.
        """
        seq = self.sequences["train"][index]
        if not self.augment or len(seq) <= 4 * (self.block_size + 1):
            return super()._train_tokens(index, g)
        start = self._crop_start(len(seq), g)
        steps, notes, sps = self._train_steps[index], self.pieces["train"][index], self.codec.steps_per_second
        t_a = steps[start] / sps
        t_b = steps[min(start + 2 * (self.block_size + 1), len(seq) - 1)] / sps  # 2x: stretch changes counts
        near = notes[(notes[:, START] < t_b + _MARGIN_SECONDS) & (notes[:, END] > t_a - _MARGIN_SECONDS)]
        shift, factor = self._draw_augmentation(notes, g)
        ids, times = self.codec.encode_notes(stretch_notes(transpose_notes(near, shift), factor), return_times=True)
        if start == 0:
            ids, first = np.concatenate([[self.codec.bos_id], ids]), 0
        else:
            first = int(np.searchsorted(times, np.floor(factor * t_a * sps + 0.5)))
        if len(near) and not (notes[:, START] >= t_b + _MARGIN_SECONDS).any():
            ids = np.concatenate([ids, [self.codec.eos_id]])  # the window reaches the end of the piece
        return ids[first:first + self.block_size + 1]

    def _files(self) -> list[tuple[str, Path, str]]:
        """(name, path, split or "") for every candidate file, in a fixed order (subclasses)."""
        raise NotImplementedError

    def _convert(self, path: Path) -> np.ndarray:
        """One file -> note array; raise MidiError (or any exception) to skip it."""
        return self.codec.extract_notes(load_midi(path))

    def _load_splits(self) -> dict[str, tuple[list[str], list[np.ndarray]]]:
        if self._loaded is None:
            files = self._files()
            names, notes, splits = self._cached_notes(files)
            by_split: dict[str, tuple[list[str], list[np.ndarray]]] = {s: ([], []) for s in SPLITS}
            if all(s == "" for s in splits):
                for split, indices in split_by_name(names, self.val_fraction, self.test_fraction).items():
                    by_split[split] = ([names[i] for i in indices], [notes[i] for i in indices])
            else:
                for name, n, split in zip(names, notes, splits):
                    by_split[split][0].append(name)
                    by_split[split][1].append(n)
            self._loaded = by_split
        return self._loaded

    def _cached_notes(self, files: list[tuple[str, Path, str]]) -> tuple[list[str], list[np.ndarray], list[str]]:
        """Convert every file once (or read the cache): names, note arrays, splits of the usable ones."""
        key = {
            "files": [(name, split, *_file_stamp(path)) for name, path, split in files],
            "source": self._source(), "codec": self.codec.to_dict(), "extra": self._cache_extra(),
        }
        path = self._cache_file(key)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                names, splits = z["names"].tolist(), z["splits"].tolist()
                bounds = z["offsets"]
                notes = [z["notes"][bounds[i]:bounds[i + 1]] for i in range(len(names))]
                skipped = dict(zip(z["skipped"].tolist(), z["skip_reasons"].tolist()))
            log.info("%s: %d pieces read from cache %s", self.name, len(names), path)
        else:
            names, notes, splits, skipped = [], [], [], {}
            started = time.monotonic()
            log.info("%s: reading %d files (once; the notes are cached in %s)", self.name, len(files), path)
            for k, (name, file, split) in enumerate(files, 1):
                try:
                    n = self._convert(file)
                    if len(n) == 0:
                        raise MidiError("no notes left (drum tracks are dropped; see the codec's programs/"
                                        "instruments options)")
                except Exception as e:  # a file we cannot use is skipped (or named, with on_error=raise)
                    why = str(e).removeprefix(f"{file}: ")
                    if self.on_error == "raise":
                        raise MidiError(f"{self.name}: cannot use {file}: {why} (on_error=raise; set "
                                        "data.on_error=skip to skip such files)") from e
                    # the first few individually; the summary below counts them all
                    log.log(logging.WARNING if len(skipped) < _SKIP_WARNINGS else logging.DEBUG,
                            "%s: skipping %s: %s", self.name, name, why)
                    skipped[name] = why
                else:
                    names.append(name)
                    notes.append(n)
                    splits.append(split)
                if k % 50 == 0 or k == len(files):
                    log.info("%s: %d/%d files read (%.0f s)", self.name, k, len(files), time.monotonic() - started)
            if names:
                _save_npz(path, names=np.array(names, dtype=str), splits=np.array(splits, dtype=str),
                          offsets=np.cumsum([0] + [len(n) for n in notes]),
                          notes=np.concatenate(notes).astype(np.float64),
                          skipped=np.array(list(skipped), dtype=str),
                          skip_reasons=np.array(list(skipped.values()), dtype=str))
        if skipped and self.on_error == "raise":  # the cache remembers files skipped by an earlier run
            name, why = next(iter(skipped.items()))
            raise MidiError(f"{self.name}: cannot use {name}: {why} (on_error=raise; set data.on_error=skip to "
                            f"skip such files; {len(skipped)} file(s) affected)")
        self._record_skips(skipped, len(files))
        if not names:
            raise ValueError(f"{self.name}: no usable MIDI in {self._source()}: "
                             + (f"all {len(files)} files were skipped ({'; '.join(skipped.values())})"
                                if files else "no .mid/.midi files found"))
        return names, notes, splits

    def _cache_extra(self) -> dict[str, Any]:
        return {}

    def _source(self) -> str:
        raise NotImplementedError


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)  # missing: conversion will skip it with a warning
    return (st.st_size, st.st_mtime_ns)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic write: a half-written cache is never read by a later run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def bach_chorale_files() -> list[Path]:
    """The Bach chorale scores bundled with music21 (.mxl, .krn, .xml), sorted by file name."""
    corpus = need("music21.corpus", "music", "data=bach_chorales (the chorales in music21's corpus)")
    return sorted((Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in _BACH_SUFFIXES),
                  key=lambda p: p.name)


def score_to_notes(path: Path, codec: PerformanceCodec) -> np.ndarray:
    """music21 score -> MIDI bytes (repeats expanded, music21's tempo) -> the codec's note array."""
    from music21 import converter
    from music21.midi import translate

    score = converter.parse(path)
    return codec.extract_notes(midi_from_bytes(translate.streamToMidiFile(score).writestr()))


class BachChoralesDataModule(PerformanceDataModule):
    """The Bach chorales in music21's corpus (~400 scores): embedded, no download.

    Converted once with music21 (about 0.2 s a file) and cached; `max_files` keeps the first files
    by name (for quick tests). Files music21 cannot convert (e.g. badly formed repeats) are skipped.
    """

    name: ClassVar[str] = "bach_chorales"

    def _files(self) -> list[tuple[str, Path, str]]:
        files = bach_chorale_files()[:self.max_files]
        return [(p.name, p, "") for p in files]

    def _convert(self, path: Path) -> np.ndarray:
        return score_to_notes(path, self.codec)

    def _cache_extra(self) -> dict[str, Any]:
        import music21

        return {"music21": music21.__version__}

    def _source(self) -> str:
        return "music21's Bach corpus"


class MidiFolderDataModule(PerformanceDataModule):
    """Every .mid/.midi file under `path` (recursive), split by file name; `max_files` keeps the first."""

    name: ClassVar[str] = "midi_folder"

    def __init__(self, *, path: str | Path, **kwargs: Any) -> None:
        self.path = Path(path).expanduser()
        super().__init__(**kwargs)

    def _files(self) -> list[tuple[str, Path, str]]:
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.name}: MIDI folder not found: {self.path}")
        found = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
        return [(p.relative_to(self.path).as_posix(), p, "") for p in found[:self.max_files]]

    def _source(self) -> str:
        return str(self.path)


class MaestroDataModule(PerformanceDataModule):
    """A MAESTRO folder (https://magenta.tensorflow.org/datasets/maestro) with its official split.

    Reads `csv_name` (default: the folder's `maestro-v*.csv`, newest version first) and its columns
    `split` (train / validation / test) and `midi_filename` (relative to `path`). `max_files` keeps
    the first rows of each split. `val_fraction`/`test_fraction` are not used.
    """

    name: ClassVar[str] = "maestro"
    _SPLIT_NAMES: ClassVar[dict[str, str]] = {"train": "train", "validation": "val", "test": "test"}

    def __init__(self, *, path: str | Path, csv_name: str | None = None, **kwargs: Any) -> None:
        self.path, self.csv_name = Path(path).expanduser(), csv_name
        super().__init__(**kwargs)

    def _csv_path(self) -> Path:
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.name}: MAESTRO folder not found: {self.path}")
        if self.csv_name is not None:
            found = self.path / self.csv_name
            if not found.is_file():
                raise FileNotFoundError(f"{self.name}: {found} does not exist")
            return found
        candidates = sorted(self.path.glob("maestro-v*.csv"), reverse=True)
        if not candidates:
            raise FileNotFoundError(f"{self.name}: no maestro-v*.csv in {self.path}; pass csv_name=")
        return candidates[0]

    def _files(self) -> list[tuple[str, Path, str]]:
        csv_path = self._csv_path()
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"split", "midi_filename"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
            rows = list(reader)
        files, per_split = [], dict.fromkeys(SPLITS, 0)
        for line, row in enumerate(rows, 2):
            split = self._SPLIT_NAMES.get(row["split"].strip())
            if split is None:
                raise ValueError(f"{csv_path}, line {line}: split {row['split']!r} is not one of "
                                 f"{sorted(self._SPLIT_NAMES)}")
            if self.max_files is not None and per_split[split] >= self.max_files:
                continue
            per_split[split] += 1
            files.append((row["midi_filename"], self.path / row["midi_filename"], split))
        return files

    def _source(self) -> str:
        return str(self.path)


# ================================================================== JSB Chorales grid
class JSBChoralesDataModule(MusicDataModule):
    """JSB Chorales, 16th-note grid (Boulanger-Lewandowski 2012 split), with `JSBGridCodec`.

    Source: `path` (a local copy of the JSON) or `url` + `sha256` (downloaded once into
    `<cache_dir>/downloads`). The JSON maps train/valid/test to lists of pieces, each a list of
    steps of up to 4 pitches (see `grid_array`). Augmentation transposes only (a grid has no tempo
    to stretch); training windows start on whole steps, so `block_size` must be a multiple of 4 and
    target j of every window is voice j mod 4 (S, A, T, B).
    """

    name: ClassVar[str] = "jsb_chorales"
    crop_stride: ClassVar[int] = 4
    codec: JSBGridCodec

    def __init__(self, *, path: str | Path | None = None, url: str = JSB_URL, sha256: str | None = JSB_SHA256,
                 **kwargs: Any) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.url, self.sha256 = url, sha256
        super().__init__(**kwargs)
        if self.block_size % 4:
            raise ValueError(f"{self.name}: block_size must be a multiple of 4 (tokens per step), "
                             f"got {self.block_size}")
        self._loaded: dict[str, tuple[list[str], list[np.ndarray]]] | None = None

    def _make_codec(self, options: Mapping[str, Any] | Codec | None) -> Codec:
        if isinstance(options, JSBGridCodec):
            return options
        if isinstance(options, Codec):
            raise ValueError(f"{self.name} needs a JSBGridCodec (or its options), got {type(options).__name__}")
        return JSBGridCodec(**dict(options or {}))

    def _json_path(self) -> Path:
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.name}: JSON file not found: {self.path}")
            return self.path
        url_key = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        dest = cache_root(self.cache_dir) / "downloads" / f"{url_key}-{Path(self.url).name or 'jsb.json'}"
        return download(self.url, dest, self.sha256)

    def _load_splits(self) -> dict[str, tuple[list[str], list[np.ndarray]]]:
        if self._loaded is None:
            self._loaded = load_jsb_json(self._json_path(), self.codec)
        return self._loaded

    def _encode(self, piece: np.ndarray) -> np.ndarray:
        return self.codec.encode_grid(piece)

    def _augmented_ids(self, index: int, g: torch.Generator) -> np.ndarray:
        grid = self.pieces["train"][index]
        sounding = grid[grid >= 0]
        r, c = self.transpose_range, self.codec
        lo = max(-r, c.min_pitch - int(sounding.min())) if len(sounding) else -r
        hi = min(r, c.max_pitch - int(sounding.max())) if len(sounding) else r
        shift = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return c.encode_grid(np.where(grid >= 0, grid + shift, -1))


def load_jsb_json(path: Path, codec: JSBGridCodec) -> dict[str, tuple[list[str], list[np.ndarray]]]:
    """{split: (names "train/0" ..., grids int64 (steps, 4))}; checks every pitch fits `codec`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSB JSON file ({e})") from e
    keys = {"train": "train", "val": "valid", "test": "test"}
    if not isinstance(data, dict) or not set(keys.values()) <= set(data):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object with keys train, valid, test; found {found}")
    out = {}
    for split, key in keys.items():
        names, grids = [], []
        for i, piece in enumerate(data[key]):
            name = f"{key}/{i}"
            try:
                grid = grid_array(piece)
                codec.encode_grid(grid)  # range check
            except ValueError as e:
                raise ValueError(f"{path}: piece {name}: {e}") from e
            if len(grid):
                names.append(name)
                grids.append(grid)
        out[split] = (names, grids)
    return out


MUSIC_DATAMODULES: dict[str, Callable[..., MusicDataModule]] = {
    "bach_chorales": BachChoralesDataModule,
    "jsb_chorales": JSBChoralesDataModule,
    "maestro": MaestroDataModule,
    "midi_folder": MidiFolderDataModule,
}
