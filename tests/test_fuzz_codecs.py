"""Property-based tests (hypothesis) of every codec and of the MIDI / image file readers.

Contracts proven here (RELIABILITY.md lists them):
  * text: `ByteCodec` and `BPECodec` round-trip every str that is valid Unicode and reject lone
    surrogates with a ValueError naming them; `CharCodec` (a closed vocabulary) round-trips every
    str made of its characters and rejects any other with a ValueError naming the characters.
  * MIDI: any id sequence in the vocabulary (any codec options) decodes to valid MIDI — pitches and
    velocities in range, every note closed with end > start >= 0 — that pretty_midi writes and reads back.
  * JSB grid, image patch and text+image codecs: exact round trips on arbitrary inputs of their domain,
    clear errors outside it.
  * Arbitrary bytes given to `load_midi` give a PrettyMIDI or a `MidiError` naming the file; given to
    the image-folder reader they give an image or a skip (None); nothing else ever escapes.

Hypothesis runs derandomized (fixed examples, CI-stable) and without an example database.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pretty_midi
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.jsb import JSBGridCodec
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import MidiError, load_midi, notes_to_midi
from zoo.codecs.text import BPECodec, ByteCodec, CharCodec, StreamDecoder
from zoo.codecs.text_image import TextImageCodec
from zoo.data.image import ImageFolderDataModule

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_FEW = settings(FUZZ, max_examples=25)

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)  # every code point, surrogates too
VALID_TEXT = st.text(max_size=60)  # every code point except surrogates
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


@pytest.fixture(scope="module")
def bpe() -> BPECodec:
    return BPECodec.fit([topics[k] for k in sorted(topics)][:10], vocab_size=400)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ============================================================================ text codecs
@FUZZ
@given(ANY_TEXT)
def test_byte_codec_round_trips_valid_unicode_and_names_lone_surrogates(s):
    codec = ByteCodec(eos=True)
    if _has_surrogate(s):
        with pytest.raises(ValueError, match="lone surrogate") as e:
            codec.encode(s)
        first = next(i for i, c in enumerate(s) if "\ud800" <= c <= "\udfff")
        assert f"position {first}" in str(e.value) and repr(s[first]) in str(e.value)
        return
    ids = codec.encode(s)
    assert codec.decode(ids) == s
    dec = StreamDecoder(codec)
    assert "".join(dec.push(i) for i in ids) + dec.flush() == s


@FUZZ
@given(ANY_TEXT)
def test_bpe_codec_round_trips_valid_unicode_and_names_lone_surrogates(bpe, s):
    if _has_surrogate(s):
        with pytest.raises(ValueError, match="lone surrogate"):
            bpe.encode(s)
        with pytest.raises(ValueError, match="lone surrogate"):
            bpe.encode_batch(["fine", s])
        return
    ids = bpe.encode(s)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s and bpe.encode_batch([s, s]) == [ids, ids]


@FUZZ
@given(vocab=st.text(st.characters(exclude_categories=()), min_size=1, max_size=20), s=ANY_TEXT)
def test_char_codec_round_trips_its_alphabet_and_names_every_other_character(vocab, s):
    """Closed vocabulary: an exact round trip, or a ValueError naming the characters it lacks."""
    codec = CharCodec.fit(vocab)
    unknown = sorted(set(s) - set(vocab))
    if not unknown:
        assert codec.decode(codec.encode(s)) == s
        return
    with pytest.raises(ValueError, match="not in the vocabulary") as e:
        codec.encode(s)
    for c in unknown[:10]:
        assert repr(c) in str(e.value)
    assert f"position {min(s.index(c) for c in unknown)}" in str(e.value)


@FUZZ
@given(st.data())
def test_text_codecs_reject_ids_outside_the_vocabulary(bpe, data):
    codec = data.draw(st.sampled_from([ByteCodec(), ByteCodec(eos=True), CharCodec.fit("abc"), bpe]))
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=codec.vocab_size)))
    ids = data.draw(st.lists(st.integers(0, codec.vocab_size - 1), max_size=5)) + [bad]
    with pytest.raises(ValueError, match=rf"\[{bad}\].*0\.\.{codec.vocab_size - 1}"):
        codec.decode(ids)


# ============================================================================ MIDI codec
PERFORMANCE_CODECS = st.builds(
    PerformanceCodec,
    steps_per_second=st.sampled_from([1, 3, 10, 100, 125]),
    max_shift_steps=st.integers(1, 100),
    num_velocity_bins=st.integers(1, 127),
)


def assert_valid_midi(pm: pretty_midi.PrettyMIDI) -> None:
    for inst in pm.instruments:
        for n in inst.notes:
            assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127
            assert 0 <= n.start < n.end  # closed, positive duration


def _notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[float, float, int, int]]:
    return sorted((n.start, n.end, n.pitch, n.velocity) for inst in pm.instruments for n in inst.notes)


@FUZZ
@given(st.data())
def test_any_event_ids_decode_to_valid_midi_that_survives_a_file_round_trip(scratch, data):
    codec = data.draw(PERFORMANCE_CODECS)
    ids = data.draw(st.lists(st.integers(0, codec.vocab_size - 1), max_size=200))
    pm = codec.decode(ids)
    assert_valid_midi(pm)
    # the same pitch never sounds twice at once: every note-on in the file has its own note-off
    notes = codec.decode_notes(ids)
    for p in np.unique(notes[:, 2]):
        same = notes[notes[:, 2] == p]
        assert np.all(same[1:, 0] >= same[:-1, 1])
    buffer = io.BytesIO()
    pm.write(buffer)
    path = scratch / "decoded.mid"
    path.write_bytes(buffer.getvalue())
    back = load_midi(path, require_notes=False)
    assert_valid_midi(back)
    got, want = _notes(back), _notes(pm)
    assert len(got) == len(want)
    # 500 ticks per beat at 120 bpm: 1 ms per tick, so times come back within a tick
    assert all(abs(a[0] - b[0]) <= 1e-3 and abs(a[1] - b[1]) <= 1e-3 and a[2:] == b[2:] for a, b in zip(got, want))


@FUZZ
@given(st.data())
def test_event_ids_outside_the_vocabulary_are_a_clear_error(data):
    codec = data.draw(PERFORMANCE_CODECS)
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=codec.vocab_size)))
    with pytest.raises(ValueError, match=rf"\[{bad}\] are outside"):
        codec.decode([codec.note_on_offset + 60, bad])


NOTE_ROWS = st.tuples(st.floats(0, 30), st.floats(0, 5), st.integers(0, 127), st.integers(1, 127))


@FUZZ
@given(st.lists(NOTE_ROWS, max_size=40))
def test_any_note_list_encodes_to_its_canonical_form(rows):
    codec = PerformanceCodec()
    notes = np.array([(s, s + d, p, v) for s, d, p, v in rows], dtype=np.float64).reshape(-1, 4)
    ids = codec.encode_notes(notes).tolist()
    assert all(0 <= i < codec.vocab_size for i in ids)
    assert codec.encode(codec.decode(ids)) == ids  # the canonical form is a fixed point
    assert_valid_midi(codec.decode(ids))


# ============================================================================ MIDI file reader
def _valid_midi_bytes() -> bytes:
    buffer = io.BytesIO()
    notes_to_midi(np.array([[0, 0.5, 60, 80], [0.5, 1.0, 64, 90], [1.0, 2.0, 67, 100]])).write(buffer)
    return buffer.getvalue()


VALID_MIDI = _valid_midi_bytes()


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


MIDI_BYTES = st.one_of(
    st.binary(max_size=300),  # anything at all
    st.binary(max_size=200).map(lambda b: b"MThd\x00\x00\x00\x06" + b),  # a plausible header, then junk
    st.builds(_mutate, st.just(VALID_MIDI), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                        max_size=8), st.none() | st.integers(0, len(VALID_MIDI))),
)


@FUZZ
@given(MIDI_BYTES)
def test_arbitrary_bytes_give_midi_or_a_midi_error_naming_the_file(scratch, payload):
    path = scratch / "fuzzed file.mid"
    path.write_bytes(payload)
    try:
        pm = load_midi(path)
    except MidiError as e:
        assert str(path) in str(e) and isinstance(e, ValueError)
    else:
        assert any(inst.notes for inst in pm.instruments)
        codec = PerformanceCodec()
        ids = codec.encode(pm)  # whatever parsed also encodes to valid events
        assert_valid_midi(codec.decode(ids))


# ============================================================================ JSB grid codec
@FUZZ
@given(st.data())
def test_jsb_grids_round_trip_exactly_or_name_the_pitch_out_of_range(data):
    lo = data.draw(st.integers(0, 127))
    codec = JSBGridCodec(min_pitch=lo, max_pitch=data.draw(st.integers(lo, 127)))
    grid = np.array(data.draw(st.lists(st.lists(st.integers(-1, 127), min_size=4, max_size=4), max_size=30)),
                    dtype=np.int64).reshape(-1, 4)
    sounding = grid[grid >= 0]
    if len(sounding) and (sounding.min() < codec.min_pitch or sounding.max() > codec.max_pitch):
        with pytest.raises(ValueError, match="outside this codec's range"):
            codec.encode(grid)
        return
    ids = codec.encode(grid)
    assert np.array_equal(codec.decode(ids), grid)


@FUZZ_FEW
@given(st.lists(st.integers(0, JSBGridCodec().vocab_size - 1), max_size=120))
def test_jsb_any_ids_decode_to_a_grid_that_plays_as_valid_midi(ids):
    codec = JSBGridCodec()
    grid = codec.decode(ids)
    assert grid.shape[1] == 4 and np.all((grid == -1) | ((grid >= 36) & (grid <= 81)))
    pm = codec.to_midi(grid)
    assert_valid_midi(pm)
    buffer = io.BytesIO()
    pm.write(buffer)
    assert len(_notes(pretty_midi.PrettyMIDI(io.BytesIO(buffer.getvalue())))) == len(_notes(pm))


# ============================================================================ image patch codec
@st.composite
def image_codecs(draw) -> ImagePatchCodec:
    p = draw(st.integers(1, 4))
    return ImagePatchCodec(height=p * draw(st.integers(1, 4)), width=p * draw(st.integers(1, 4)),
                           channels=draw(st.sampled_from([1, 3])), levels=draw(st.integers(2, 256)), patch_size=p)


@FUZZ
@given(st.data())
def test_image_codec_round_trips_any_image_of_its_shape_and_levels(data):
    codec = data.draw(image_codecs())
    tokens = data.draw(hnp.arrays(np.int64, codec.tokens_per_image, elements=st.integers(0, codec.levels - 1)))
    image = codec.decode(tokens.tolist())
    assert tuple(image.shape) == codec.image_shape and image.min() >= 0 and image.max() <= 1
    assert codec.encode(image) == tokens.tolist()  # levels -> image -> levels: exact
    # any float image: quantised to the nearest level
    floats = data.draw(hnp.arrays(np.float32, codec.image_shape, elements=st.floats(0, 1, width=32)))
    back = codec.decode(codec.encode(floats))
    assert torch.all((back - torch.from_numpy(floats)).abs() <= 0.5 / (codec.levels - 1) + 1e-6)


@FUZZ
@given(st.data())
def test_image_codec_uint8_images_are_exact_at_256_levels(data):
    codec = data.draw(image_codecs()).__class__(**{**data.draw(image_codecs()).config(), "levels": 256})
    pixels = data.draw(hnp.arrays(np.uint8, codec.image_shape))
    assert torch.equal(torch.round(codec.decode(codec.encode(pixels)) * 255).to(torch.uint8),
                       torch.from_numpy(pixels))


@FUZZ_FEW
@given(st.data())
def test_image_codec_rejects_what_it_cannot_represent(data):
    codec = data.draw(image_codecs())
    bad_value = data.draw(st.sampled_from([float("nan"), float("inf"), -0.5, 1.5]))
    image = torch.zeros(codec.image_shape)
    image[0, 0, 0] = bad_value
    with pytest.raises(ValueError, match="NaN or infinite|values in \\[0, 1\\]"):
        codec.encode(image)
    with pytest.raises(ValueError, match="expected an image of shape"):
        codec.encode(torch.zeros(codec.channels, codec.height + 1, codec.width))
    with pytest.raises(ValueError, match=rf"\[0, {codec.levels}\)"):
        codec.decode([codec.levels] * codec.tokens_per_image)


# ============================================================================ text + image codec
@FUZZ
@given(captions=st.lists(st.text(max_size=12), min_size=1, max_size=4), query=ANY_TEXT,
       on_long=st.sampled_from(["truncate", "error"]), text_len=st.none() | st.integers(2, 12))
def test_text_image_captions_round_trip_or_fail_naming_the_problem(captions, query, on_long, text_len):
    image = ImagePatchCodec(height=2, width=2, levels=4)
    codec = TextImageCodec.fit(captions + ["ab"], image, text_len=text_len, on_long=on_long)
    unknown = sorted(set(query) - set(codec.text.chars))
    if unknown:
        with pytest.raises(ValueError, match="not in the vocabulary") as e:
            codec.encode_caption(query)
        assert repr(unknown[0]) in str(e.value)
        return
    if len(query) > codec.text_len and on_long == "error":
        with pytest.raises(ValueError, match=f"longer than text_len={codec.text_len}"):
            codec.encode_caption(query)
        return
    ids = codec.caption_ids([query])
    assert ids.shape == (1, codec.text_len)
    assert codec.decode_caption(ids[0]) == query[:codec.text_len]
    full = codec.encode((query, torch.zeros(1, 2, 2)))
    assert codec.decode(full)[0] == query[:codec.text_len]


# ============================================================================ image-folder reader
def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    mode = {"PNG": "RGBA", "JPEG": "RGB", "GIF": "P", "BMP": "RGB", "TIFF": "L", "WEBP": "RGB"}[fmt]
    Image.new(mode, (5, 4), color=(90 if mode in ("L", "P") else (10, 200, 30, 255)[:len(mode)])).save(buffer, fmt)
    return buffer.getvalue()


IMAGE_SEEDS = [_image_bytes(f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]
IMAGE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.builds(_mutate, st.sampled_from(IMAGE_SEEDS),
              st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
              st.none() | st.integers(0, 400)),
)


@FUZZ
@given(IMAGE_BYTES)
def test_arbitrary_bytes_in_an_image_folder_give_an_image_or_a_skip(payload):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.png"
        path.write_bytes(payload)
        dm = ImageFolderDataModule(root=tmp, height=4, width=4, channels=3, levels=16, patch_size=2)
        arr = dm._read(path)
        if arr is not None:
            assert arr.shape == (3, 4, 4) and arr.dtype == np.uint8


@FUZZ
@given(query=ANY_TEXT, on_long=st.sampled_from(["truncate", "error"]), text_len=st.integers(2, 24))
def test_text_image_byte_captions_take_any_unicode(query, on_long, text_len):
    codec = TextImageCodec(text=ByteCodec(), image=ImagePatchCodec(height=2, width=2, levels=4), text_len=text_len,
                           on_long=on_long)
    if _has_surrogate(query):
        with pytest.raises(ValueError, match="lone surrogate"):
            codec.encode_caption(query)
        return
    n = len(query.encode("utf-8"))
    if n > text_len and on_long == "error":
        with pytest.raises(ValueError, match=f"{n} tokens, longer than text_len={text_len}"):
            codec.encode_caption(query)
        return
    ids = codec.caption_ids([query])[0]
    expected = query.encode("utf-8")[:text_len].decode("utf-8", errors="replace")  # a cut character -> U+FFFD
    assert codec.decode_caption(ids) == expected and (n > text_len or expected == query)
