"""Multitrack MIDI (issue 16): zoo/codecs/multitrack.py (a miditok tokenizer with programs and drums in one
stream), `data=midi_folder data/codec=multitrack`, and the music member's samples of such a model."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from helpers import TINY, compose_train, run_cli

pytest.importorskip("miditok")

from zoo.codecs.base import codec_from_dict  # noqa: E402
from zoo.codecs.midi import PerformanceCodec  # noqa: E402
from zoo.codecs.midi_files import MidiError  # noqa: E402
from zoo.codecs.multitrack import PITCH_RANGE, TOKENIZATIONS, MultitrackCodec  # noqa: E402
from zoo.data.music import MidiFolderDataModule  # noqa: E402

CODECS = {name: MultitrackCodec(tokenization=name) for name in TOKENIZATIONS}
PARTS = [(0, False, 60), (33, False, 36), (0, True, 36)]  # piano, fingered bass, drums (program, is_drum, base pitch)
GRID = 8  # onsets per beat (miditok's default beat_res below 4 beats)


def band(path: Path | None = None, *, seed: int = 0, beats: int = 16, off_grid: bool = False) -> pretty_midi.PrettyMIDI:
    """Piano + bass + drums at 120 bpm (a beat is 0.5 s): 8th notes on the grid, durations on the grid.
    `off_grid` moves every onset by a little less than half a grid step."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0, resolution=480)
    for program, drum, base in PARTS:
        inst = pretty_midi.Instrument(program=program, is_drum=drum)
        for k in range(beats * 2):
            start = k * 0.25 + (0.02 if off_grid and k % 3 == 1 else 0.0)
            length = 0.0625 * int(rng.integers(1, 5))  # 1..4 eighths of a beat: no overlap of a pitch with itself
            velocity = 4 * int(rng.integers(10, 29)) + 3 + int(rng.integers(-1, 2))  # near a bin (3, 7, ...), no tie
            inst.notes.append(pretty_midi.Note(velocity=velocity,
                                               pitch=base + int(rng.integers(0, 12)), start=start, end=start + length))
        pm.instruments.append(inst)
    if path is not None:
        pm.write(str(path))
    return pm


def notes_in_beats(pm: pretty_midi.PrettyMIDI) -> dict[tuple[int, bool], list[tuple[float, int, float, int]]]:
    """{(program, is_drum): sorted (onset beats, pitch, duration beats, velocity)}."""
    out = {}
    for inst in pm.instruments:
        beats = lambda t: pm.time_to_tick(t) / pm.resolution
        rows = sorted((beats(n.start), n.pitch, beats(n.end) - beats(n.start), n.velocity) for n in inst.notes)
        if rows:
            out.setdefault((inst.program, inst.is_drum), []).extend(rows)
    return out


def nearest(values: np.ndarray, v: float) -> int:
    return int(values[np.argmin(np.abs(values - v))])


# ------------------------------------------------------------------------------------------ codec
@pytest.mark.parametrize("name", TOKENIZATIONS)
def test_round_trip_keeps_programs_drums_pitches_onsets_on_the_grid(name):
    codec = CODECS[name]
    pm = band()
    ids = codec.encode(pm)
    assert ids and all(0 <= i < codec.vocab_size for i in ids)
    assert codec.bos_id not in ids and codec.eos_id not in ids and codec.pad_id not in ids
    back = codec.decode([codec.bos_id, *ids, codec.eos_id])
    got, want = notes_in_beats(back), notes_in_beats(pm)
    assert sorted(got) == sorted(want) == [(0, False), (0, True), (33, False)]  # programs and the drum flag
    velocities = np.asarray(codec.tokenizer.velocities)
    for key, rows in want.items():
        expected = [(s, p, d, nearest(velocities, v)) for s, p, d, v in rows]
        assert got[key] == expected, key  # everything on the grid: exact, velocity in its bin
    (_, tempo), = zip(*back.get_tempo_changes())
    assert abs(tempo - 120) < 3  # miditok's nearest tempo bin


@pytest.mark.parametrize("name", TOKENIZATIONS)
def test_off_grid_onsets_move_to_the_nearest_grid_point(name):
    codec = CODECS[name]
    pm = band(off_grid=True)
    got, want = notes_in_beats(codec.decode(codec.encode(pm))), notes_in_beats(pm)
    for key, rows in want.items():
        onsets = np.array([r[0] for r in rows])
        decoded = np.array(sorted(r[0] for r in got[key]))
        assert len(decoded) == len(onsets)
        np.testing.assert_array_equal(decoded, np.sort(np.round(onsets * GRID) / GRID))


def test_notes_outside_the_pitch_ranges_are_dropped_and_a_file_path_is_read(tmp_path):
    codec = CODECS["REMI"]
    pm = band()
    pm.instruments[0].notes.append(pretty_midi.Note(velocity=80, pitch=PITCH_RANGE[1] + 2, start=0.0, end=0.5))
    path = tmp_path / "band.mid"
    pm.write(str(path))
    assert codec.encode(path) == codec.encode(band())
    assert codec.note_count(codec.encode(path)) == 3 * 32


@pytest.mark.parametrize("name", TOKENIZATIONS)
def test_transposition_on_ids_moves_pitched_notes_and_keeps_the_drums(name):
    codec = CODECS[name]
    ids = codec.encode(band())
    for shift in (-3, 2, 5):
        pm = band()
        for inst in pm.instruments:
            if not inst.is_drum:
                for n in inst.notes:
                    n.pitch += shift
        assert codec.transpose(ids, shift).tolist() == codec.encode(pm)
    lo, hi = codec.pitch_bounds(ids)
    assert (lo, hi) == (36, 71)  # bass 36.., piano ..71; drums (36..47) do not count
    with pytest.raises(ValueError, match="outside the codec's range"):
        codec.transpose(ids, PITCH_RANGE[0] - lo - 1)


@pytest.mark.parametrize("name", TOKENIZATIONS)
def test_any_ids_decode_to_valid_midi(name, tmp_path):
    codec = CODECS[name]
    rng = np.random.default_rng(0)
    notes = 0
    for _ in range(60 if name == "MIDILike" else 200):
        ids = rng.integers(0, codec.vocab_size, size=int(rng.integers(0, 300))).tolist()
        pm = codec.decode(ids)
        path = tmp_path / "x.mid"
        pm.write(str(path))
        reread = pretty_midi.PrettyMIDI(str(path))  # the file parses
        notes += sum(len(i.notes) for i in reread.instruments)
        assert all(0 <= n.pitch < 128 and n.end >= n.start for i in reread.instruments for n in i.notes)
    assert notes > 0  # some random sequences do make notes
    assert codec.decode([]).instruments == [] or all(not i.notes for i in codec.decode([]).instruments)
    assert sum(len(i.notes) for i in codec.decode([codec.bos_id, codec.eos_id, codec.pad_id]).instruments) == 0
    with pytest.raises(ValueError, match="outside the midi_multitrack vocabulary"):
        codec.decode([codec.vocab_size])


def test_codec_state_is_json_and_rebuilds_the_same_vocabulary():
    codec = MultitrackCodec(tokenization="TSD", num_velocities=16, use_tempos=False)
    state = json.loads(json.dumps(codec.to_dict()))
    assert state["type"] == "midi_multitrack" and state["tokenization"] == "TSD"
    again = codec_from_dict(state)
    assert isinstance(again, MultitrackCodec) and again.tokens == codec.tokens
    assert (again.pad_id, again.bos_id, again.eos_id) == (0, 1, 2)
    assert codec.describe(codec.bos_id) == "BOS_None" and not any(t.startswith("Tempo") for t in codec.tokens)
    with pytest.raises(ValueError, match="builds a different TSD vocabulary"):
        codec_from_dict({**state, "vocab_sha256": "0" * 64})
    with pytest.raises(ValueError, match="tokenization must be one of REMI, TSD, MIDILike"):
        MultitrackCodec(tokenization="Octuple")


# ------------------------------------------------------------------------------------------ data
@pytest.fixture
def band_dir(tmp_path: Path) -> Path:
    root = tmp_path / "midi"
    (root / "rock").mkdir(parents=True)
    for i in range(6):
        band(root / ("rock" if i % 2 else "") / f"song{i}.mid", seed=i)
    good = (root / "song0.mid").read_bytes()
    (root / "corrupt.mid").write_bytes(good[:14] + b"\xff" * 40)  # a header, then garbage
    (root / "empty.mid").write_bytes(b"")
    pretty_midi.PrettyMIDI().write(str(root / "silent.mid"))  # parses, no notes
    return root


BAD = ["corrupt.mid", "empty.mid", "silent.mid"]


def multitrack_dm(path: Path, cache: Path, **kw) -> MidiFolderDataModule:
    return MidiFolderDataModule(path=path, cache_dir=cache, block_size=32, batch_size=3,
                                codec={"type": "multitrack", "tokenization": "REMI"}, **kw)


def test_midi_folder_multitrack_skips_counts_caches_and_splits_by_name(band_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zoo.data.music")
    dm = multitrack_dm(band_dir, tmp_path / "cache")
    dm.setup("fit")
    assert isinstance(dm.codec, MultitrackCodec) and dm.skipped_files == BAD
    assert any("skipped 3 of 9 files" in r.getMessage() for r in caplog.records)
    for name in BAD:
        assert any(name in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    assert [len(dm.names[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    # the performance codec splits the same folder by the same names
    perf = MidiFolderDataModule(path=band_dir, cache_dir=tmp_path / "cache", block_size=32)
    perf.setup("fit")
    assert perf.names == dm.names and isinstance(perf.codec, PerformanceCodec)
    for seq, name in zip(dm.sequences["train"], dm.names["train"]):
        assert seq[0] == dm.codec.bos_id and seq[-1] == dm.codec.eos_id
        assert seq[1:-1].tolist() == dm.codec.encode(band_dir / name)
    caplog.clear()
    again = multitrack_dm(band_dir, tmp_path / "cache")
    again.setup("fit")
    assert any("read from cache" in r.getMessage() for r in caplog.records) and again.skipped_files == BAD
    assert all(np.array_equal(a, b) for a, b in zip(again.sequences["train"], dm.sequences["train"]))
    # the multitrack run's cache (the performance codec's, float notes (N, 4), lies beside it)
    cache = Path(next(r.args[-1] for r in caplog.records if "read from cache" in r.getMessage()))
    with np.load(cache, allow_pickle=False) as z:  # reading an object (pickled) array would raise here
        arrays = {key: z[key] for key in z.files}
    kinds = {key: a.dtype.kind for key, a in arrays.items()}
    assert kinds == {"names": "U", "splits": "U", "skipped": "U", "skip_reasons": "U", "offsets": "i",
                     "notes": "i"}, kinds  # strings, and the multitrack pieces as integer token ids
    assert sorted(arrays["skipped"].tolist()) == sorted(BAD) and all(arrays["skip_reasons"])
    names, offsets = arrays["names"].tolist(), arrays["offsets"]
    assert sorted(names) == sorted(n for s in ("train", "val", "test") for n in dm.names[s])
    assert offsets[0] == 0 and offsets[-1] == len(arrays["notes"]) and len(offsets) == len(names) + 1
    pieces = dict(zip(dm.names["train"], dm.pieces["train"]))
    for i, name in enumerate(names):
        if name in pieces:
            assert np.array_equal(arrays["notes"][offsets[i]:offsets[i + 1]], pieces[name]), name
    with pytest.raises(MidiError, match=r"corrupt\.mid.*on_error=raise"):
        multitrack_dm(band_dir, tmp_path / "fresh", on_error="raise").setup()


def test_training_windows_transpose_pitched_notes_only_and_validation_is_plain(band_dir, tmp_path):
    dm = multitrack_dm(band_dir, tmp_path / "cache", transpose_range=4)
    dm.setup("fit")
    codec, piece = dm.codec, dm.pieces["train"][0]
    drums = np.isin(codec._kind[piece], ("PitchDrum",))
    shifts = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        out = dm._augmented_ids(0, g)
        assert np.array_equal(out[drums], piece[drums])  # drums never move
        moved = codec._pitch[out] - codec._pitch[piece]
        shift = int(moved[codec._pitch[piece] >= 0][0])
        assert (moved[codec._pitch[piece] >= 0] == shift).all() and abs(shift) <= 4
        assert np.array_equal(out, codec.transpose(piece, shift))
        shifts.add(shift)
    assert len(shifts) > 3
    a = dm.make_batch(torch.Generator().manual_seed(5), 3)
    b = dm.make_batch(torch.Generator().manual_seed(5), 3)
    assert torch.equal(a["idx"], b["idx"]) and a["idx"].shape == (3, 32)
    windows = dm.eval_windows("val")
    seq = dm.sequences["val"][0]
    assert torch.equal(windows[0]["idx"], torch.as_tensor(seq[:32])) and windows[0]["targets"][0] == seq[1]


def test_the_codec_is_chosen_by_the_data_codec_group(tmp_path):
    from zoo.training.builders import build_data

    def data(*overrides):
        cfg = compose_train(["model=music_transformer", "data=midi_folder", f"data.path={tmp_path}", *overrides])
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg.data, resolve=True)

    assert isinstance(build_data(data()).codec, PerformanceCodec)  # the default stays
    section = data("data/codec=multitrack", "data.codec.tokenization=TSD", "data.codec.num_velocities=8")
    codec = build_data(section).codec
    assert isinstance(codec, MultitrackCodec) and codec.tokenization == "TSD" and codec.num_velocities == 8
    assert isinstance(build_data(data("data.codec=multitrack")).codec, MultitrackCodec)  # the bare name
    old = data()  # configs and checkpoints from before the codec group: no `type`
    del old["codec"]["type"]
    assert isinstance(build_data(old).codec, PerformanceCodec)
    with pytest.raises(ValueError, match="steps_per_second.*not options of the multitrack codec.*data/codec="):
        build_data(data("data.codec.type=multitrack"))
    with pytest.raises(ValueError, match="codec.type must be one of performance, multitrack, got 'abc'"):
        build_data(data("data.codec.type=abc"))


# ------------------------------------------------------------------------------------------ train and sample
@pytest.mark.slow
def test_zoo_train_multitrack_then_load_sample_and_the_sample_command(band_dir, tmp_path):
    import soundfile

    import zoo
    from zoo.members.music import SAMPLE_RATE
    from zoo.members.music_render import synthesize
    from zoo.train import run

    tiny = [o for o in TINY if not o.startswith("model.block_size")] + ["model.block_size=64"]
    cfg = compose_train(["model=music_transformer", "data=midi_folder", f"data.path={band_dir}",
                         "data/codec=multitrack", f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}",
                         *tiny, "samples.max_new_tokens=48"])
    summary = run(cfg)
    assert math.isfinite(summary["metrics"]["train/loss"]) and math.isfinite(summary["metrics"]["val/loss"])
    samples = summary["samples"]  # the training log's media: as for the performance codec
    assert len(samples.audio) == 2 and len(samples.images) == 4 and len(samples.texts) == 2
    for wav in samples.audio:
        # the .mid beside it parses (an early sample may hold no notes) and the .wav is its rendering
        pm = pretty_midi.PrettyMIDI(str(wav.with_suffix(".mid")))
        info = soundfile.info(str(wav))
        assert info.samplerate == SAMPLE_RATE and info.frames == len(synthesize(pm, SAMPLE_RATE)), wav
        assert {str(wav)} <= set(samples.captions)
    # the continuation of a validation piece starts with its instruments: more than one
    cont = pretty_midi.PrettyMIDI(str(next(w for w in samples.audio if "continue_val0" in w.name).with_suffix(".mid")))
    assert len({(i.program, i.is_drum) for i in cont.instruments if i.notes}) > 1

    model = zoo.load(summary["checkpoint"])
    assert isinstance(model.codec, MultitrackCodec) and model.codec.to_dict() == CODECS["REMI"].to_dict()
    out = model.generate(max_new_tokens=40, seed=0, out=str(tmp_path / "gen.mid"),
                         primer=str(band_dir / "song0.mid"))
    reread = pretty_midi.PrettyMIDI(str(tmp_path / "gen.mid"))
    assert isinstance(out, pretty_midi.PrettyMIDI)
    assert {(i.program, i.is_drum) for i in reread.instruments if i.notes} >= {(0, False), (33, False), (0, True)}

    r = run_cli(["zoo-sample", f"checkpoint={summary['checkpoint']}", "num_samples=2", "max_new_tokens=32",
                 f"out={tmp_path / 'out'}", "render_audio=true", "seed=0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(2):
        for suffix in (".mid", ".wav", "_roll.png"):
            assert (tmp_path / "out" / f"sample_{i:02d}{suffix}").is_file()
        pretty_midi.PrettyMIDI(str(tmp_path / "out" / f"sample_{i:02d}.mid"))


# ------------------------------------------------------------------------------------------ served
def test_zoo_serve_serves_a_multitrack_model_through_the_music_member(tmp_path):
    """A multitrack checkpoint is served (its member is music's; zoo-serve names no codec): a primer is
    continued as MIDI + piano roll + WAV, the piece the Python API gives for the same seed."""
    pytest.importorskip("fastapi")
    import base64

    from fastapi.testclient import TestClient

    from zoo.hub.loading import Pretrained
    from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
    from zoo.serve import ServeSettings, create_app

    codec = CODECS["REMI"]
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig(vocab_size=codec.vocab_size, block_size=64, n_layer=1, n_head=2,
                                                    n_embd=16, dropout=0.0)).eval()
    m = Pretrained(model, codec, {"temperature": 1.0, "top_p": 0.95}, name="band")
    primer = band(tmp_path / "primer.mid", beats=2)
    with TestClient(create_app({"band": m}, ServeSettings(timeout_s=120))) as client:
        entry = client.get("/v1/models").json()["data"][0]
        assert (entry["member"], entry["codec"]) == ("music", "midi_multitrack")
        assert entry["options"]["top_p"]["default"] == 0.95  # the checkpoint's sampling defaults
        r = client.post("/v1/generate", json={"model": "band", "primer": base64.b64encode(
            (tmp_path / "primer.mid").read_bytes()).decode(), "max_new_tokens": 24, "seed": 0})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert {"midi", "wav", "piano_roll_png", "notes", "seconds"} <= set(result)
        bad = client.post("/v1/generate", json={"model": "band", "primer": base64.b64encode(b"MThd junk").decode()})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "primer", bad.text
    (tmp_path / "served.mid").write_bytes(base64.b64decode(result["midi"]))
    m.generate(primer=str(tmp_path / "primer.mid"), max_new_tokens=24, seed=0, out=str(tmp_path / "api.mid"))
    served, api = (pretty_midi.PrettyMIDI(str(tmp_path / f"{name}.mid")) for name in ("served", "api"))
    assert notes_in_beats(served) == notes_in_beats(api)
    assert len(notes_in_beats(served)) > 1 and result["notes"] >= sum(len(i.notes) for i in primer.instruments)
