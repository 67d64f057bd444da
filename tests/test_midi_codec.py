"""PerformanceCodec (MIDI <-> events) and zoo.members.music_render: layout, exact round trips, robustness."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.codecs.base import codec_from_dict, load_codec
from zoo.codecs.midi import BOS_ID, EOS_ID, PAD_ID, PerformanceCodec
from zoo.codecs.midi_files import MidiError, load_midi, midi_notes, notes_to_midi, stretch_notes, transpose_notes

SPS = 100


# ----------------------------------------------------------------------------- fixtures
def make_midi(*instruments: dict) -> pretty_midi.PrettyMIDI:
    """instruments: dicts with notes [(start, end, pitch, velocity)], optional program, drum, pedal
    [(time, value)] (CC64)."""
    pm = pretty_midi.PrettyMIDI()
    for spec in instruments:
        inst = pretty_midi.Instrument(program=spec.get("program", 0), is_drum=spec.get("drum", False))
        for s, e, p, v in spec["notes"]:
            inst.notes.append(pretty_midi.Note(velocity=v, pitch=p, start=s, end=e))
        for t, value in spec.get("pedal", []):
            inst.control_changes.append(pretty_midi.ControlChange(number=64, value=value, time=t))
        pm.instruments.append(inst)
    return pm


FIXTURES = {
    "melody": make_midi({"notes": [(0.0, 0.5, 60, 80), (0.5, 1.0, 62, 81), (1.0, 2.0, 64, 127), (2.0, 2.25, 65, 1)]}),
    "chords_overlapping": make_midi({"notes": [
        (0.0, 1.0, 60, 70), (0.0, 1.0, 64, 90), (0.0, 1.0, 67, 110), (0.5, 1.5, 72, 40), (0.987, 1.234, 48, 64),
        (1.0, 1.0004, 50, 64)]}),  # the last is shorter than a step: it must last one step
    "same_pitch_overlaps": make_midi({"notes": [
        (0.0, 1.0, 60, 80), (0.5, 0.8, 60, 100), (2.0, 3.0, 62, 50), (2.0, 2.5, 62, 120), (3.0, 3.2, 62, 30)]}),
    "sustain": make_midi({"notes": [(0.0, 0.5, 60, 80), (0.1, 0.3, 64, 80), (1.0, 1.2, 60, 90), (2.5, 2.7, 67, 80),
                                    (3.1, 3.3, 69, 80), (4.0, 4.5, 71, 80)],
                          "pedal": [(0.2, 127), (2.0, 0), (3.0, 100), (3.05, 20), (3.2, 64)]}),
    "long_gaps": make_midi({"notes": [(1.7, 2.0, 60, 80), (5.0, 5.1, 61, 80), (5.1, 9.45, 62, 80),
                                      (30.0, 30.01, 63, 80)]}),
    "multi_instrument_drums": make_midi(
        {"program": 0, "notes": [(0.0, 1.0, 60, 80), (1.0, 2.0, 62, 80)]},
        {"program": 40, "notes": [(0.5, 1.5, 72, 60), (0.5, 0.75, 60, 100)]},
        {"program": 0, "drum": True, "notes": [(0.0, 0.1, 36, 100), (0.5, 0.6, 38, 100)]},
    ),
}


def reference_canonical(notes: np.ndarray, sps: int = SPS, bins: int = 32) -> list[tuple[int, int, int, int]]:
    """Slow, loop-based statement of the canonical form: (start step, end step, pitch, velocity bin)."""
    by_pitch = defaultdict(list)
    for s, e, p, v in notes.tolist():
        start = max(math.floor(s * sps + 0.5), 0)
        end = max(math.floor(e * sps + 0.5), start + 1)
        by_pitch[int(p)].append([start, end, int(p), (int(v) - 1) * bins // 127])
    out = []
    for pitch_notes in by_pitch.values():
        kept: list[list[int]] = []
        for n in sorted(pitch_notes, key=lambda n: (n[0], -n[1], -n[3])):
            if kept and kept[-1][0] == n[0]:
                continue  # same onset: the first (longest) wins
            if kept and kept[-1][1] > n[0]:
                kept[-1][1] = n[0]  # re-struck while sounding
            kept.append(n)
        out += [tuple(n) for n in kept]
    return sorted(out)


def as_steps(codec: PerformanceCodec, notes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Decoded notes in the reference's units (steps, velocity bin)."""
    return sorted((round(s * SPS), round(e * SPS), int(p), int(codec._bin_of_velocity[int(v)]))
                  for s, e, p, v in notes.tolist())


@pytest.fixture(scope="module")
def codec() -> PerformanceCodec:
    return PerformanceCodec()


# ----------------------------------------------------------------------------- layout and config
def test_vocabulary_layout(codec):
    assert codec.vocab_size == 3 + 128 + 128 + 100 + 32 == 391
    assert (PAD_ID, BOS_ID, EOS_ID) == (codec.pad_id, codec.bos_id, codec.eos_id) == (0, 1, 2)
    names = [codec.describe(i) for i in range(codec.vocab_size)]
    assert names[:5] == ["PAD", "BOS", "EOS", "NOTE_ON(0)", "NOTE_ON(1)"]
    assert names[3 + 127] == "NOTE_ON(127)" and names[131] == "NOTE_OFF(0)" and names[258] == "NOTE_OFF(127)"
    assert names[259] == "TIME_SHIFT(10ms)" and names[358] == "TIME_SHIFT(1000ms)"
    assert names[359] == "VELOCITY(bin 0)" and names[390] == "VELOCITY(bin 31)"
    assert len(set(names)) == codec.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        codec.describe(391)


def test_velocity_bins_cover_1_to_127_and_decode_inside_their_bin():
    for bins in (1, 8, 32, 127):
        c = PerformanceCodec(num_velocity_bins=bins)
        b = c._bin_of_velocity[1:]
        assert b[0] == 0 and b[-1] == bins - 1 and np.all(np.diff(b) >= 0) and set(b) == set(range(bins))
        assert np.array_equal(c._bin_of_velocity[c._velocity_of_bin], np.arange(bins))


def test_config_round_trips_through_dict_and_folder(tmp_path):
    c = PerformanceCodec(steps_per_second=50, max_shift_steps=80, num_velocity_bins=16, sustain=False,
                         programs=[0, 1], instruments=[2])
    for again in (codec_from_dict(c.to_dict()), load_codec(c.save(tmp_path))):
        assert isinstance(again, PerformanceCodec) and again.config() == c.config()
        assert again.vocab_size == 3 + 256 + 80 + 16


@pytest.mark.parametrize("kwargs, message", [
    ({"steps_per_second": 0}, "steps_per_second"), ({"max_shift_steps": 0}, "max_shift_steps"),
    ({"num_velocity_bins": 128}, "num_velocity_bins"), ({"programs": [128]}, "programs"),
    ({"instruments": [-1]}, "instruments"),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PerformanceCodec(**kwargs)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_round_trip_on_generated_fixtures(codec, name, tmp_path):
    pm = FIXTURES[name]
    ids = codec.encode(pm)
    decoded = codec.decode(ids)
    assert codec.encode(decoded) == ids  # exact
    assert as_steps(codec, codec.decode_notes(ids)) == reference_canonical(codec.extract_notes(pm))
    # and through a file on disk (ticks): still exact
    decoded.write(str(tmp_path / "x.mid"))
    assert codec.encode(tmp_path / "x.mid") == ids
    assert [i.program for i in decoded.instruments] == [0]


def test_plain_notes_come_back_within_quantization(codec):
    pm = FIXTURES["melody"]
    got = codec.decode_notes(codec.encode(pm))
    want = midi_notes(pm)
    assert got.shape == want.shape
    assert np.abs(got[:, :2] - want[:, :2]).max() <= 0.005 + 1e-9  # half a 10 ms step
    assert np.array_equal(got[:, 2], want[:, 2])
    bins = codec._bin_of_velocity
    assert np.array_equal(bins[got[:, 3].astype(int)], bins[want[:, 3].astype(int)])


def test_sustain_extends_to_pedal_release_or_restrike(codec):
    pm = FIXTURES["sustain"]
    by_pitch = defaultdict(list)
    for s, e, p, _ in codec.extract_notes(pm).tolist():
        by_pitch[int(p)].append((round(s, 6), round(e, 6)))
    assert by_pitch[64] == [(0.1, 2.0)]  # released at 0.3 under the pedal (down 0.2, up 2.0)
    assert by_pitch[60] == [(0.0, 2.0), (1.0, 2.0)]  # both held; the canonical form cuts the first at 1.0
    assert by_pitch[67] == [(2.5, 2.7)]  # no pedal
    assert by_pitch[69] == [(3.1, 4.5)]  # pedal tapped 3.0-3.05, down again at 3.2 and never released
    assert by_pitch[71] == [(4.0, 4.5)]
    notes = codec.extract_notes(pm)
    assert [(s, e) for s, e, p, _ in reference_canonical(notes) if p == 60] == [(0, 100), (100, 200)]
    assert as_steps(codec, codec.decode_notes(codec.encode(pm))) == reference_canonical(notes)
    no_pedal = PerformanceCodec(sustain=False).extract_notes(pm)
    assert np.array_equal(no_pedal, midi_notes(pm))


def test_long_gaps_use_runs_of_one_second_shifts(codec):
    ids = codec.encode(make_midi({"notes": [(0.0, 0.1, 60, 80), (2.6, 2.7, 61, 80)]}))
    names = [codec.describe(i) for i in ids]
    assert names == ["VELOCITY(bin 19)", "NOTE_ON(60)", "TIME_SHIFT(100ms)", "NOTE_OFF(60)",
                     "TIME_SHIFT(1000ms)", "TIME_SHIFT(1000ms)", "TIME_SHIFT(500ms)", "NOTE_ON(61)",
                     "TIME_SHIFT(100ms)", "NOTE_OFF(61)"]
    # leading silence is kept
    assert codec.describe(codec.encode(make_midi({"notes": [(1.25, 1.5, 60, 80)]}))[0]) == "TIME_SHIFT(1000ms)"


def test_event_order_at_one_time_step(codec):
    ids = codec.encode(make_midi({"notes": [(0.0, 0.5, 64, 100), (0.0, 0.5, 60, 20), (0.5, 1.0, 64, 20),
                                            (0.5, 1.0, 62, 100)]}))
    names = [codec.describe(i) for i in ids]
    assert names == ["VELOCITY(bin 4)", "NOTE_ON(60)", "VELOCITY(bin 24)", "NOTE_ON(64)", "TIME_SHIFT(500ms)",
                     "NOTE_OFF(60)", "NOTE_OFF(64)", "VELOCITY(bin 4)", "NOTE_ON(64)", "VELOCITY(bin 24)",
                     "NOTE_ON(62)", "TIME_SHIFT(500ms)", "NOTE_OFF(62)", "NOTE_OFF(64)"]


def test_program_and_instrument_selection_drop_drums():
    pm = FIXTURES["multi_instrument_drums"]
    pitches = lambda c: sorted(int(p) for p in c.extract_notes(pm)[:, 2])  # noqa: E731
    assert pitches(PerformanceCodec()) == [60, 60, 62, 72]  # drums (36, 38) never
    assert pitches(PerformanceCodec(programs=[40])) == [60, 72]
    assert pitches(PerformanceCodec(instruments=[0])) == [60, 62]
    assert pitches(PerformanceCodec(instruments=[2])) == []  # the drum track
    assert pitches(PerformanceCodec(programs=[0], instruments=[1])) == []


def test_encode_times_match_a_replay(codec):
    notes = codec.extract_notes(FIXTURES["long_gaps"])
    ids, times = codec.encode_notes(notes, return_times=True)
    step = 0
    for i, t in zip(ids.tolist(), times.tolist()):
        assert t == step
        if codec.shift_offset <= i < codec.velocity_offset:
            step += i - codec.shift_offset + 1
    assert step == 3001


def test_bach_chorales_from_music21_round_trip(codec, tmp_path):
    pytest.importorskip("music21")
    from music21 import converter, corpus

    for name in ("bwv10.7.mxl", "bwv1.6.mxl", "bwv26.6.mxl"):
        path = next(p for p in corpus.getComposer("bach") if Path(p).name == name)
        converter.parse(path).write("midi", fp=str(tmp_path / f"{name}.mid"))
        pm = load_midi(tmp_path / f"{name}.mid")
        ids = codec.encode(pm)
        assert len(ids) > 200
        assert codec.encode(codec.decode(ids)) == ids
        raw = codec.extract_notes(pm)
        assert as_steps(codec, codec.decode_notes(ids)) == reference_canonical(raw)
        # voices doubling a pitch merge; every other note comes back within 5 ms
        got = codec.decode_notes(ids)
        for s, _, p, _ in got.tolist():
            starts = raw[(raw[:, 2] == p)]
            assert np.min(np.abs(starts[:, 0] - s)) <= 0.005 + 1e-9


# ----------------------------------------------------------------------------- decoding anything
def check_valid(pm: pretty_midi.PrettyMIDI) -> None:
    for inst in pm.instruments:
        for n in inst.notes:
            assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.end > n.start >= 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 390), max_size=300))
def test_any_id_sequence_decodes_to_valid_midi_and_reencodes_stably(ids):
    codec = PerformanceCodec()
    pm = codec.decode(ids)
    check_valid(pm)
    again = codec.encode(pm)
    assert codec.encode(codec.decode(again)) == again
    assert np.array_equal(codec.decode_notes(again), codec.decode_notes(ids))


def test_decoding_rules(codec):
    on, off = codec.note_on_offset, codec.note_off_offset
    shift = lambda k: codec.shift_offset + k - 1  # noqa: E731
    notes = lambda ids: [tuple(n) for n in codec.decode_notes(ids).tolist()]  # noqa: E731
    v = float(codec._velocity_of_bin[codec._bin_of_velocity[64]])
    assert notes([off + 60, shift(5)]) == []  # unmatched note-off ignored
    assert notes([on + 60, shift(10), on + 60, shift(5), off + 60]) == [(0, 0.1, 60, v), (0.1, 0.15, 60, v)]
    assert notes([on + 60, shift(7)]) == [(0, 0.07, 60, v)]  # closed at the end time
    assert notes([on + 60, off + 60, on + 61]) == []  # zero length: dropped
    assert notes([BOS_ID, on + 60, PAD_ID, shift(2), EOS_ID, off + 60]) == [(0, 0.02, 60, v)]
    assert notes([codec.velocity_offset + 31, on + 1, shift(1)]) == [(0, 0.01, 1, 126.0)]
    assert notes(torch.tensor([on + 60, shift(3)])) == notes(np.array([on + 60, shift(3)])) == [(0, 0.03, 60, v)]
    with pytest.raises(ValueError, match=r"\[391, -1\].*0\.\.390"):
        codec.decode([on + 60, 391, -1])


# ----------------------------------------------------------------------------- augmentation helpers
def test_transpose_ids_equals_encoding_transposed_notes(codec):
    notes = codec.extract_notes(FIXTURES["chords_overlapping"])
    ids = codec.encode_notes(notes)
    for s in (-5, 0, 3, 12):
        assert codec.transpose(ids, s) == codec.encode_notes(transpose_notes(notes, s)).tolist()
    # out of range: those notes' events vanish, the rest decode as transposed
    high = codec.transpose(ids, 127 - 72 + 1)  # 72 -> 128 drops
    got = codec.decode_notes(high)
    assert sorted(got[:, 2].astype(int).tolist()) == sorted(p + 56 for p in (60, 64, 67, 48, 50))


def test_transpose_and_stretch_notes():
    notes = np.array([[0.0, 1.0, 0, 10], [0.5, 2.0, 60, 20], [1.0, 1.5, 127, 30]])
    assert transpose_notes(notes, 1)[:, 2].tolist() == [1, 61]
    assert transpose_notes(notes, -1)[:, 2].tolist() == [59, 126]
    assert stretch_notes(notes, 2.0)[:, :2].tolist() == [[0, 2], [1, 4], [2, 3]]
    assert np.array_equal(notes[:, 2], [0, 60, 127])  # inputs untouched
    with pytest.raises(ValueError, match="> 0"):
        stretch_notes(notes, 0)


# ----------------------------------------------------------------------------- bad files
def test_load_midi_errors_name_the_file_and_cause(tmp_path):
    good = tmp_path / "good.mid"
    notes_to_midi(np.array([[0, 1, 60, 80], [1, 2, 62, 80]])).write(str(good))
    data = good.read_bytes()
    cases = {
        "truncated.mid": (data[: len(data) // 2], "truncated"),
        "text.mid": (b"this is not a MIDI file at all\n", "not a readable MIDI file"),
        "zero_bytes.mid": (b"", "truncated"),
    }
    for name, (payload, cause) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(MidiError, match=cause) as info:
            load_midi(tmp_path / name)
        assert name in str(info.value) and isinstance(info.value, ValueError)
    pretty_midi.PrettyMIDI().write(str(tmp_path / "empty.mid"))
    with pytest.raises(MidiError, match="empty.mid: the MIDI file contains no notes"):
        load_midi(tmp_path / "empty.mid")
    assert load_midi(tmp_path / "empty.mid", require_notes=False).instruments == []
    with pytest.raises(FileNotFoundError, match="missing.mid"):
        load_midi(tmp_path / "missing.mid")
    assert len(load_midi(good).instruments[0].notes) == 2


# ----------------------------------------------------------------------------- rendering
def test_render_midi_wav_piano_roll_and_mel(tmp_path, codec):
    soundfile = pytest.importorskip("soundfile")
    from PIL import Image

    from zoo.members.music_render import mel_spectrogram, piano_roll_image, piano_roll_png, render_wav, write_midi

    pm = codec.decode(codec.encode(FIXTURES["melody"]))
    assert codec.encode(write_midi(pm, tmp_path / "a" / "m.mid")) == codec.encode(pm)
    wav = render_wav(pm, tmp_path / "a" / "m.wav", sample_rate=8000)
    audio, sr = soundfile.read(wav)
    assert sr == 8000 and abs(len(audio) / sr - pm.get_end_time()) < 1.1
    assert 0.85 < np.abs(audio).max() <= 0.91  # peak-normalised to 0.9
    png = piano_roll_png(pm, tmp_path / "a" / "roll.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1000, 400)
    assert piano_roll_image(pretty_midi.PrettyMIDI()).shape == (400, 1000, 3)  # empty MIDI still draws

    sr = 8000
    t = np.arange(sr) / sr
    low = mel_spectrogram(np.sin(2 * np.pi * 110 * t), sr, n_mels=40)
    high = mel_spectrogram(np.sin(2 * np.pi * 3000 * t), sr, n_mels=40)
    assert low.dtype == np.uint8 and low.shape[0] == 40 and low.max() == 255
    # row 0 is the highest band: the low tone is brightest near the bottom, the high one near the top
    assert low.mean(axis=1).argmax() > 30 and high.mean(axis=1).argmax() < 15
