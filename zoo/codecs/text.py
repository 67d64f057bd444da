"""Text codecs: characters, UTF-8 bytes and byte-level BPE, all exact round trips.

Every codec here maps any token id to the UTF-8 bytes it stands for (`token_bytes`), so that
`StreamDecoder` can print a sample token by token without ever splitting a multi-byte character:
`"".join(push(i) for i in ids) + flush() == decode(ids)`.

Round trip: `decode(encode(s)) == s` for every `str` `s` that `CharCodec` can encode (its characters
are in the vocabulary; any other character is a ValueError naming it and its position) and, for
`ByteCodec` and `BPECodec`, for every `str` that is valid Unicode; lone surrogates (which have no
UTF-8 form) are a ValueError naming them and their position (tests/test_fuzz_codecs.py).
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from zoo.codecs.base import Codec

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"  # GPT-2's document separator, the default BPE special token


class TextCodec(Codec):
    """Shared contract of the text codecs: `eos_id` and the bytes behind each id."""

    eos_id: int | None = None
    takes_vocab_size: ClassVar[bool] = False  # whether `from_corpus` is given a vocabulary size (BPE) or not

    @classmethod
    def from_corpus(cls, texts: Iterable[str], vocab_size: int | None = None, **options: Any) -> TextCodec:
        """The codec fitted on `texts` (documents or any pieces of the corpus; a codec that needs no fitting
        reads none): what `build_text_codec` calls through `TEXT_CODECS`."""
        raise NotImplementedError

    def encode(self, x: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def unknown_chars(self, text: str) -> set[str]:
        """The characters of `text` this codec cannot encode: none for byte-level codecs (byte, bpe), those
        outside the vocabulary for a fixed character vocabulary (char)."""
        return set()

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes token `token_id` stands for (possibly part of a character)."""
        raise NotImplementedError

    def _no_utf8_error(self, text: str) -> ValueError:
        """The error for text holding lone surrogates (e.g. from `open(errors="surrogateescape")`)."""
        bad = [(i, c) for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"]
        shown = ", ".join(f"{c!r} at position {i}" for i, c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return ValueError(
            f"text contains {len(bad)} lone surrogate character(s) ({shown}), which have no UTF-8 form and "
            f"cannot be encoded by the {self.type_name} codec; decode the source bytes with errors='replace' "
            "(or remove those characters)"
        )

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token ids {bad[:10]} are outside this {self.type_name} codec's vocabulary "
                f"(ids 0..{self.vocab_size - 1})"
            )


class CharCodec(TextCodec):
    """One token per Unicode character; the vocabulary is the sorted set of the training corpus."""

    type_name: ClassVar[str] = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        if not chars or any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be a non-empty list of distinct single characters, got {chars!r:.200}")
        self.chars = list(chars)
        self.vocab_size = len(self.chars)
        self._stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> CharCodec:
        if not text:
            raise ValueError("cannot build a char vocabulary from an empty text")
        return cls(sorted(set(text)))

    @classmethod
    def from_corpus(cls, texts: Iterable[str], vocab_size: int | None = None, **options: Any) -> CharCodec:
        return cls.fit("".join(texts), **options)  # every character of the corpus, sorted

    def encode(self, x: str) -> list[int]:
        try:
            return [self._stoi[c] for c in x]
        except KeyError:
            unknown = sorted(set(x) - self._stoi.keys())
            first = min(x.index(c) for c in unknown)
            raise ValueError(
                f"characters {[*unknown[:10]]!r}{' ...' if len(unknown) > 10 else ''} are not in the "
                f"vocabulary (first at position {first}); the model was trained on a char vocabulary of "
                f"{self.vocab_size} characters from its training corpus. Use only those characters "
                f"(see codec.chars) or a byte/bpe codec, which accept any text."
            ) from None

    def unknown_chars(self, text: str) -> set[str]:
        return set(text) - self._stoi.keys()

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[token_id].encode("utf-8")

    def config(self) -> dict[str, Any]:
        return {"chars": self.chars}


class ByteCodec(TextCodec):
    """One token per UTF-8 byte (ids 0..255), plus id 256 as end-of-sequence when `eos=True`.

    `decode` turns byte sequences that are not valid UTF-8 (which a model can sample) into U+FFFD
    (`errors="replace"`) instead of failing; the end-of-sequence id decodes to nothing.
    """

    type_name: ClassVar[str] = "byte"

    @classmethod
    def from_corpus(cls, texts: Iterable[str], vocab_size: int | None = None, **options: Any) -> ByteCodec:
        return cls(**options)  # 256 bytes whatever the corpus: nothing to read

    def __init__(self, eos: bool = False) -> None:
        self.eos = eos
        self.eos_id = 256 if eos else None
        self.vocab_size = 257 if eos else 256

    def encode(self, x: str) -> list[int]:
        try:
            return list(x.encode("utf-8"))
        except UnicodeEncodeError:
            raise self._no_utf8_error(x) from None

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return bytes(i for i in ids if i != self.eos_id).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return b"" if token_id == self.eos_id else bytes([token_id])

    def config(self) -> dict[str, Any]:
        return {"eos": self.eos}


@cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-character table used by byte-level BPE.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 (controls, space,
    0x7f-0xa0, 0xad) are assigned the characters 256, 257, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in printable]
    table.update({chr(256 + n): b for n, b in enumerate(others)})
    return table


class BPECodec(TextCodec):
    """Byte-level BPE (GPT-2 scheme) backed by Hugging Face `tokenizers`.

    The state is the tokenizer's JSON (`tokenizer_json`), so a checkpoint rebuilds it without files.
    `eos_token` (a special token of the tokenizer, or None) gives `eos_id`; text that contains it
    literally is encoded to that id and decoded back to the same text.
    """

    type_name: ClassVar[str] = "bpe"
    takes_vocab_size: ClassVar[bool] = True

    @classmethod
    def from_corpus(cls, texts: Iterable[str], vocab_size: int | None = None, **options: Any) -> BPECodec:
        return cls.fit(texts, vocab_size, **options)

    def __init__(self, tokenizer_json: str, eos_token: str | None = EOT) -> None:
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.eos_token = eos_token
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id = None if eos_token is None else self.tokenizer.token_to_id(eos_token)
        if eos_token is not None and self.eos_id is None:
            raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary; pass eos_token=None")

    @staticmethod
    def _byte_level(tokenizer: Tokenizer) -> Tokenizer:
        # GPT-2: split with its regex, no space added in front of the text, bytes mapped back on decode.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        return tokenizer

    @classmethod
    def fit(
        cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (EOT,), min_frequency: int = 2
    ) -> BPECodec:
        """Train on `texts`; the first special token becomes end-of-sequence."""
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"byte-level BPE needs vocab_size >= 256 bytes + {len(special_tokens)} special tokens, "
                f"got {vocab_size}"
            )
        tokenizer = cls._byte_level(Tokenizer(models.BPE()))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: nothing is unknown
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        if tokenizer.get_vocab_size() < vocab_size:
            log.info("BPE corpus supports only %d of the %d tokens asked for", tokenizer.get_vocab_size(), vocab_size)
        return cls(tokenizer.to_str(), special_tokens[0] if special_tokens else None)

    @classmethod
    def from_gpt2_files(cls, vocab_json: str | Path, merges_txt: str | Path, eos_token: str | None = EOT) -> BPECodec:
        """Load GPT-2-format `vocab.json` + `merges.txt`; encodes exactly as GPT-2's tokenizer does."""
        tokenizer = cls._byte_level(Tokenizer(models.BPE.from_file(str(vocab_json), str(merges_txt))))
        if eos_token is not None:
            if tokenizer.token_to_id(eos_token) is None:
                raise ValueError(f"eos_token {eos_token!r} is not in {vocab_json}; pass eos_token=None")
            tokenizer.add_special_tokens([AddedToken(eos_token, special=True)])  # keeps its vocab.json id
        return cls(tokenizer.to_str(), eos_token)

    def encode(self, x: str) -> list[int]:
        try:
            return self.tokenizer.encode(x, add_special_tokens=False).ids
        except TypeError:  # what `tokenizers` raises for a str with lone surrogates
            if isinstance(x, str):
                raise self._no_utf8_error(x) from None
            raise

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        try:
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        except TypeError:
            return [self.encode(t) for t in texts]  # names the offending text

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        # Special tokens are kept: the round trip must give back text that contained them.
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        token = self.tokenizer.id_to_token(token_id)
        table = _unicode_to_byte()
        # Like the ByteLevel decoder: a token made of byte characters is those bytes, any other token
        # (e.g. a special token such as "<|endoftext|>") stands for its own UTF-8 text.
        if all(ch in table for ch in token):
            return bytes(table[ch] for ch in token)
        return token.encode("utf-8")

    def config(self) -> dict[str, Any]:
        return {"tokenizer_json": self.tokenizer.to_str(), "eos_token": self.eos_token}

    def save_files(self, directory: Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))


class StreamDecoder:
    """Incremental decoding for streaming samples: `push(id)` returns only completed characters.

    Bytes of a character split across tokens are held back until the character is complete;
    `flush()` returns what is left (an incomplete tail becomes U+FFFD, as in `decode`).
    """

    def __init__(self, codec: TextCodec) -> None:
        self.codec = codec
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.codec.token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# The one table of text codec kinds (`data.codec`, `data.text_codec`, zoo-prepare's `codec`): the in-memory text
# modules, the caption codec and the streaming corpus preparation all build through it.
TEXT_CODECS: dict[str, type[TextCodec]] = {c.type_name: c for c in (CharCodec, ByteCodec, BPECodec)}
TextCodecKind = Literal["char", "byte", "bpe"]  # the table's keys, as a type hint for config fields


def check_text_codec(kind: str, vocab_size: int | None) -> None:
    """ValueError unless `kind` names a text codec and `vocab_size` is given exactly when that codec takes one
    (BPE; the corpus fixes a char vocabulary, bytes are 256). Cheap: callers check before reading a corpus."""
    if kind not in TEXT_CODECS:
        raise ValueError(f"unknown text codec {kind!r}; accepted: {', '.join(map(repr, TEXT_CODECS))}")
    sized = [k for k, c in TEXT_CODECS.items() if c.takes_vocab_size]
    if TEXT_CODECS[kind].takes_vocab_size and vocab_size is None:
        raise ValueError(f"codec {kind!r} needs vocab_size (e.g. 4096); got None")
    if not TEXT_CODECS[kind].takes_vocab_size and vocab_size is not None:
        raise ValueError(f"vocab_size is only for codec {' or '.join(map(repr, sized))}; codec {kind!r} got "
                         f"vocab_size={vocab_size}")


def build_text_codec(kind: TextCodecKind, text: str | Iterable[str], vocab_size: int | None = None,
                     **options: Any) -> TextCodec:
    """Build the codec `kind` for a corpus (`text`: one string or an iterable of documents), checked by
    `check_text_codec`; `options` go to the codec (e.g. `eos=True` for bytes)."""
    check_text_codec(kind, vocab_size)
    return TEXT_CODECS[kind].from_corpus([text] if isinstance(text, str) else text, vocab_size, **options)


UNKNOWN_CHOICES = ("error", "skip", "replace")  # data.unknown: characters a given codec cannot encode


def fit_to_vocabulary(codec: TextCodec, docs: list[str], unknown: str, name: str) -> tuple[list[str], dict[str, int]]:
    """`docs` (corpus `name`) with the characters `codec` cannot encode dropped or replaced, as `unknown` says
    (data.unknown: "skip", "replace"), and their counts; with "error" a ValueError naming them and the option."""
    counts: dict[str, int] = {}
    for doc in docs:
        for c in codec.unknown_chars(doc):
            counts[c] = counts.get(c, 0) + doc.count(c)
    if not counts:
        return docs, {}
    shown = ", ".join(f"{c!r} x{n}" for c, n in sorted(counts.items(), key=lambda cn: -cn[1])[:10])
    shown += " ..." if len(counts) > 10 else ""
    total = sum(counts.values())
    if unknown == "error":
        raise ValueError(
            f"{name}: {total} characters of the corpus are not in the model's {codec.type_name} vocabulary "
            f"of {codec.vocab_size} ({shown}); set data.unknown=skip to drop them or data.unknown=replace to "
            f"write a known character instead, or train a new codec (no init_from)")
    table: dict[str, str | None] = dict.fromkeys(counts)
    if unknown == "replace":
        known = [c for c in ("\ufffd", "?", " ") if not codec.unknown_chars(c)]
        if not known:
            raise ValueError(f"{name}: data.unknown=replace needs U+FFFD, '?' or ' ' in the vocabulary; "
                             f"this one has none of them: use data.unknown=skip")
        table = dict.fromkeys(counts, known[0])
    trans = str.maketrans(table)
    verb = "dropped" if unknown == "skip" else f"replaced with {known[0]!r}"
    log.warning("%s: %d characters outside the model's vocabulary %s (data.unknown=%s): %s", name, total,
                verb, unknown, shown)
    return [t for t in (d.translate(trans) for d in docs) if t], counts

