"""Text corpora as LightningDataModules: embedded (pydoc, Python stdlib), local files, downloads.

Every corpus is a list of documents. `prepare_data()` builds the codec on the whole corpus (so
validation text never holds an unknown character) and tokenises it once: documents joined by the
codec's end-of-sequence id, or by a blank line ("\n\n") when the codec has none. The ids are cached
as a `.npy` file (uint16, or uint32 for vocabularies above 65,536) with the codec saved beside it,
under `<cache_dir>/tokens/<name>-<key>/`, where the key hashes the corpus content and the codec
choice; later runs memory-map it. `setup()` splits the token stream: the last `val_fraction` of it
(at least `block_size + 1` tokens) is validation, the rest training, so the split is deterministic
and disjoint. Training batches are random windows (`zoo.data.base.BatchStream`, resumable);
validation batches are consecutive non-overlapping windows (the loaders are `StreamDataModule`'s).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sysconfig
import uuid
from collections.abc import Sequence
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from zoo.codecs.base import load_codec
from zoo.codecs.text import TEXT_CODECS, UNKNOWN_CHOICES, TextCodec, TextCodecKind, build_text_codec, fit_to_vocabulary
from zoo.data.base import Batch, MakeBatch, StreamDataModule, random_crops, sequential_windows
from zoo.data.download import cache_root, download

log = logging.getLogger(__name__)

CodecKind = TextCodecKind  # zoo.codecs.text.TEXT_CODECS's names
DOC_SEPARATOR = "\n\n"  # between documents when the codec has no end-of-sequence token
_CACHE_FORMAT = 1  # bump when the token layout changes, so old caches are not reused
_META, _TOKENS, _CODEC = "meta.json", "tokens.npy", "codec"

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
# 1,115,394 bytes; the hash TensorFlow Datasets pins for this URL (url_checksums/tiny_shakespeare.txt).
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class TextDataModule(StreamDataModule):
    """Base class: subclasses provide `load_documents()`; everything else is shared.

    Batches: `idx` and `targets`, (batch_size, block_size) int64, targets = idx shifted by one.
    `codec` is a kind to build from the corpus ("char", "byte", or "bpe" with `vocab_size`) or a
    ready `TextCodec` (e.g. GPT-2's BPE). After `setup()`: `codec`, `train_tokens`, `val_tokens`
    (1-D arrays) and `sample_prompts` (a few short prompts taken from the validation text).

    `unknown` says what happens to characters a given fixed-vocabulary codec cannot encode (a char model's
    codec when fine-tuning with `init_from`): "error" (default) stops, naming them and this option;
    "skip" drops them; "replace" writes one the vocabulary has instead (U+FFFD, else "?", else a space).
    The count is logged and kept in the token cache's meta.json.
    """

    name: ClassVar[str] = "text"

    def __init__(
        self,
        block_size: int,
        batch_size: int,
        codec: CodecKind | TextCodec = "char",
        vocab_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        max_val_windows: int | None = None,
        num_workers: int = 0,
        unknown: Literal["error", "skip", "replace"] = "error",
    ) -> None:
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} and {batch_size}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if isinstance(codec, str):
            if codec not in TEXT_CODECS:
                raise ValueError(f"codec must be {', '.join(map(repr, TEXT_CODECS))} or a TextCodec, got {codec!r}")
            if TEXT_CODECS[codec].takes_vocab_size != (vocab_size is not None):
                sized = " or ".join(repr(k) for k, c in TEXT_CODECS.items() if c.takes_vocab_size)
                raise ValueError(f"vocab_size is required for codec {sized} and only for it; got codec={codec!r}, "
                                 f"vocab_size={vocab_size}")
        elif not isinstance(codec, TextCodec) or vocab_size is not None:
            raise ValueError(f"codec must be a kind name or a TextCodec (with vocab_size=None), got {codec!r}")
        if unknown not in UNKNOWN_CHOICES:
            raise ValueError(f"unknown must be one of {', '.join(map(repr, UNKNOWN_CHOICES))}, got {unknown!r}")
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.block_size, self.codec_spec, self.vocab_size = block_size, codec, vocab_size
        self.val_fraction, self.cache_dir, self.max_val_windows = val_fraction, cache_dir, max_val_windows
        self.unknown = unknown
        self.codec: TextCodec | None = None
        self.train_tokens: np.ndarray | None = None
        self.val_tokens: np.ndarray | None = None
        self._documents: list[str] | None = None
        self._crops: MakeBatch | None = None
        self._val_windows: list[Batch] | None = None

    def load_documents(self) -> list[str]:
        """The corpus, in a fixed order (subclasses)."""
        raise NotImplementedError

    def documents(self) -> list[str]:
        if self._documents is None:
            docs = [d for d in self.load_documents() if d]
            if not docs:
                raise ValueError(f"{self.name}: the corpus is empty (no documents with any text)")
            self._documents = docs
        return self._documents

    # -- tokenise once, cache, memory-map ------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        corpus = hashlib.sha256()
        for doc in self.documents():
            data = doc.encode("utf-8", errors="surrogatepass")
            corpus.update(len(data).to_bytes(8, "little") + data)
        codec = self.codec_spec if isinstance(self.codec_spec, str) else self.codec_spec.to_dict()
        unknown = {"unknown": self.unknown} if self.unknown != "error" else {}  # "error" keeps old caches valid
        key = json.dumps({"format": _CACHE_FORMAT, "corpus": corpus.hexdigest(), "codec": codec,
                          "vocab_size": self.vocab_size, **unknown}, sort_keys=True)
        return cache_root(self.cache_dir) / "tokens" / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def prepare_data(self) -> None:
        path = self.cache_path
        if (path / _META).is_file():
            if not getattr(self, "_reported_cache", False):  # Lightning calls prepare_data again in fit
                log.info("%s: reusing tokens cached in %s", self.name, path)
                self._reported_cache = True
            return
        docs, dropped = self.documents(), {}
        if isinstance(self.codec_spec, str):
            text = docs if self.codec_spec == "bpe" else DOC_SEPARATOR.join(docs)
            codec = build_text_codec(self.codec_spec, text, self.vocab_size)
        else:
            codec = self.codec_spec
            docs, dropped = fit_to_vocabulary(codec, docs, self.unknown, self.name)
        tokens = self._tokenize(codec, docs)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.mkdir(parents=True)
        np.save(tmp / _TOKENS, tokens)
        codec.save(tmp / _CODEC)
        meta = {"n_tokens": len(tokens), "n_documents": len(docs), "n_chars": sum(map(len, docs)),
                "codec": codec.type_name, "vocab_size": codec.vocab_size, "dtype": str(tokens.dtype)}
        if dropped:
            meta["unknown_chars"] = {"data.unknown": self.unknown, "counts": dropped}
        (tmp / _META).write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(path)  # atomic: readers see a complete folder or none
        except OSError:  # another process finished first; its result is identical
            shutil.rmtree(tmp)
        log.info("%s: %d documents, %d chars -> %d tokens (%s, vocab %d), cached in %s", self.name,
                 meta["n_documents"], meta["n_chars"], len(tokens), codec.type_name, codec.vocab_size, path)

    @staticmethod
    def _tokenize(codec: TextCodec, docs: Sequence[str]) -> np.ndarray:
        dtype = np.uint16 if codec.vocab_size <= 2**16 else np.uint32
        parts = [np.asarray(ids, dtype) for ids in codec.encode_batch(docs)]
        if len(parts) > 1:  # a char codec fitted on one document may lack the separator's "\n"
            sep = np.asarray([codec.eos_id] if codec.eos_id is not None else codec.encode(DOC_SEPARATOR), dtype)
            parts[1:] = [p for part in parts[1:] for p in (sep, part)]
        return np.concatenate(parts)

    def setup(self, stage: str | None = None) -> None:
        if self.codec is not None:
            return
        path = self.cache_path
        if not (path / _META).is_file():  # setup() without prepare_data(), e.g. outside a Trainer
            self.prepare_data()
        tokens = np.load(path / _TOKENS, mmap_mode="c")  # copy-on-write: writable for torch, file untouched
        n_val = max(int(len(tokens) * self.val_fraction), self.block_size + 1)
        n_train = len(tokens) - n_val
        if n_train < self.block_size + 2:
            raise ValueError(
                f"{self.name}: {len(tokens)} tokens are too few for block_size={self.block_size} with "
                f"val_fraction={self.val_fraction} (the training split needs >= {self.block_size + 2} "
                f"tokens, the validation split >= {self.block_size + 1}); use a larger corpus or smaller block_size"
            )
        codec = load_codec(path / _CODEC)
        assert isinstance(codec, TextCodec)
        self.codec, self.train_tokens, self.val_tokens = codec, tokens[:n_train], tokens[n_train:]
        self._crops = random_crops(self.train_tokens, self.block_size)
        self.sample_prompts = self._prompts()
        log.info("%s: %d training and %d validation tokens", self.name, n_train, n_val)

    def _prompts(self, n: int = 4, scan: int = 20_000) -> list[str]:
        """Up to `n` prompts: the first words of lines spread over the start of the validation text."""
        assert self.codec is not None and self.val_tokens is not None
        segments: list[list[int]] = [[]]  # split at eos so that no prompt contains the eos token
        for t in self.val_tokens[:scan].tolist():
            if t == self.codec.eos_id:
                segments.append([])
            else:
                segments[-1].append(t)
        text = "\n".join(self.codec.decode(s) for s in segments)
        lines = text.split("\n")[1:-1]  # the first and last lines may be cut
        found: list[str] = []
        for line in lines:
            m = re.match(r"\S+(?:[ \t]+\S+){0,3}", line.strip())
            words = m.group()[:40] if m else ""
            if len(words) >= 8 and any(c.isalpha() for c in words) and words not in found:
                found.append(words)
        if not found:
            first = text.strip()[:20]
            return [first] if first else []
        return [found[i * len(found) // n] for i in range(min(n, len(found)))]

    # -- what the shared loaders serve (zoo.data.base.StreamDataModule) ------------------------

    def _require_setup(self) -> tuple[np.ndarray, np.ndarray]:
        super()._require_setup()
        return self.train_tokens, self.val_tokens

    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        """Random windows of the training tokens: idx = w[:-1], targets = w[1:]."""
        self._require_setup()
        return self._crops(g, batch_size)

    def batches_per_pass(self) -> int:
        return len(self.train_tokens) // (self.batch_size * self.block_size)

    def eval_dataset(self, split: str) -> list[Batch]:
        """Consecutive non-overlapping windows of the validation tokens; "test" is the same split."""
        _, val = self._require_setup()
        if self._val_windows is None:
            self._val_windows = sequential_windows(val, self.block_size, self.max_val_windows)
        return self._val_windows

    def unigram_nll(self) -> float:
        """Baseline: nats/token of a unigram model fitted on the training tokens (add-one smoothing),
        scored on exactly the validation targets the model's val/loss is computed on."""
        train, val = self._require_setup()
        vocab = self.codec.vocab_size
        counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        windows = self._val_windows or sequential_windows(val, self.block_size, self.max_val_windows)
        targets = np.concatenate([w["targets"].numpy() for w in windows])
        return float(-logp[targets].mean())


class PydocDataModule(TextDataModule):
    """Python's own help topics (`pydoc_data.topics`, ~465 KB of English): embedded, no download."""

    name: ClassVar[str] = "pydoc"

    def load_documents(self) -> list[str]:
        return [topics[key] for key in sorted(topics)]


class PythonStdlibDataModule(TextDataModule):
    """The `.py` sources of the running Python's standard library, in path order.

    Tests, IDLE, demos and installed packages are left out. `max_files` / `max_bytes` cap the
    corpus (whole files, stopping once the cap is reached) so tokenising stays quick.
    """

    name: ClassVar[str] = "python_stdlib"
    EXCLUDED_DIRS: ClassVar[frozenset[str]] = frozenset(
        {"test", "tests", "idle_test", "idlelib", "turtledemo", "lib2to3", "site-packages", "dist-packages",
         "__pycache__", "lib-dynload"}
    )

    def __init__(self, *, max_files: int | None = None, max_bytes: int | None = 3_000_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_files, self.max_bytes = max_files, max_bytes

    def load_documents(self) -> list[str]:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in self.EXCLUDED_DIRS and not d.startswith((".", "config-"))]
            files += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
        files.sort(key=lambda p: p.relative_to(root).as_posix())
        docs, total = [], 0
        for f in files[: self.max_files]:
            if self.max_bytes is not None and total >= self.max_bytes:
                break
            data = f.read_bytes()
            docs.append(data.decode("utf-8", errors="replace"))
            total += len(data)
        log.info("python_stdlib: %d of %d files under %s (%d bytes)", len(docs), len(files), root, total)
        return docs


class TextFilesDataModule(TextDataModule):
    """Local text: `path` is a file, a folder (searched recursively for `patterns`, hidden folders
    skipped) or a glob pattern (`**` allowed). Files are read in sorted path order as UTF-8.

    `errors` says what happens to a file that is not valid UTF-8:
      * "replace" (default): its invalid bytes become U+FFFD and it is kept; one warning gives the
        count and the first names. A stray Latin-1 byte in a large corpus should not cost the file,
        and the replacement character is visible in samples if it is common.
      * "skip": the whole file is left out (warning with count and names): for corpora where a
        non-UTF-8 file is probably binary junk.
      * "strict": the run stops with a `UnicodeDecodeError` naming the file and byte offset.
    """

    name: ClassVar[str] = "text_files"

    def __init__(self, *, path: str | Path, patterns: Sequence[str] = ("*.txt", "*.md", "*.rst", "*.py"),
                 errors: Literal["replace", "skip", "strict"] = "replace", **kwargs: Any) -> None:
        if errors not in ("replace", "skip", "strict"):
            raise ValueError(f"errors must be 'replace', 'skip' or 'strict', got {errors!r}")
        super().__init__(**kwargs)
        self.path, self.patterns, self.errors = str(path), tuple(patterns), errors
        self.invalid_files: list[str] = []

    def _files(self) -> list[Path]:
        path = Path(self.path).expanduser()
        if glob.has_magic(self.path):
            return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if path.is_file():
            return [path]
        if path.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found += [Path(dirpath) / f for f in filenames
                          if any(Path(f).match(p) for p in self.patterns)]
            return sorted(found)
        raise FileNotFoundError(
            f"text_files: path {self.path!r} does not exist; give a text file, a folder (searched for "
            f"{list(self.patterns)}) or a glob pattern such as 'books/**/*.txt'"
        )

    def load_documents(self) -> list[str]:
        files = self._files()
        docs, invalid = [], []
        for f in files:
            data = f.read_bytes()
            try:
                docs.append(data.decode("utf-8"))
            except UnicodeDecodeError as e:
                if self.errors == "strict":
                    raise UnicodeDecodeError(e.encoding, e.object, e.start, e.end,
                                             f"{e.reason} in {f} at byte {e.start} (errors=strict; set "
                                             "data.errors=replace or skip to accept such files)") from None
                if self.errors == "replace":
                    docs.append(data.decode("utf-8", errors="replace"))
                invalid.append(str(f))
        self.invalid_files = invalid
        if invalid:
            what = "bad bytes replaced by U+FFFD" if self.errors == "replace" else "files skipped"
            log.warning("text_files: %d of %d files are not valid UTF-8 (%s): %s%s", len(invalid), len(files),
                        what, ", ".join(invalid[:10]), " ..." if len(invalid) > 10 else "")
        if not any(docs):
            what = "no files matched" if not files else f"all {len(files)} files are empty"
            raise ValueError(f"text_files: empty corpus at {self.path!r}: {what} (patterns {list(self.patterns)})")
        return docs


class TinyShakespeareDataModule(TextDataModule):
    """Karpathy's tiny Shakespeare (~1.1 MB), downloaded once to the cache and checked by sha256.

    Pass `sha256=None` to skip the check (a warning logs the hash of what was downloaded).
    """

    name: ClassVar[str] = "tinyshakespeare"

    def __init__(self, *, url: str = TINYSHAKESPEARE_URL, sha256: str | None = TINYSHAKESPEARE_SHA256,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url, self.sha256 = url, sha256

    def load_documents(self) -> list[str]:
        # One file per URL, so overriding `url` never picks up another corpus's cached copy.
        url_key = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        dest = cache_root(self.cache_dir) / "downloads" / f"{url_key}-{Path(self.url).name or 'download'}"
        return [download(self.url, dest, self.sha256).read_text(encoding="utf-8", errors="replace")]


TEXT_DATAMODULES: dict[str, type[TextDataModule]] = {
    "pydoc": PydocDataModule,
    "python_stdlib": PythonStdlibDataModule,
    "text_files": TextFilesDataModule,
    "tinyshakespeare": TinyShakespeareDataModule,
}
