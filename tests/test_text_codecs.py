"""Text codecs: exact round trips, errors a user can act on, streaming decode, GPT-2 parity."""

from __future__ import annotations

import json
import typing
from pydoc_data.topics import topics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from zoo.codecs.base import codec_from_dict, load_codec
from zoo.codecs.text import (
    EOT,
    TEXT_CODECS,
    BPECodec,
    ByteCodec,
    CharCodec,
    StreamDecoder,
    TextCodecKind,
    _unicode_to_byte,
    build_text_codec,
)

CORPUS = "\n\n".join(topics[k] for k in sorted(topics))
HARD = [
    "",
    "hello world",
    "emoji 🎉👩‍👩‍👧 and flags 🇫🇷",
    "CJK 日本語の文章、中文，한국어",
    "   whitespace \t\t runs   \n\n\n  ",
    "windows\r\nline\r\nends\r\n",
    "combining e\u0301 and zero width \u200b\u200d, nul \x00",
    f"two docs{EOT}joined{EOT}",
    "'s 've 're n't  ''  \"quoted\"",
]
SETTINGS = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def bpe() -> BPECodec:
    return BPECodec.fit([topics[k] for k in sorted(topics)][:30], vocab_size=600)


def stream(codec, ids: list[int]) -> str:
    dec = StreamDecoder(codec)
    return "".join(dec.push(i) for i in ids) + dec.flush()


# -- char ------------------------------------------------------------------------------------------


def test_char_round_trips_its_corpus_and_vocab_is_sorted_set():
    codec = CharCodec.fit(CORPUS)
    assert codec.chars == sorted(set(CORPUS)) and codec.vocab_size == len(set(CORPUS))
    ids = codec.encode(CORPUS)
    assert len(ids) == len(CORPUS) and codec.decode(ids) == CORPUS
    assert stream(codec, ids[:5000]) == CORPUS[:5000]
    assert codec_from_dict(json.loads(json.dumps(codec.to_dict()))).encode(CORPUS[:1000]) == ids[:1000]


def test_char_unknown_characters_error_names_them_and_position():
    codec = CharCodec.fit("abc d")
    with pytest.raises(ValueError) as e:
        codec.encode("ab d☃cé☃")
    msg = str(e.value)
    assert "'☃'" in msg and "'é'" in msg and "position 4" in msg and "char vocabulary of 5" in msg


def test_char_decode_rejects_ids_outside_vocab():
    with pytest.raises(ValueError, match=r"\[7\].*0\.\.2"):
        CharCodec.fit("abc").decode([0, 7])


# -- byte ------------------------------------------------------------------------------------------


@SETTINGS
@given(st.text())
def test_byte_round_trip_any_text(s):
    codec = ByteCodec()
    ids = codec.encode(s)
    assert codec.decode(ids) == s and stream(codec, ids) == s
    assert all(0 <= i < 256 for i in ids)


@SETTINGS
@given(st.lists(st.integers(0, 256), max_size=40))
def test_byte_stream_equals_decode_on_any_ids(ids):
    codec = ByteCodec(eos=True)
    assert stream(codec, ids) == codec.decode(ids)


def test_byte_invalid_utf8_is_replaced_and_stream_waits_for_whole_chars():
    codec = ByteCodec(eos=True)
    assert codec.vocab_size == 257 and codec.eos_id == 256
    assert codec.decode([0xFF, ord("a"), 256]) == "\ufffda"
    dec = StreamDecoder(codec)
    assert [dec.push(b) for b in "é€".encode()] == ["", "é", "", "", "€"]


# -- bpe -------------------------------------------------------------------------------------------


def test_gpt2_byte_table_matches_tokenizers_alphabet():
    table = _unicode_to_byte()
    assert sorted(table.values()) == list(range(256))
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table["Ġ"] == ord(" ") and table["Ċ"] == ord("\n") and table["a"] == ord("a")


@pytest.mark.parametrize("s", HARD)
def test_bpe_round_trips_hard_strings(bpe, s):
    ids = bpe.encode(s)
    assert bpe.decode(ids) == s and stream(bpe, ids) == s


@SETTINGS
@given(st.text())
def test_bpe_round_trip_any_text(bpe, s):
    ids = bpe.encode(s)
    assert bpe.decode(ids) == s and stream(bpe, ids) == s


@SETTINGS
@given(st.lists(st.integers(0, 599), max_size=30))
def test_bpe_stream_equals_decode_on_any_ids(bpe, ids):
    assert stream(bpe, ids) == bpe.decode(ids)


def test_bpe_fit_compresses_and_eos_is_special(bpe):
    assert bpe.vocab_size == 600 and bpe.eos_id == 0
    text = CORPUS[:5000]
    assert len(bpe.encode(text)) < 0.6 * len(text.encode())
    assert bpe.encode(f"a{EOT}b").count(bpe.eos_id) == 1


def test_bpe_state_and_files_rebuild_identical_codec(bpe, tmp_path):
    again = codec_from_dict(json.loads(json.dumps(bpe.to_dict())))
    loaded = load_codec(bpe.save(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file()
    for codec in (again, loaded):
        assert isinstance(codec, BPECodec) and codec.eos_id == bpe.eos_id
        assert [codec.encode(s) for s in HARD] == [bpe.encode(s) for s in HARD]


def test_bpe_fit_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size >= 256 bytes \\+ 1 special.*got 100"):
        BPECodec.fit(["abc"], vocab_size=100)


def test_bpe_from_gpt2_files_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    trained = ByteLevelBPETokenizer()  # writes GPT-2's format: vocab.json + merges.txt
    trained.train_from_iterator([CORPUS[:100_000]], vocab_size=700, special_tokens=[EOT], show_progress=False)
    trained.save_model(str(tmp_path))
    codec = BPECodec.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    reference = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))
    assert codec.vocab_size == len(reference) == 700 and codec.eos_id == reference.eos_token_id
    for s in [*HARD, CORPUS[:3000], " leading space", "The assert statement"]:
        ids = codec.encode(s)
        assert ids == reference(s)["input_ids"], s
        assert codec.decode(ids) == s == reference.decode(ids)


# -- factory ---------------------------------------------------------------------------------------


def test_build_text_codec_kinds_and_errors():
    assert isinstance(build_text_codec("char", "hello"), CharCodec)
    assert build_text_codec("byte", "anything").vocab_size == 256
    assert build_text_codec("bpe", ["hello world " * 20], vocab_size=300).vocab_size <= 300
    with pytest.raises(ValueError, match="needs vocab_size"):
        build_text_codec("bpe", "hello", None)
    with pytest.raises(ValueError, match="only for codec 'bpe'.*vocab_size=10"):
        build_text_codec("char", "hello", 10)
    with pytest.raises(ValueError, match="unknown text codec 'word'.*'char', 'byte', 'bpe'"):
        build_text_codec("word", "hello", None)  # type: ignore[arg-type]


def test_one_table_of_text_codecs_serves_the_streaming_preparation_too(tmp_path):
    """zoo-prepare's codecs come from the same table and checks as the in-memory ones: the same errors, and the
    same codec from the same text (the streaming char codec also holds the document separator)."""
    from zoo.data.streaming.prepare import DOC_SEPARATOR, Piece, build_codec

    assert typing.get_args(TextCodecKind) == tuple(TEXT_CODECS) == ("char", "byte", "bpe")
    assert all(cls.type_name == kind for kind, cls in TEXT_CODECS.items())
    text = "héllo wörld, the corpus\n" * 40
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    pieces = [Piece(str(tmp_path / "a.txt"), 0, len(text.encode()), True)]

    def streamed(kind, vocab_size=None):
        return build_codec(kind, pieces, vocab_size=vocab_size, num_workers=1, fit_bytes=10**6)

    for kind, vocab_size, message in (("word", None, "unknown text codec 'word'; accepted: 'char', 'byte', 'bpe'"),
                                      ("bpe", None, "codec 'bpe' needs vocab_size"),
                                      ("char", 300, "vocab_size is only for codec 'bpe'; codec 'char' got")):
        for build in (streamed, lambda k, v: build_text_codec(k, text, v)):
            with pytest.raises(ValueError, match=message):
                build(kind, vocab_size)
    assert streamed("char").to_dict() == build_text_codec("char", text + DOC_SEPARATOR).to_dict()
    assert streamed("byte").to_dict() == build_text_codec("byte", text, eos=True).to_dict()
    assert streamed("bpe", 300).to_dict() == build_text_codec("bpe", text.splitlines(keepends=True), 300).to_dict()
