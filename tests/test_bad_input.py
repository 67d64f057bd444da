"""Bad files: checkpoints (truncated, empty, wrong model, newer format, crafted pickle) and data folders
(invalid UTF-8 text, corrupt MIDI, non-image files). Each gives a clear error naming the file, or is
skipped and counted as configured — and no file ever runs code (RELIABILITY.md)."""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.codecs.midi_files import MidiError, notes_to_midi
from zoo.codecs.text import CharCodec
from zoo.data.image import ImageFolderDataModule, UnreadableImageError
from zoo.data.music import MidiFolderDataModule
from zoo.data.text import TextFilesDataModule
from zoo.data.text_image import ImageTextFolderDataModule
from zoo.hub import HubError, load, load_gpt2
from zoo.models.gpt import GPT, GPTConfig
from zoo.training.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    check_metadata,
    model_from_checkpoint,
    read_checkpoint,
)

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# ============================================================================ checkpoints
def _checkpoint(**meta_changes) -> dict:
    """What zoo-train writes (GenerativeModule.on_save_checkpoint), for a tiny GPT, without training."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config)
    meta = {"version": CHECKPOINT_VERSION, "model_type": "gpt", "model_config": dataclasses.asdict(config),
            "codec": CharCodec.fit("abcde").to_dict(), "train_config": {}}
    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "zoo": meta | meta_changes,
            "global_step": 3}


@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(_checkpoint(), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


def _write(path: Path, ckpt: dict) -> Path:
    torch.save(ckpt, path)
    return path


def test_a_well_formed_checkpoint_loads(tmp_path):
    model, codec, meta = model_from_checkpoint(_write(tmp_path / "good.ckpt", _checkpoint()))
    assert meta["model_type"] == "gpt" and codec.decode(codec.encode("bad")) == "bad"
    assert torch.equal(model.transformer.wte.weight, _checkpoint()["state_dict"]["model.transformer.wte.weight"])


def test_empty_and_truncated_checkpoints_name_the_file(tmp_path, good_bytes):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.ckpt is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / "empty.ckpt")
    for cut in (1, 100, len(good_bytes) // 2, len(good_bytes) - 1):
        path = tmp_path / f"cut{cut}.ckpt"
        path.write_bytes(good_bytes[:cut])
        with pytest.raises(CheckpointError, match=rf"cannot read checkpoint .*cut{cut}.ckpt: the file is truncated"):
            model_from_checkpoint(path)


@FUZZ
@given(cut=st.integers(1, 10**6), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       junk=st.binary(max_size=200))
def test_fuzzed_checkpoint_bytes_load_or_give_a_checkpoint_error(scratch, good_bytes, cut, edits, junk):
    """Truncated, bit-flipped or random files: a CheckpointError naming the file, never anything else."""
    data = bytearray(good_bytes)
    for pos, value in edits:
        data[pos % len(data)] = value
    for payload in (bytes(data[:cut % len(data)]), bytes(data), junk):
        path = scratch / "fuzzed.ckpt"
        path.write_bytes(payload)
        try:
            model, _, _ = model_from_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e)
        else:  # a flipped byte inside tensor data still loads: that is a valid (if different) model
            assert isinstance(model, GPT)


def test_checkpoint_of_a_newer_zoo_asks_to_upgrade(tmp_path):
    path = _write(tmp_path / "future.ckpt", _checkpoint(version=CHECKPOINT_VERSION + 1))
    message = (rf"future.ckpt was written by a newer zoo \(checkpoint format version {CHECKPOINT_VERSION + 1}\); "
               rf"this zoo reads versions up to {CHECKPOINT_VERSION}. Upgrade zoo")
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        load(path)  # zoo.load / zoo-sample go through the same reader
    with pytest.raises(CheckpointError, match="format version 'one' is not a positive integer"):
        read_checkpoint(_write(tmp_path / "odd.ckpt", _checkpoint(version="one")))
    assert read_checkpoint(_write(tmp_path / "old.ckpt", _checkpoint(version=CHECKPOINT_VERSION)))["zoo"]
    # the same check on a checkpoint some other loader read (e.g. Lightning when resuming)
    with pytest.raises(CheckpointError, match=rf"resume was written by a newer zoo .*{CHECKPOINT_VERSION + 1}\); this"):
        check_metadata(_checkpoint(version=CHECKPOINT_VERSION + 1), source="resume")


@pytest.mark.parametrize(("change", "message"), [
    ({"model_type": "image_gpt"}, r"does not describe a model this zoo can build \(unknown image_gpt config key"),
    ({"model_type": "transformer_xl"}, r"unknown model type 'transformer_xl'; accepted: \["),
    ({"model_config": {"n_layerz": 2}}, r"unknown gpt config key\(s\) \['n_layerz'\]"),
    ({"model_config": "n_layer=2"}, r"model_config='n_layer=2', expected a dict"),
    ({"model_config": {**dataclasses.asdict(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=16))}},
     r"weights do not fit a gpt model with its config \(.*size mismatch"),
    ({"model_config": {**dataclasses.asdict(GPTConfig(vocab_size=5, block_size=8, n_layer=2, n_head=2, n_embd=8))}},
     r"weights do not match a gpt model with its config: missing \['transformer.h.1"),
    ({"codec": {"type": "klingon"}}, r"codec state cannot be rebuilt \(.*unknown codec type 'klingon'"),
])
def test_checkpoint_of_another_model_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message) as e:
        model_from_checkpoint(_write(tmp_path / "other.ckpt", _checkpoint(**change)))
    assert "other.ckpt" in str(e.value)


def test_not_a_zoo_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no 'zoo' metadata"):
        read_checkpoint(_write(tmp_path / "plain.ckpt", {"state_dict": {}}))
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint(_write(tmp_path / "tensor.ckpt", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="metadata is a list"):
        read_checkpoint(_write(tmp_path / "list.ckpt", {"state_dict": {}, "zoo": [1]}))
    (tmp_path / "folder.ckpt").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path / "folder.ckpt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")


class _Payload:
    """Unpickling this calls exec(): it creates `marker`. What a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_crafted_pickle_payload_is_real_but_zoo_never_runs_it(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload works when unpickled naively
    assert control.exists()

    marker = tmp_path / "pwned"
    zipped = _write(tmp_path / "zipped.ckpt", {**_checkpoint(), "zoo": _Payload(marker)})
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(pickle.dumps({"state_dict": {}, "zoo": _Payload(marker)}, protocol=2))
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError, match=rf"refused to load .*{path.name}: it contains objects other than "
                                                  r"tensors and plain data \(exec\), which could run code"):
            read_checkpoint(path)
        with pytest.raises(CheckpointError, match="refused to load"):
            load(path)
    newer = tmp_path / "protocol5.ckpt"  # opcodes the weights-only unpickler does not know: refused too
    newer.write_bytes(pickle.dumps({"state_dict": {}, "zoo": _Payload(marker)}, protocol=5))
    with pytest.raises(CheckpointError, match=r"protocol5.ckpt: the file is truncated or corrupt, or not a "
                                              r"checkpoint \(Unsupported operand"):
        read_checkpoint(newer)
    # Hugging Face GPT-2 weights (pytorch_model.bin) are read with the same guard (zoo.hub.gpt2)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8,
                                                  "vocab_size": 5, "n_positions": 8}))
    torch.save({"wte.weight": _Payload(marker)}, gpt2 / "pytorch_model.bin")
    with pytest.raises(HubError, match="refused to load .*pytorch_model.bin"):
        load_gpt2(gpt2)
    assert not marker.exists()


def test_corrupt_exported_weights_are_a_clear_error(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"format": "zoo-export-1", "model_type": "gpt",
                                                   "model_config": {}}))
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(HubError):
        load(folder)
    (folder / "config.json").write_text('{"format": ')
    with pytest.raises(HubError, match="not valid JSON"):
        load(folder)


# ============================================================================ text corpora
@pytest.fixture()
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a_good.txt").write_text("plain text, all fine. " * 40, encoding="utf-8")
    (root / "b_latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 40)
    (root / "c_binary.txt").write_bytes(bytes(range(256)) * 4)
    return root


def _text_dm(root: Path, errors: str) -> TextFilesDataModule:
    return TextFilesDataModule(path=root, errors=errors, block_size=8, batch_size=2, codec="char")


def test_text_corpus_with_invalid_utf8_replace_keeps_and_counts(corpus, caplog):
    dm = _text_dm(corpus, "replace")
    with caplog.at_level(logging.WARNING, logger="zoo.data.text"):
        docs = dm.documents()
    assert len(docs) == 3 and "\ufffd" in docs[1] and docs[1].startswith("caf\ufffd cr")
    assert "2 of 3 files are not valid UTF-8 (bad bytes replaced by U+FFFD)" in caplog.text
    assert "b_latin1.txt" in caplog.text and "c_binary.txt" in caplog.text


def test_text_corpus_with_invalid_utf8_skip_drops_and_counts(corpus, caplog):
    dm = _text_dm(corpus, "skip")
    with caplog.at_level(logging.WARNING, logger="zoo.data.text"):
        dm.setup()
    assert dm.documents() == [(corpus / "a_good.txt").read_text()]
    assert "2 of 3 files are not valid UTF-8 (files skipped)" in caplog.text and "b_latin1.txt" in caplog.text
    assert [Path(f).name for f in dm.invalid_files] == ["b_latin1.txt", "c_binary.txt"]
    assert set(dm.codec.chars) == set("plain text, all fine.")


def test_text_corpus_with_invalid_utf8_strict_names_file_and_byte(corpus):
    with pytest.raises(UnicodeDecodeError, match=r"b_latin1.txt at byte 3 \(errors=strict"):
        _text_dm(corpus, "strict").documents()
    with pytest.raises(ValueError, match="errors must be 'replace', 'skip' or 'strict', got 'ignore'"):
        _text_dm(corpus, "ignore")


def test_text_with_lone_surrogates_is_a_clear_error_for_byte_codecs():
    from zoo.codecs.text import ByteCodec

    with pytest.raises(ValueError, match=r"lone surrogate.*'\\udcff' at position 3"):
        ByteCodec().encode("abc\udcff")


# ============================================================================ MIDI folders
@pytest.fixture()
def midi_folder(tmp_path) -> Path:
    root = tmp_path / "midi"
    root.mkdir()
    for i in range(4):
        notes = np.array([[0.5 * k, 0.5 * k + 0.4, 60 + i + k % 5, 80] for k in range(12)], dtype=np.float64)
        notes_to_midi(notes).write(str(root / f"piece{i}.mid"))
    good = (root / "piece0.mid").read_bytes()
    (root / "truncated.mid").write_bytes(good[: len(good) // 2])
    (root / "text.midi").write_text("not a MIDI file")
    (root / "zero.mid").write_bytes(b"")
    return root


def _midi_dm(root: Path, tmp_path: Path, on_error: str) -> MidiFolderDataModule:
    return MidiFolderDataModule(path=root, on_error=on_error, block_size=16, batch_size=2, augment=False,
                                val_fraction=0.25, test_fraction=0.0, cache_dir=tmp_path / "cache")


def test_midi_folder_skips_corrupt_files_and_counts_them(midi_folder, tmp_path, caplog):
    dm = _midi_dm(midi_folder, tmp_path, "skip")
    with caplog.at_level(logging.WARNING, logger="zoo.data.music"):
        dm.setup()
    assert sorted(dm.skipped_files) == ["text.midi", "truncated.mid", "zero.mid"]
    assert "skipped 3 of 7 files" in caplog.text and "truncated.mid (truncated MIDI file" in caplog.text
    assert sum(len(dm.pieces[s]) for s in ("train", "val", "test")) == 4


def test_many_corrupt_midi_files_are_counted_and_only_a_few_named(midi_folder, tmp_path, caplog):
    for i in range(12):
        (midi_folder / f"junk{i:02d}.mid").write_bytes(b"MThd" + bytes([i]) * 10)
    with caplog.at_level(logging.WARNING, logger="zoo.data.music"):
        _midi_dm(midi_folder, tmp_path, "skip").setup()
    summary = next(r.getMessage() for r in caplog.records if "skipped 15 of 19 files" in r.getMessage())
    assert summary.count(".mid") == 10 and summary.endswith("; and 5 more (see skipped_files)")
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 10


def test_midi_folder_on_error_raise_names_the_file_even_from_the_cache(midi_folder, tmp_path):
    with pytest.raises(MidiError, match=r"cannot use .*text.midi: not a readable MIDI file .*on_error=raise"):
        _midi_dm(midi_folder, tmp_path, "raise").setup()
    _midi_dm(midi_folder, tmp_path, "skip").setup()  # fills the note cache, remembering the skipped files
    with pytest.raises(MidiError, match=r"cannot use text.midi: .*3 file\(s\) affected"):
        _midi_dm(midi_folder, tmp_path, "raise").setup()
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', got 'warn'"):
        _midi_dm(midi_folder, tmp_path, "warn")


# ============================================================================ image folders
@pytest.fixture()
def image_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(root / f"img{i}.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    png = (root / "img0.png").read_bytes()
    (root / "half.png").write_bytes(png[: len(png) // 2])
    return root


def test_image_folder_skips_non_images_and_counts_them(image_folder, caplog):
    dm = ImageFolderDataModule(root=image_folder, height=4, width=4, channels=3, levels=16, patch_size=2,
                               val_fraction=0, test_fraction=0, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="zoo.data.image"):
        dm.setup()
    assert sorted(p.name for p in dm.skipped_files) == ["broken.jpg", "half.png", "notes.txt"]
    assert "image_folder: skipped 3 unreadable of 6 file(s)" in caplog.text
    assert "notes.txt (not a readable image (UnidentifiedImageError" in caplog.text
    assert len(dm.splits["train"][1]) == 3


def test_image_folder_on_error_raise_names_the_file(image_folder):
    dm = ImageFolderDataModule(root=image_folder, height=4, width=4, on_error="raise", patch_size=2)
    with pytest.raises(UnreadableImageError, match=r"broken.jpg: not a readable image .*on_error=raise"):
        dm.setup()
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', got 'ignore'"):
        ImageFolderDataModule(root=image_folder, on_error="ignore")


def test_captioned_image_folder_bad_files_and_captions(image_folder, caplog):
    for i in range(3):
        (image_folder / f"img{i}.txt").write_text(f"red {i}")
    (image_folder / "broken.txt").write_text("broken")
    (image_folder / "img2.txt").write_bytes(b"r\xe9d 2")  # Latin-1, not UTF-8
    kwargs = {"root": image_folder, "height": 4, "width": 4, "levels": 4, "patch_size": 2, "batch_size": 2,
              "val_fraction": 0.0, "test_fraction": 0.0}
    dm = ImageTextFolderDataModule(**kwargs)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert sorted((p.name, r) for p, r in dm.skipped) == [("broken.jpg", "unreadable"), ("half.png", "no caption")]
    assert "1 caption file(s) are not valid UTF-8" in caplog.text and "img2.txt" in caplog.text
    assert "r\ufffdd 2" in dm.train[1]
    with pytest.raises(UnreadableImageError, match=r"broken.jpg: not a readable image"):
        ImageTextFolderDataModule(**kwargs, on_error="raise").setup()
    index = image_folder / "index.jsonl"
    index.write_text('{"path": "img0.png", "caption": "a"}\n{"path": \n')
    with pytest.raises(ValueError, match=r"index.jsonl, line 2: not valid JSON"):
        ImageTextFolderDataModule(**kwargs, captions=index).setup()
    index.write_text('["img0.png", "a"]\n')
    with pytest.raises(ValueError, match=r"index.jsonl: row 1 has no 'path' string \(got list\)"):
        ImageTextFolderDataModule(**kwargs, captions=index).setup()
