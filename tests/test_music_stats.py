"""Objective music statistics (zoo.eval.music_stats) on pieces whose answers are known by construction."""

from __future__ import annotations

import pretty_midi
import pytest

from zoo.eval.music_stats import card_table, compare, music_stats, total_variation


def piece(notes, drums=()):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in notes]
    pm.instruments.append(inst)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        kit.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in drums]
        pm.instruments.append(kit)
    return pm


def test_a_scale_of_equal_notes():
    pm = piece([(60 + i, i * 0.5, i * 0.5 + 0.5) for i in range(12)], drums=[(36, 0, 0.1)])  # drums ignored
    s = music_stats([pm])
    assert s["notes"] == 12 and s["pitch_class"] == pytest.approx([1 / 12] * 12)
    assert s["note_length"][3] == pytest.approx(1.0)  # every note lasts 0.5 s: the [0.5, 1) bin
    assert s["polyphony"] == pytest.approx(1.0, abs=0.03) and s["silence"] == pytest.approx(0.0, abs=0.01)
    assert s["held_over_4s"] == 0 and s["notes_per_second"] == pytest.approx(2.0)


def test_chords_silence_and_held_notes():
    # a 3-note chord for 1 s, 1 s of silence, then one note held 5 s
    pm = piece([(60, 0, 1), (64, 0, 1), (67, 0, 1), (72, 2, 7)])
    s = music_stats([pm])
    assert s["polyphony"] == pytest.approx((3 * 1 + 1 * 5) / 6, rel=0.02)
    assert s["silence"] == pytest.approx(1 / 7, abs=0.01)
    assert s["held_over_4s"] == pytest.approx(0.25)
    assert s["pitch_class"][0] == pytest.approx(6 / 8)  # C: 1 s + 5 s of 8 note-seconds


def test_compare_is_zero_for_the_same_music_and_grows_with_difference():
    a = music_stats([piece([(60, 0, 1), (62, 1, 2)])])
    b = music_stats([piece([(61, 0, 6)])])
    same = compare(a, a)
    assert all(v == 0 for v in same.values())
    diff = compare(b, a)
    assert diff["pitch_class_tv"] == 1.0 and diff["held_over_4s_diff"] == 1.0
    assert total_variation([0.5, 0.5], [1.0, 0.0]) == 0.5


def test_no_notes_is_an_error():
    with pytest.raises(ValueError, match="no notes"):
        music_stats([pretty_midi.PrettyMIDI()])


def test_card_table_goes_into_the_model_card_through_a_card_file(tmp_path):
    import json

    from zoo.export import read_card_file
    from zoo.hub.export import model_card

    samples = music_stats([piece([(60, 0, 1), (64, 0, 1), (67, 0, 1), (72, 2, 7)])])
    reference = music_stats([piece([(60 + i, i * 0.5, i * 0.5 + 0.5) for i in range(12)])])
    result = {"samples": samples, "reference": reference, "distance": compare(samples, reference)}
    table = card_table(result, command="python benchmarks/music_stats.py m", about="1 sample against 1 piece")
    assert table["header"] == ["statistic", "samples (1)", "validation data (1 pieces)"]
    assert [row[0] for row in table["rows"]][:2] == ["mean polyphony (notes sounding when any sounds)",
                                                    "notes held longer than 4 s"]
    assert table["rows"][1][1:] == ["25.0 %", "0.0 %"] and table["rows"][3][1:] == ["0.6", "2.0"]
    assert table["rows"][4] == ["pitch-class histogram, total variation to the data",
                                f"{result['distance']['pitch_class_tv']:.2f}", "0"]
    (tmp_path / "card.json").write_text(json.dumps({"sample_stats": table}))
    fields = read_card_file(str(tmp_path / "card.json"))
    assert fields == {"sample_stats": table} and read_card_file(None) == {}
    config = {"model_type": "music_transformer", "dtype": "float16", "model_config": {},
              "card": {"parameters": 10, "data": "bach_chorales", **fields}}
    text = model_card("m", config, "music")
    assert ("## Sample statistics\n\n1 sample against 1 piece. Measured with `python benchmarks/music_stats.py m`."
            in text)
    assert "| notes held longer than 4 s | 25.0 % | 0.0 % |" in text
    assert "Sample statistics" not in model_card("m", config | {"card": {"parameters": 10}}, "music")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object of card fields, got list"):
        read_card_file(str(tmp_path / "bad.json"))
