"""Streaming token shards on Lightning's data engine (`litdata`): prepare once, train from chunks.

`prepare_corpus` reads text files, folders or globs, builds (or reuses) a text codec, cuts the
corpus into pieces of about `piece_bytes` at line ends and tokenises the pieces in `num_workers`
processes with `litdata.optimize` into token chunks (`TokensLoader` layout, uint16/uint32):

    OUT/train/   litdata chunks + index.json: the first (1 - val_fraction) of the corpus
    OUT/val/     litdata chunks + index.json: its last val_fraction (at most max_val_bytes)
    OUT/zoo_stream.json   the manifest: codec state (to_dict), token counts, sources with size and sha256

OUT may be a local folder or a URL litdata writes to (s3://, gs://, r2://); the manifest is written
last, so a folder without one is an unfinished preparation. Documents (files) are separated by the
codec's end-of-sequence id, or by a blank line when it has none (as `zoo.data.text` does).

`StreamingTextDataModule` trains from one or several prepared corpora (mixed by `weights`) with
litdata's `StreamingDataset` + `StreamingDataLoader`: windows of `block_size + 1` tokens, shuffled by
chunk and within chunks (seeded), read lazily, so memory stays bounded whatever the corpus size.
Ranks and workers get disjoint chunk intervals (litdata's sharding). The loader is stateful: Lightning
stores its `state_dict` in the checkpoint's loop state and calls `load_state_dict` on resume, so a run
continues mid-epoch with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.codecs.base import codec_from_dict
from zoo.codecs.text import BPECodec, ByteCodec, CharCodec, TextCodec
from zoo.data.download import need

log = logging.getLogger(__name__)

MANIFEST = "zoo_stream.json"
FORMAT = 1  # bump when the chunk layout or the manifest changes
DOC_SEPARATOR = "\n\n"
DEFAULT_PATTERNS = ("*.txt", "*.md", "*.rst", "*.py")
URL_SCHEMES = ("s3://", "gs://", "r2://")
CodecKind = Literal["char", "byte", "bpe"]
Batch = dict[str, torch.Tensor]


def litdata() -> Any:
    """The `litdata` package, or MissingExtra naming the extra that installs it."""
    return need("litdata", "streaming", "zoo-prepare / data=streaming")


def is_url(path: str) -> bool:
    return str(path).startswith(URL_SCHEMES)


# ---------------------------------------------------------------------------------------- prepare
@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of one file; `doc_end`: the file ends here (a separator follows)."""

    path: str
    start: int
    end: int
    doc_end: bool


def find_files(inputs: str | Sequence[str], patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[Path]:
    """Files named by `inputs` (files, folders searched recursively for `patterns`, globs), sorted
    within each input, in the order the inputs are given, without duplicates."""
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not inputs:
        raise ValueError("no inputs given; pass text files, folders or glob patterns")
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if glob.has_magic(str(item)):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not files:
                raise FileNotFoundError(f"input {item!r}: the glob pattern matches no file")
        elif path.is_file():
            files = [path]
        elif path.is_dir():
            files = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                files += [Path(dirpath) / f for f in filenames if any(Path(f).match(p) for p in patterns)]
            files.sort()
            if not files:
                raise FileNotFoundError(f"input {item!r}: the folder holds no file matching {list(patterns)}")
        else:
            raise FileNotFoundError(f"input {item!r} does not exist; give a text file, a folder or a glob "
                                    "pattern such as 'books/**/*.txt'")
        for f in files:
            if not os.access(f, os.R_OK):
                raise PermissionError(f"input file {str(f)!r} is not readable (permission denied)")
        found += [f for f in files if f not in found]
    return found


def _boundary(f: Any, pos: int, size: int) -> int:
    """The first line start at or after `pos` (within 64 KiB), else the next UTF-8 character start."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size)
    f.seek(pos - 1)
    window = f.read(65_537)
    nl = window.find(b"\n")
    if nl >= 0:
        return pos + nl
    k = 1
    while k < len(window) and 0x80 <= window[k] < 0xC0:  # continuation bytes
        k += 1
    return pos - 1 + k


def split_pieces(files: Sequence[Path], *, piece_bytes: int, val_fraction: float,
                 max_val_bytes: int) -> tuple[list[Piece], list[Piece]]:
    """(training pieces, validation pieces): the corpus, in order, cut at line starts every ~piece_bytes;
    the last `val_fraction` of its bytes (at most `max_val_bytes`) is validation."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    if total == 0:
        raise ValueError(f"empty corpus: all {len(files)} input files are empty")
    val_bytes = min(int(total * val_fraction), max_val_bytes) if val_fraction > 0 else 0
    cut, offset = total - val_bytes, 0
    train, val = [], []
    for f, size in zip(files, sizes):
        with open(f, "rb") as fh:
            points = {0, size} | {_boundary(fh, p, size) for p in range(piece_bytes, size, piece_bytes)}
            local_cut = cut - offset
            if 0 < local_cut < size:
                local_cut = _boundary(fh, local_cut, size)
                points.add(local_cut)
        points = sorted(points)
        for a, b in zip(points, points[1:]):
            piece = Piece(str(f), a, b, doc_end=b == size)
            (train if offset + a < cut or val_bytes == 0 else val).append(piece)
        offset += size
    if not train:
        raise ValueError(f"the corpus ({total} bytes) is too small to split off val_fraction={val_fraction}")
    return train, val


def read_piece(piece: Piece) -> str:
    with open(piece.path, "rb") as f:
        f.seek(piece.start)
        data = f.read(piece.end - piece.start)
    return data.decode("utf-8", errors="replace")  # as zoo.data.text's default (errors=replace)


def token_dtype(codec: TextCodec) -> type[np.unsignedinteger]:
    return np.uint16 if codec.vocab_size <= 2**16 else np.uint32


def encode_fast(codec: TextCodec, text: str) -> np.ndarray:
    """`codec.encode(text)` as an array, vectorised for the byte and char codecs (the same ids)."""
    dtype = token_dtype(codec)
    if isinstance(codec, ByteCodec):
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(dtype)
    if isinstance(codec, CharCodec):
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        table = np.fromiter((ord(c) for c in codec.chars), np.uint32, len(codec.chars))
        order = np.argsort(table)
        pos = np.searchsorted(table[order], points).clip(0, len(table) - 1)
        ids = order[pos]
        if not np.array_equal(table[ids], points):
            codec.encode(text)  # raises, naming the characters outside the vocabulary
        return ids.astype(dtype)
    lines = text.splitlines(keepends=True)
    return np.fromiter((i for ids in codec.encode_batch(lines) for i in ids), dtype)


class _Tokenize:
    """The `fn` litdata.optimize calls in each worker: one piece -> one array of token ids."""

    def __init__(self, codec_state: dict[str, Any]) -> None:
        self.codec_state = codec_state
        self._codec: TextCodec | None = None

    def __call__(self, piece: Piece) -> Iterator[np.ndarray]:
        if self._codec is None:
            self._codec = codec_from_dict(self.codec_state)
        codec = self._codec
        ids = encode_fast(codec, read_piece(piece))
        if piece.doc_end:
            sep = [codec.eos_id] if codec.eos_id is not None else codec.encode(DOC_SEPARATOR)
            ids = np.concatenate([ids, np.asarray(sep, ids.dtype)])
        if len(ids):
            yield ids


def _char_set(piece: Piece) -> set[str]:
    return set(read_piece(piece))


def build_codec(kind: CodecKind, pieces: Sequence[Piece], *, vocab_size: int | None, num_workers: int,
                fit_bytes: int) -> TextCodec:
    """The codec for `pieces`: byte needs no fitting; char takes every character of the corpus (a
    parallel scan); BPE is trained by `tokenizers` on the first `fit_bytes` of the corpus."""
    if kind == "byte":
        if vocab_size is not None:
            raise ValueError(f"vocab_size is only for codec 'bpe'; codec 'byte' got vocab_size={vocab_size}")
        return ByteCodec(eos=True)
    if kind == "char":
        if vocab_size is not None:
            raise ValueError(f"vocab_size is only for codec 'bpe'; codec 'char' got vocab_size={vocab_size}")
        if num_workers > 1 and sum(p.end - p.start for p in pieces) > 50_000_000:  # else not worth a pool
            import multiprocessing as mp

            with mp.get_context("fork").Pool(num_workers) as pool:
                chars = set().union(*pool.imap_unordered(_char_set, pieces, chunksize=4))
        else:
            chars = set().union(*map(_char_set, pieces))
        chars |= set(DOC_SEPARATOR)
        return CharCodec(sorted(chars))
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("codec 'bpe' needs vocab_size (e.g. 4096); got None")

        def sample() -> Iterator[str]:
            seen = 0
            for p in pieces:
                if seen >= fit_bytes:
                    return
                text = read_piece(p)
                seen += len(text)
                yield from text.splitlines(keepends=True)

        return BPECodec.fit(sample(), vocab_size)
    raise ValueError(f"codec={kind!r}; accepted: 'char', 'byte', 'bpe'")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _optimize(pieces: list[Piece], fn: _Tokenize, out: str, *, chunk_tokens: int, num_workers: int) -> None:
    ld = litdata()
    ld.optimize(fn=fn, inputs=pieces, output_dir=out, chunk_size=chunk_tokens, item_loader=ld.TokensLoader(),
             num_workers=max(1, min(num_workers, len(pieces))), reorder_files=False, mode="overwrite",
             start_method="fork", verbose=False)  # workers inherit the imports: no 10 s re-import each


def _token_count(folder: str) -> int:
    index = read_json(f"{folder}/index.json")
    return int(sum(c["dim"] for c in index["chunks"]))


def read_json(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """A JSON file from a local path or a URL litdata can read."""
    if is_url(path):
        litdata()
        from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own uploader/downloader

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            _get_fs_provider(path, storage_options).download_file(path, local)
            return json.loads(Path(local).read_text())
    return json.loads(Path(path).read_text())


def write_json(path: str, value: dict[str, Any], storage_options: dict | None = None) -> None:
    text = json.dumps(value, indent=2)
    if is_url(path):
        litdata()
        from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own uploader/downloader

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            Path(local).write_text(text)
            _get_fs_provider(path, storage_options).upload_file(local, path)
        return
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: the manifest is whole or absent


def prepare_corpus(
    inputs: str | Sequence[str],
    out: str,
    *,
    codec: CodecKind = "byte",
    vocab_size: int | None = None,
    codec_from: str | None = None,
    num_workers: int = 2,
    val_fraction: float = 0.01,
    max_val_bytes: int = 2_000_000,
    piece_bytes: int = 8_000_000,
    chunk_tokens: int = 1 << 24,
    fit_bytes: int = 100_000_000,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    overwrite: bool = False,
    hash_inputs: bool = True,
) -> dict[str, Any]:
    """Tokenise `inputs` into litdata chunks under `out` (a folder or URL); return the manifest.

    `codec_from` (a prepared folder) reuses its codec, so that corpora can be mixed in one run.
    `chunk_tokens` is the size of one chunk in tokens (litdata reads and shards whole chunks).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for name, value in (("num_workers", num_workers), ("piece_bytes", piece_bytes), ("chunk_tokens", chunk_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    out = str(out).rstrip("/")
    if not is_url(out):
        out = str(Path(out).expanduser().resolve())
        existing = Path(out)
        if existing.is_file():
            raise FileExistsError(f"out={out!r} is a file; give a folder for the chunks")
        if existing.is_dir() and any(existing.iterdir()):
            if not overwrite:
                raise FileExistsError(f"out={out!r} exists and is not empty; choose another folder or pass "
                                      "overwrite=true to replace it")
            shutil.rmtree(existing)
    files = find_files(inputs, patterns)
    train, val = split_pieces(files, piece_bytes=piece_bytes, val_fraction=val_fraction, max_val_bytes=max_val_bytes)
    if codec_from is not None:
        text_codec = load_manifest(codec_from)[1]
        if isinstance(text_codec, CharCodec):  # fail here, not inside an optimize worker
            unknown = set().union(*map(_char_set, train + val)) - set(text_codec.chars)
            if unknown:
                raise ValueError(f"codec_from={codec_from!r}: its char codec lacks {len(unknown)} characters of these "
                                 f"inputs ({sorted(unknown)[:10]!r}); use a byte or bpe codec to mix such corpora")
    else:
        text_codec = build_codec(codec, train + val, vocab_size=vocab_size, num_workers=num_workers,
                                 fit_bytes=fit_bytes)
    fn = _Tokenize(text_codec.to_dict())
    log.info("zoo-prepare: %d files (%d pieces) -> %s with the %s codec (vocab %d), %d workers", len(files),
             len(train) + len(val), out, text_codec.type_name, text_codec.vocab_size, num_workers)
    _optimize(train, fn, f"{out}/train", chunk_tokens=chunk_tokens, num_workers=num_workers)
    if val:
        _optimize(val, fn, f"{out}/val", chunk_tokens=chunk_tokens, num_workers=num_workers)
    sources = [{"path": str(f), "bytes": f.stat().st_size, **({"sha256": _sha256(f)} if hash_inputs else {})}
               for f in files]
    manifest = {
        "format": FORMAT,
        "codec": text_codec.to_dict(),
        "codec_type": text_codec.type_name,
        "vocab_size": text_codec.vocab_size,
        "dtype": np.dtype(token_dtype(text_codec)).name,
        "train_tokens": _token_count(f"{out}/train"),
        "val_tokens": _token_count(f"{out}/val") if val else 0,
        "chunk_tokens": chunk_tokens,
        "n_files": len(files),
        "n_bytes": sum(s["bytes"] for s in sources),
        "sources": sources,
    }
    write_json(f"{out}/{MANIFEST}", manifest)
    return manifest


def load_manifest(path: str, storage_options: dict | None = None) -> tuple[dict[str, Any], TextCodec]:
    """(manifest, codec) of a prepared folder or URL; a clear error for anything else."""
    path = str(path).rstrip("/")
    where = f"{path}/{MANIFEST}"
    if not is_url(path):
        if not Path(path).exists():
            raise FileNotFoundError(f"prepared data {path!r} does not exist; make it with "
                                    f"`zoo-prepare inputs=TEXT_FILES out={path}`")
        if not Path(where).is_file():
            raise FileNotFoundError(f"{path!r} holds no {MANIFEST}: not a folder written by zoo-prepare (or its "
                                    "preparation did not finish); rerun zoo-prepare")
    manifest = read_json(where, storage_options)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: format {manifest.get('format')!r}, this zoo reads format {FORMAT}; "
                         "rerun zoo-prepare")
    codec = codec_from_dict(manifest["codec"], source=where)
    assert isinstance(codec, TextCodec)
    return manifest, codec


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
        if codec is not None and codec not in ("char", "byte", "bpe"):
            raise ValueError(f"codec must be 'char', 'byte', 'bpe' or null, got {codec!r}")
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
        cache = None if self.cache_dir is None or not is_url(folder) else os.path.join(
            self.cache_dir, hashlib.sha256(folder.encode()).hexdigest()[:16])
        return ld.StreamingDataset(folder, cache_dir=cache, item_loader=ld.TokensLoader(block_size=self.block_size + 1),
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
