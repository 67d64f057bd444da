"""`prepare_corpus`: text files, folders or globs -> litdata token chunks + a manifest (`zoo-prepare`)."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.codecs.base import codec_from_dict
from zoo.codecs.text import ByteCodec, CharCodec, TextCodec, build_text_codec, check_text_codec
from zoo.data.streaming.common import (
    DEFAULT_PATTERNS,
    DOC_SEPARATOR,
    FORMAT,
    MANIFEST,
    CodecKind,
    _token_count,
    chunk_sums,
    file_sha256,
    is_url,
    litdata,
    load_manifest,
    log,
    write_json,
)


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
            if not os.access(f, os.R_OK, effective_ids=os.access in os.supports_effective_ids):  # as open() sees it
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
    """The codec for `pieces`, built through the codecs' one table (`zoo.codecs.text.build_text_codec`) from
    what each kind reads of a corpus too large to hold: byte nothing (and gets an end-of-document id); char
    the set of the corpus's characters (a parallel scan) and the document separator; BPE the first
    `fit_bytes` of the corpus, line by line (`tokenizers` trains on them)."""
    check_text_codec(kind, vocab_size)  # before any scan of the corpus
    if kind == "byte":
        return build_text_codec(kind, [], vocab_size, eos=True)
    if kind == "char":
        if num_workers > 1 and sum(p.end - p.start for p in pieces) > 50_000_000:  # else not worth a pool
            import multiprocessing as mp

            with mp.get_context("fork").Pool(num_workers) as pool:
                chars = set().union(*pool.imap_unordered(_char_set, pieces, chunksize=4))
        else:
            chars = set().union(*map(_char_set, pieces))
        return build_text_codec(kind, ["".join(sorted(chars)), DOC_SEPARATOR], vocab_size)

    def sample() -> Iterator[str]:
        seen = 0
        for p in pieces:
            if seen >= fit_bytes:
                return
            text = read_piece(p)
            seen += len(text)
            yield from text.splitlines(keepends=True)

    return build_text_codec(kind, sample(), vocab_size)


def _optimize(pieces: list[Piece], fn: _Tokenize, out: str, *, chunk_tokens: int, num_workers: int) -> None:
    ld = litdata()
    ld.optimize(fn=fn, inputs=pieces, output_dir=out, chunk_size=chunk_tokens, item_loader=ld.TokensLoader(),
             num_workers=max(1, min(num_workers, len(pieces))), reorder_files=False, mode="overwrite",
             start_method="fork", verbose=False)  # workers inherit the imports: no 10 s re-import each



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
    sources = [{"path": str(f), "bytes": f.stat().st_size, **({"sha256": file_sha256(f)} if hash_inputs else {})}
               for f in files]
    chunks = {} if is_url(out) else {  # checked as training reads them (zoo.data.streaming.verify)
        split: chunk_sums(f"{out}/{split}") for split in ("train", *(["val"] if val else []))}
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
        "chunks": chunks,
    }
    write_json(f"{out}/{MANIFEST}", manifest)
    return manifest

