"""JSB grid codec and the music datamodules: splits, caching, bad files, batches, augmentation."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.codecs.base import IGNORE_INDEX, codec_from_dict, load_codec
from zoo.codecs.jsb import JSBGridCodec, grid_array
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import notes_to_midi
from zoo.data.base import BatchStream
from zoo.data.music import (
    MUSIC_DATAMODULES,
    BachChoralesDataModule,
    JSBChoralesDataModule,
    MaestroDataModule,
    MidiFolderDataModule,
    split_by_name,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_JSB = SHARED / "data" / "jsb" / "Jsb16thSeparated.json"


# ============================================================================ JSB codec
def random_grid(rng: np.random.Generator, steps: int, lo: int = 36, hi: int = 81) -> np.ndarray:
    grid = rng.integers(lo, hi + 1, size=(steps, 4))
    grid[rng.random((steps, 4)) < 0.1] = -1
    return grid


def test_jsb_vocabulary_and_exact_round_trip(tmp_path):
    codec = JSBGridCodec()
    assert codec.vocab_size == 4 + 46 == 50
    assert codec.encode([[36, 81, -1, 60]]) == [4, 49, 3, 28]
    grid = random_grid(np.random.default_rng(0), 37)
    ids = codec.encode(grid)
    assert len(ids) == 4 * 37 and ids[:4] == codec.encode(grid[:1])  # raster order, soprano first
    assert np.array_equal(codec.decode(ids), grid)
    assert np.array_equal(codec.decode([codec.bos_id, *ids, codec.eos_id]), grid)
    for again in (codec_from_dict(codec.to_dict()), load_codec(codec.save(tmp_path))):
        assert isinstance(again, JSBGridCodec) and again.config() == {"min_pitch": 36, "max_pitch": 81}


def test_jsb_codec_rejects_what_it_cannot_represent():
    codec = JSBGridCodec(min_pitch=40, max_pitch=80)
    with pytest.raises(ValueError, match="pitch 39 at step 1, voice Tenor is outside .* 40..80"):
        codec.encode([[60, 60, 60, 60], [60, 60, 39, 60]])
    with pytest.raises(ValueError, match="step 0 has 5 pitches"):
        codec.encode([[60, 60, 60, 60, 60]])
    with pytest.raises(ValueError, match="non-integer"):
        codec.encode([[60.5, 60, 60, 60]])
    with pytest.raises(ValueError, match="outside the jsb_grid vocabulary"):
        codec.decode([3, 3, 3, codec.vocab_size])
    with pytest.raises(ValueError, match="min_pitch"):
        JSBGridCodec(min_pitch=81, max_pitch=36)


def test_grid_array_normalises_floats_nan_and_short_steps():
    assert grid_array([[60.0, 55.0, float("nan"), 40.0]]).tolist() == [[60, 55, -1, 40]]
    assert grid_array([[60, 55], [62, 57, 50, 43], []]).tolist() == [[60, 55, -1, -1], [62, 57, 50, 43],
                                                                     [-1, -1, -1, -1]]
    assert grid_array([]).shape == (0, 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 49), max_size=60))
def test_jsb_any_ids_decode_to_a_valid_grid(ids):
    codec = JSBGridCodec()
    grid = codec.decode(ids)
    content = [i for i in ids if i >= 3]
    assert grid.shape == (-(-len(content) // 4), 4)
    assert np.all((grid == -1) | ((grid >= 36) & (grid <= 81)))
    assert codec.encode(grid)[:len(content)] == content  # trailing partial step completed with silence


def test_jsb_to_midi_ties_repeated_pitches():
    codec = JSBGridCodec()
    pm = codec.to_midi([[60, 55, 52, -1], [60, 55, 50, -1], [62, -1, 50, 40]], step_seconds=0.25)
    assert [i.name for i in pm.instruments] == ["Soprano", "Alto", "Tenor", "Bass"]
    notes = [[(n.start, n.end, n.pitch) for n in i.notes] for i in pm.instruments]
    assert notes == [[(0, 0.5, 60), (0.5, 0.75, 62)], [(0, 0.5, 55)], [(0, 0.25, 52), (0.25, 0.75, 50)],
                     [(0.5, 0.75, 40)]]


@pytest.mark.skipif(not SHARED_JSB.is_file(), reason="no shared JSB copy")
def test_jsb_shared_file_round_trips_exactly():
    data = json.loads(SHARED_JSB.read_text())
    codec = JSBGridCodec()
    counts = {k: len(v) for k, v in data.items()}
    assert counts == {"train": 229, "valid": 76, "test": 77}
    for pieces in data.values():
        for piece in pieces:
            grid = grid_array(piece)
            assert np.array_equal(codec.decode(codec.encode(piece)), grid)


# ============================================================================ splits
def test_split_by_name_is_deterministic_disjoint_and_never_empty():
    names = [f"piece{i}.mid" for i in range(50)]
    a = split_by_name(names, 0.1, 0.1)
    b = split_by_name(list(reversed(names)), 0.1, 0.1)
    by_name = lambda split: {k: sorted(names[i] for i in v) for k, v in split.items()}  # noqa: E731
    assert by_name(a) == {k: sorted(names[49 - i] for i in v) for k, v in b.items()}
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(50))
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (40, 5, 5)
    assert [len(v) for v in split_by_name(names[:3], 0.1, 0.1).values()] == [1, 1, 1]
    assert [len(split_by_name(["a"], 0.1, 0.1)[k]) for k in ("train", "val", "test")] == [1, 0, 0]
    assert split_by_name(names, 0.0, 0.0)["train"] == list(range(50))


# ============================================================================ JSB datamodule
@pytest.fixture
def jsb_json(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    data = {
        "train": [random_grid(rng, 40, 40, 70).tolist(), random_grid(rng, 9, 40, 70).tolist(),
                  [[float(p) for p in step] for step in random_grid(rng, 30, 38, 79).tolist()]],
        "valid": [random_grid(rng, 20, 40, 70).tolist(), [[60, 55], [60, 55, 48, 36]] * 3],
        "test": [random_grid(rng, 12, 40, 70).tolist()],
    }
    path = tmp_path / "jsb.json"
    path.write_text(json.dumps(data))
    return path


def make_jsb(path: Path, **kwargs) -> JSBChoralesDataModule:
    dm = JSBChoralesDataModule(path=path, **{"block_size": 16, "batch_size": 4, **kwargs})
    dm.setup("fit")
    return dm


def test_jsb_datamodule_pieces_sequences_and_batches(jsb_json):
    dm = make_jsb(jsb_json)
    codec = dm.codec
    assert [len(dm.pieces[s]) for s in ("train", "val", "test")] == [3, 2, 1]
    assert dm.names["val"] == ["valid/0", "valid/1"]
    assert dm.pieces["val"][1][0].tolist() == [60, 55, -1, -1]  # short step padded with silence
    for grid, seq in zip(dm.pieces["train"], dm.sequences["train"]):
        assert seq.tolist() == [codec.bos_id, *codec.encode(grid), codec.eos_id]
    batch = dm.make_batch(torch.Generator().manual_seed(0), 8)
    assert batch["idx"].shape == batch["targets"].shape == (8, 16)
    assert batch["idx"].dtype == batch["targets"].dtype == torch.int64
    valid = batch["targets"] != IGNORE_INDEX
    inner = valid[:, 1:]  # idx[j + 1] is a real token exactly where targets[j + 1] is
    assert torch.equal(batch["idx"][:, 1:][inner], batch["targets"][:, :-1][inner])
    assert not valid.all()  # windows at the end of a piece are padded (EOS stays reachable)
    assert set(batch) == {"idx", "targets"}  # unconditional data (the base class's `_cond` is None): no `cond`
    assert all(set(w) == {"idx", "targets"} for w in dm.eval_windows("val"))


def test_jsb_training_crops_are_transposed_windows_on_step_boundaries(jsb_json):
    dm = make_jsb(jsb_json, transpose_range=3)
    codec, seen_shifts = dm.codec, set()
    for b in range(20):
        batch = dm.make_batch(torch.Generator().manual_seed(b), 4)
        for idx, targets in zip(batch["idx"], batch["targets"]):
            window = torch.cat([idx[:1], targets])
            n = int((window != IGNORE_INDEX).sum())
            matches = set()
            for seq in dm.sequences["train"]:
                for start in range(0, len(seq), 4):  # step-aligned only
                    orig = torch.as_tensor(seq[start:start + n])
                    if len(orig) != n:
                        continue
                    diff = (window[:n] - orig)[orig >= codec.pitch_offset]
                    same_rest = torch.equal(window[:n][orig < codec.pitch_offset], orig[orig < codec.pitch_offset])
                    if same_rest and (len(diff) == 0 or (diff == diff[0]).all()):
                        matches.add(int(diff[0]) if len(diff) else 0)
            assert matches and min(abs(s) for s in matches) <= 3, "crop is no transposed step-aligned window"
            seen_shifts |= matches
    assert len(seen_shifts) > 3  # augmentation really happens


def test_jsb_transposition_keeps_notes_in_range(tmp_path):
    path = tmp_path / "edge.json"
    path.write_text(json.dumps({"train": [[[81, 70, 60, 36]] * 8], "valid": [], "test": []}))
    dm = make_jsb(path, block_size=8)
    assert set(dm.sequences["train"][0].tolist()) == {1, 2, 49, 38, 28, 4}
    for b in range(10):  # a piece spanning the whole range can only be played as is
        batch = dm.make_batch(torch.Generator().manual_seed(b), 2)
        assert set(batch["idx"].flatten().tolist()) <= {0, 1, 49, 38, 28, 4}  # 0: PAD after the end


def test_jsb_validation_is_deterministic_unaugmented_and_complete(jsb_json):
    on, off = make_jsb(jsb_json, augment=True), make_jsb(jsb_json, augment=False)
    a, b = on.eval_windows("val"), off.eval_windows("val")
    assert len(a) == len(b) and all(torch.equal(x["idx"], y["idx"]) for x, y in zip(a, b))
    predicted = torch.cat([w["targets"][w["targets"] != IGNORE_INDEX] for w in a])
    expected = np.concatenate([seq[1:] for seq in on.sequences["val"]])
    assert predicted.tolist() == expected.tolist()  # every token after BOS exactly once
    loader = on.val_dataloader()
    first = next(iter(loader))
    assert first["idx"].shape == (min(4, len(a)), 16)


def test_short_pieces_are_padded_with_ignore_targets(jsb_json):
    dm = make_jsb(jsb_json, block_size=400, augment=False)
    batch = dm.make_batch(torch.Generator().manual_seed(0), 3)
    for idx, targets in zip(batch["idx"], batch["targets"]):
        n = int((targets != IGNORE_INDEX).sum())
        assert targets[n - 1] == dm.codec.eos_id and (targets[n:] == IGNORE_INDEX).all()
        assert idx[0] == dm.codec.bos_id and (idx[n:] == dm.codec.pad_id).all()


def test_training_stream_is_deterministic_and_follows_the_trainer(jsb_json):
    dm1, dm2 = make_jsb(jsb_json, seed=7), make_jsb(jsb_json, seed=7)
    s1, s2 = dm1.train_dataloader(), dm2.train_dataloader()
    assert isinstance(s1, BatchStream)
    for b in (0, 3):
        assert all(torch.equal(s1.batch(b)[k], s2.batch(b)[k]) for k in ("idx", "targets"))
    assert not torch.equal(s1.batch(0)["idx"], s1.batch(1)["idx"])
    assert not torch.equal(s1.batch(0)["idx"], make_jsb(jsb_json, seed=8).train_dataloader().batch(0)["idx"])
    total = sum(len(s) for s in dm1.sequences["train"])
    assert len(s1) == max(1, total // (4 * 16))
    dm1.trainer = SimpleNamespace(max_steps=7, accumulate_grad_batches=3)
    assert dm1.train_dataloader() is s1 and len(s1) == 21
    dm1.trainer = SimpleNamespace(max_steps=-1, accumulate_grad_batches=1)
    assert len(dm1.train_dataloader()) == len(dm2.train_dataloader())


def test_jsb_rejects_bad_settings(jsb_json, tmp_path):
    with pytest.raises(ValueError, match="multiple of 4"):
        JSBChoralesDataModule(path=jsb_json, block_size=10)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [[[90, 60, 50, 40]]], "valid": [], "test": []}))
    with pytest.raises(ValueError, match="piece train/0: pitch 90 .* 36..81"):
        make_jsb(bad)
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="keys train, valid, test"):
        make_jsb(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        make_jsb(tmp_path / "nope.json")


def test_jsb_download_by_url_and_sha256(jsb_json, tmp_path):
    sha = hashlib.sha256(jsb_json.read_bytes()).hexdigest()
    dm = JSBChoralesDataModule(url=jsb_json.as_uri(), sha256=sha, cache_dir=tmp_path / "cache", block_size=16)
    dm.setup()
    assert len(dm.pieces["train"]) == 3
    assert list((tmp_path / "cache" / "downloads").glob("*-jsb.json"))
    with pytest.raises(ValueError, match="sha256"):
        JSBChoralesDataModule(url=jsb_json.as_uri(), sha256="0" * 64, cache_dir=tmp_path / "c2").setup()


@pytest.mark.skipif(not SHARED_JSB.is_file(), reason="no shared JSB copy")
def test_jsb_datamodule_on_the_shared_file():
    dm = make_jsb(SHARED_JSB, block_size=64)
    assert [len(dm.pieces[s]) for s in ("train", "val", "test")] == [229, 76, 77]
    assert sum(len(s) for s in dm.sequences["train"]) == 4 * sum(len(p) for p in dm.pieces["train"]) + 2 * 229
    assert dm.make_batch(torch.Generator().manual_seed(0), 2)["idx"].shape == (2, 64)


# ============================================================================ MIDI folders
def write_song(path: Path, seed: int, n: int = 30, drums: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0, 10, n))
    notes = np.stack([starts, starts + rng.uniform(0.05, 1.5, n), rng.integers(40, 90, n),
                      rng.integers(20, 120, n)], axis=1)
    pm = notes_to_midi(notes)
    if drums:
        pm.instruments[0].is_drum = True
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


@pytest.fixture
def midi_dir(tmp_path) -> Path:
    root = tmp_path / "midi"
    for i in range(6):
        write_song(root / ("a" if i % 2 else "b/c") / f"song{i}.{'MIDI' if i == 5 else 'mid'}", seed=i)
    good = (root / "b/c/song0.mid").read_bytes()
    (root / "truncated.mid").write_bytes(good[: len(good) // 2])
    (root / "text.mid").write_text("certainly not a MIDI file\n")
    pretty_midi.PrettyMIDI().write(str(root / "empty.mid"))
    write_song(root / "drums_only.midi", seed=9, drums=True)
    (root / "notes.txt").write_text("ignored: not .mid/.midi")
    return root


BAD = ["drums_only.midi", "empty.mid", "text.mid", "truncated.mid"]


def test_midi_folder_skips_bad_files_with_warnings_and_a_count(midi_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zoo.data.music")
    dm = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", block_size=32, batch_size=2)
    dm.setup("fit")
    assert dm.skipped_files == BAD
    for name in BAD:
        assert any(name in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    assert "truncated" in dm.skip_reasons["truncated.mid"] and "no notes" in dm.skip_reasons["empty.mid"]
    assert any("skipped 4 of 10 files" in r.getMessage() for r in caplog.records)
    names = sorted(sum(dm.names.values(), []))
    assert names == sorted(["a/song1.mid", "a/song3.mid", "a/song5.MIDI", "b/c/song0.mid", "b/c/song2.mid",
                            "b/c/song4.mid"])
    assert [len(dm.names[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    # the cache answers the second time, skips included
    caplog.clear()
    again = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", block_size=32)
    again.setup("fit")
    assert again.names == dm.names and again.skipped_files == BAD
    assert all(np.array_equal(x, y) for x, y in zip(again.pieces["train"], dm.pieces["train"]))
    assert any("read from cache" in r.getMessage() for r in caplog.records)
    batch = dm.train_dataloader().batch(0)
    assert batch["idx"].shape == (2, 32)


def test_midi_folder_without_usable_files_is_an_error(tmp_path, midi_dir):
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    for name in ("truncated.mid", "text.mid", "empty.mid"):
        (bad_only / name).write_bytes((midi_dir / name).read_bytes())
    with pytest.raises(ValueError, match=f"no usable MIDI in {bad_only}: all 3 files were skipped"):
        MidiFolderDataModule(path=bad_only, cache_dir=tmp_path / "c").setup()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no .mid/.midi files found"):
        MidiFolderDataModule(path=tmp_path / "nothing", cache_dir=tmp_path / "c").setup()
    with pytest.raises(FileNotFoundError, match="not_there"):
        MidiFolderDataModule(path=tmp_path / "not_there", cache_dir=tmp_path / "c").setup()


def test_performance_augmentation_is_deterministic_in_range_and_off_for_validation(midi_dir, tmp_path):
    kwargs = dict(path=midi_dir, cache_dir=tmp_path / "cache", block_size=64, batch_size=3)
    dm = MidiFolderDataModule(**kwargs)
    dm.setup()
    b1 = dm.make_batch(torch.Generator().manual_seed(3), 3)
    b2 = dm.make_batch(torch.Generator().manual_seed(3), 3)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    for row in b1["idx"]:  # every crop decodes to valid notes
        for n in dm.codec.decode(row).instruments[0].notes:
            assert 0 <= n.pitch <= 127 and n.end > n.start
    # validation: identical with and without augmentation, and un-augmented
    plain = MidiFolderDataModule(**kwargs, augment=False)
    plain.setup()
    assert all(torch.equal(x["idx"], y["idx"]) for x, y in zip(dm.eval_windows("val"), plain.eval_windows("val")))
    seq = plain.sequences["val"][0]
    assert dm.eval_windows("val")[0]["idx"].tolist() == seq[:64].tolist()
    assert seq.tolist() == [1, *dm.codec.encode_notes(plain.pieces["val"][0]).tolist(), 2]


def test_performance_augmentation_transposes_and_stretches_the_notes(midi_dir, tmp_path):
    dm = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", transpose_range=0,
                              stretch_range=(2.0, 2.0))
    dm.setup()
    notes = dm.pieces["train"][0]
    got = dm.codec.decode_notes(dm._augmented_ids(0, torch.Generator().manual_seed(0)))
    want = dm.codec.decode_notes(dm.codec.encode_notes(np.c_[notes[:, :2] * 2, notes[:, 2:]]))
    assert np.array_equal(got, want)
    dm = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", transpose_range=3,
                              stretch_range=(1.0, 1.0))
    dm.setup()
    top = int(dm.pieces["train"][0][:, 2].max())
    dm.pieces["train"][0][:, 2] += 127 - top  # the highest note is now 127: only downward shifts fit
    base = dm.codec.encode_notes(dm.pieces["train"][0])
    shifts = set()
    for seed in range(30):
        ids = dm._augmented_ids(0, torch.Generator().manual_seed(seed))
        shifts |= {s for s in range(-3, 1) if dm.codec.transpose(base, s) == ids.tolist()}
    assert shifts == {-3, -2, -1, 0}


def test_long_pieces_are_reencoded_around_the_window_only(midi_dir, tmp_path):
    """Windowed re-encoding (long pieces) gives exact crops of the transposed piece (dense notes, no stretch)."""
    dm = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", block_size=16, stretch_range=(1, 1))
    dm.setup()
    assert all(len(seq) > 4 * 17 for seq in dm.sequences["train"])  # every piece takes the windowed path
    hits, shifts = 0, set()
    for b in range(10):
        g = torch.Generator().manual_seed(b)
        picks = torch.multinomial(dm._train_weights, 4, replacement=True, generator=g).tolist()
        for i in picks:
            crop = dm._train_tokens(i, g).tolist()
            assert len(crop) == 17 or crop[-1] == dm.codec.eos_id
            seq = dm.sequences["train"][i].tolist()
            for s in range(-3, 4):
                moved = [seq[0], *dm.codec.transpose(seq[1:-1], s), seq[-1]]
                if any(moved[k:k + len(crop)] == crop for k in range(len(moved) - len(crop) + 1)):
                    hits += 1
                    shifts.add(s)
                    break
            else:
                pytest.fail(f"crop {crop} of piece {i} is not a window of the transposed piece")
    assert hits == 40 and len(shifts) > 2
    stretched = MidiFolderDataModule(path=midi_dir, cache_dir=tmp_path / "cache", block_size=16)
    stretched.setup()
    a, b = (stretched.make_batch(torch.Generator().manual_seed(1), 8) for _ in range(2))
    assert torch.equal(a["idx"], b["idx"]) and torch.equal(a["targets"], b["targets"])
    assert not torch.equal(a["idx"], dm.make_batch(torch.Generator().manual_seed(1), 8)["idx"])


# ============================================================================ MAESTRO
def write_maestro(root: Path, rows: list[tuple[str, str]]) -> None:
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename",
                    "audio_filename", "duration"])
        for i, (split, midi) in enumerate(rows):
            w.writerow(["Composer", f"Title {i}", split, 2018, midi, midi.replace(".midi", ".wav"), 10.0])


def test_maestro_uses_the_csv_split(tmp_path):
    root = tmp_path / "maestro-v3.0.0"
    rows = [("train", "2018/a.midi"), ("train", "2018/b.midi"), ("validation", "2017/c.midi"),
            ("test", "2017/d.midi"), ("train", "2018/missing.midi")]
    for _, name in rows[:4]:
        write_song(root / name, seed=len(name) + ord(name[5]))
    write_maestro(root, rows)
    dm = MaestroDataModule(path=root, cache_dir=tmp_path / "cache", block_size=32)
    dm.setup()
    assert dm.names == {"train": ["2018/a.midi", "2018/b.midi"], "val": ["2017/c.midi"], "test": ["2017/d.midi"]}
    assert dm.skipped_files == ["2018/missing.midi"]
    capped = MaestroDataModule(path=root, cache_dir=tmp_path / "cache", max_files=1)
    capped.setup()
    assert capped.names["train"] == ["2018/a.midi"] and capped.names["val"] == ["2017/c.midi"]

    write_maestro(root, [("training", "2018/a.midi")])
    with pytest.raises(ValueError, match="split 'training' is not one of"):
        MaestroDataModule(path=root, cache_dir=tmp_path / "cache").setup()
    (root / "maestro-v3.0.0.csv").write_text("split,year\ntrain,2018\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['midi_filename'\]"):
        MaestroDataModule(path=root, cache_dir=tmp_path / "cache").setup()
    (root / "maestro-v3.0.0.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no maestro-v"):
        MaestroDataModule(path=root, cache_dir=tmp_path / "cache").setup()


# ============================================================================ Bach chorales (music21)
def test_bach_chorales_convert_once_then_read_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("music21")
    import zoo.data.music.bach as music  # score_to_notes is looked up where BachChoralesDataModule lives

    dm = BachChoralesDataModule(max_files=5, cache_dir=tmp_path, block_size=64, batch_size=2)
    dm.setup("fit")
    assert [len(dm.names[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert sorted(sum(dm.names.values(), [])) == [p.name for p in music.bach_chorale_files()[:5]]
    assert all(len(s) > 100 for s in dm.sequences["train"])
    for notes in dm.pieces["train"]:  # four-part chorales: soprano to bass range
        assert notes[:, 2].min() >= 30 and notes[:, 2].max() <= 90

    def no_music21(*args, **kwargs):
        raise AssertionError("music21 conversion ran although the cache holds the result")

    monkeypatch.setattr(music, "score_to_notes", no_music21)
    again = BachChoralesDataModule(max_files=5, cache_dir=tmp_path, block_size=64)
    again.setup("fit")
    assert again.names == dm.names
    assert all(np.array_equal(x, y) for x, y in zip(again.sequences["val"], dm.sequences["val"]))
    with pytest.raises(ValueError, match="no usable MIDI in music21's Bach corpus"):
        BachChoralesDataModule(max_files=2, cache_dir=tmp_path / "other").setup()


# ============================================================================ registry and Lightning
def test_registry_and_codec_options():
    assert set(MUSIC_DATAMODULES) == {"bach_chorales", "jsb_chorales", "maestro", "midi_folder", "music21_styles"}
    dm = MidiFolderDataModule(path="unused", codec={"steps_per_second": 50, "num_velocity_bins": 16})
    assert isinstance(dm.codec, PerformanceCodec) and dm.codec.vocab_size == 3 + 256 + 100 + 16
    with pytest.raises(ValueError, match="needs a PerformanceCodec"):
        MidiFolderDataModule(path="unused", codec=JSBGridCodec())
    with pytest.raises(ValueError, match="stretch_range"):
        MidiFolderDataModule(path="unused", stretch_range=(1.1, 0.9))


def test_lightning_fit_runs_on_the_loaders(jsb_json, tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self, vocab: int) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, vocab)

        def _loss(self, batch):
            logits = self.emb(batch["idx"])
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())

        def training_step(self, batch, _):
            return self._loss(batch)

        def validation_step(self, batch, _):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = JSBChoralesDataModule(path=jsb_json, block_size=16, batch_size=4)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Tiny(dm.codec.vocab_size), datamodule=dm)
    assert trainer.global_step == 3 and "val_loss" in trainer.callback_metrics
    assert dm.train_dataloader().length == 3
