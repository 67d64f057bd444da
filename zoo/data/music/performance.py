"""Data from MIDI files: `PerformanceDataModule` (pieces converted once and cached, skip-and-count of
unusable files, windowed augmentation of long pieces), and its two file sources, any MIDI folder
(`midi_folder`) and MAESTRO with its official split (`maestro`). The codec is performance events (note
arrays as pieces) or multitrack (token ids as pieces): `zoo.data.music.multitrack`.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from zoo.codecs.base import Codec
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import END, PITCH, START, MidiError, load_midi, stretch_notes, transpose_notes
from zoo.data.music.base import _SKIP_WARNINGS, SPLITS, MusicDataModule, split_by_name
from zoo.data.music.multitrack import make_midi_codec, multitrack_piece, transposed

log = logging.getLogger(__name__)

_MARGIN_SECONDS = 1.0  # context kept around a training window when re-encoding part of a long piece


class PerformanceDataModule(MusicDataModule):
    """MIDI-derived pieces: note arrays (N, 4) encoded by `PerformanceCodec`, or with a multitrack
    `codec` (`{"type": "multitrack", ...}`), token-id arrays (E,) of `MultitrackCodec`."""

    codec: PerformanceCodec  # or zoo.codecs.multitrack.MultitrackCodec (`self.multitrack`)

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

    def _make_codec(self, options: Mapping[str, Any] | Codec | str | None) -> Codec:
        codec = make_midi_codec(options, self.name)
        self.multitrack = not isinstance(codec, PerformanceCodec)
        return codec

    def _encode(self, piece: np.ndarray) -> np.ndarray:
        return piece if self.multitrack else self.codec.encode_notes(piece)

    def setup(self, stage: str | None = None) -> None:
        if self.sequences:
            return
        super().setup(stage)
        if self.multitrack:
            return  # ids are transposed whole (cheap): no windowed re-encoding
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
        if self.multitrack:
            return transposed(self.codec, self.pieces["train"][index], self.transpose_range, g)
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
        if self.multitrack or not self.augment or len(seq) <= 4 * (self.block_size + 1):
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
        """One file -> note array (token ids for multitrack); raise MidiError (or any exception) to skip it."""
        if self.multitrack:
            return multitrack_piece(self.codec, path)
        return self.codec.extract_notes(load_midi(path))

    def _convert_entry(self, name: str, path: Path) -> np.ndarray:
        """One entry of `_files` -> note array (a file holding several pieces tells them apart by name)."""
        return self._convert(path)

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
                    n = self._convert_entry(name, file)
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
                          notes=np.concatenate(notes),  # float64 notes (N, 4) or int64 ids (E,)
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
