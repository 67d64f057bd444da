"""Text datamodules: batch shapes, deterministic split, token cache, local files, downloads, resume."""

from __future__ import annotations

import hashlib
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zoo.codecs.text import ByteCodec, CharCodec
from zoo.data.base import BatchStream
from zoo.data.download import ChecksumError, download
from zoo.data.text import (
    TEXT_DATAMODULES,
    PydocDataModule,
    PythonStdlibDataModule,
    TextDataModule,
    TextFilesDataModule,
    TinyShakespeareDataModule,
)

T, B = 8, 4


def pydoc(tmp_path, **kw) -> PydocDataModule:
    dm = PydocDataModule(block_size=T, batch_size=B, cache_dir=tmp_path, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_registry_names():
    assert set(TEXT_DATAMODULES) == {"pydoc", "python_stdlib", "text_files", "tinyshakespeare"}
    assert all(issubclass(c, TextDataModule) for c in TEXT_DATAMODULES.values())


def test_pydoc_batches_are_shifted_windows_of_the_training_text(tmp_path):
    dm = pydoc(tmp_path)
    assert isinstance(dm.codec, CharCodec) and dm.train_tokens.dtype == np.uint16
    train_text = dm.codec.decode(dm.train_tokens.tolist())
    stream = dm.train_dataloader()
    assert stream is dm.train_dataloader() and isinstance(stream, BatchStream)
    assert len(stream) == len(dm.train_tokens) // (B * T)
    batch = next(iter(stream))
    assert batch["idx"].shape == batch["targets"].shape == (B, T) and batch["idx"].dtype == torch.int64
    assert torch.equal(batch["idx"][:, 1:], batch["targets"][:, :-1])
    for row in range(B):
        window = batch["idx"][row].tolist() + [batch["targets"][row, -1].item()]
        assert dm.codec.decode(window) in train_text

    val = list(dm.val_dataloader())
    assert val[0]["idx"].shape == (B, T) and torch.equal(val[0]["idx"][0], torch.as_tensor(dm.val_tokens[:T]).long())
    assert torch.equal(val[0]["targets"][0], torch.as_tensor(dm.val_tokens[1:T + 1]).long())
    assert sum(len(b["idx"]) for b in val) == (len(dm.val_tokens) - 1) // T


def test_split_is_deterministic_disjoint_and_takes_the_end(tmp_path):
    a, b = pydoc(tmp_path / "a"), pydoc(tmp_path / "b", val_fraction=0.1, seed=5)
    assert np.array_equal(a.val_tokens, b.val_tokens) and np.array_equal(a.train_tokens, b.train_tokens)
    (cached,) = (tmp_path / "a").glob("tokens/*/tokens.npy")
    full = np.load(cached)
    n_val = int(len(full) * 0.1)
    assert len(a.val_tokens) == n_val and len(a.train_tokens) + n_val == len(full)
    assert np.array_equal(a.train_tokens, full[:-n_val]) and np.array_equal(a.val_tokens, full[-n_val:])


def test_sample_prompts_come_from_validation_text_and_encode(tmp_path):
    dm = pydoc(tmp_path)
    val_text = dm.codec.decode(dm.val_tokens[:20_000].tolist())
    assert 1 <= len(dm.sample_prompts) <= 4
    for prompt in dm.sample_prompts:
        assert prompt in val_text and 8 <= len(prompt) <= 40
        dm.codec.encode(prompt)  # inside the char vocabulary


def test_cache_is_reused_without_retokenising(tmp_path, monkeypatch):
    first = pydoc(tmp_path)
    (cached,) = tmp_path.glob("tokens/*/tokens.npy")
    mtime = cached.stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(TextDataModule, "_tokenize", staticmethod(fail))
    second = pydoc(tmp_path)
    assert cached.stat().st_mtime_ns == mtime
    assert second.codec.to_dict() == first.codec.to_dict()
    assert np.array_equal(second.val_tokens, first.val_tokens)
    monkeypatch.undo()
    pydoc(tmp_path, codec="byte")  # another codec is another cache entry
    assert len(list(tmp_path.glob("tokens/*/tokens.npy"))) == 2


def test_bpe_documents_are_separated_by_eos(tmp_path):
    docs = ["first document, some words here.\n", "second one\n", "third: the end\n"] * 20
    for i, doc in enumerate(docs):
        (tmp_path / f"{i:03d}.txt").write_text(doc)
    dm = TextFilesDataModule(path=tmp_path, block_size=T, batch_size=B, codec="bpe", vocab_size=300,
                             cache_dir=tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    tokens = np.concatenate([dm.train_tokens, dm.val_tokens]).tolist()
    assert tokens.count(dm.codec.eos_id) == len(docs) - 1
    assert dm.codec.decode(tokens) == "<|endoftext|>".join(docs)


def test_train_stream_length_follows_trainer_and_resumes(tmp_path):
    dm = pydoc(tmp_path)
    dm.trainer = SimpleNamespace(max_steps=7, accumulate_grad_batches=2)
    stream = dm.train_dataloader()
    assert len(stream) == 14
    uninterrupted = [b["idx"] for b, _ in zip(stream, range(4))]

    fresh = pydoc(tmp_path).train_dataloader()
    it = iter(fresh)
    for _ in range(3):
        next(it)
    state = fresh.state_dict()
    resumed = pydoc(tmp_path).train_dataloader()
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed))["idx"], uninterrupted[3])
    assert not torch.equal(uninterrupted[2], uninterrupted[3])


def test_constructor_and_size_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size is required for codec 'bpe'"):
        PydocDataModule(block_size=T, batch_size=B, codec="bpe")
    with pytest.raises(ValueError, match="codec must be 'char', 'byte', 'bpe'.*'words'"):
        PydocDataModule(block_size=T, batch_size=B, codec="words")
    with pytest.raises(ValueError, match="val_fraction must be in \\(0, 1\\), got 1.5"):
        PydocDataModule(block_size=T, batch_size=B, val_fraction=1.5)
    with pytest.raises(RuntimeError, match="setup"):
        PydocDataModule(block_size=T, batch_size=B).train_dataloader()
    (tmp_path / "tiny.txt").write_text("just a few characters")
    dm = TextFilesDataModule(path=tmp_path / "tiny.txt", block_size=64, batch_size=B, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="too few for block_size=64"):
        dm.setup("fit")


def test_codec_instance_is_used_as_given(tmp_path):
    dm = pydoc(tmp_path, codec=ByteCodec(eos=True))
    assert dm.codec.to_dict() == {"type": "byte", "eos": True} and dm.codec.vocab_size == 257


def test_python_stdlib_caps(tmp_path):
    dm = PythonStdlibDataModule(max_files=3, max_bytes=None, block_size=T, batch_size=B, cache_dir=tmp_path)
    assert len(dm.documents()) == 3
    capped = PythonStdlibDataModule(max_bytes=1, block_size=T, batch_size=B, cache_dir=tmp_path)
    assert len(capped.documents()) == 1 and capped.documents()[0] == dm.documents()[0]


# -- local files -----------------------------------------------------------------------------------


def test_text_files_folder_with_invalid_utf8(tmp_path, caplog):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("alpha text " * 20)
    (root / "sub" / "b.md").write_text("# beta\n" * 20)
    (root / "bad.txt").write_bytes(b"valid start \xff\xfe then more " * 10)
    (root / "skip.bin").write_bytes(b"\x00\x01")
    (root / ".hidden" / "c.txt").write_text("hidden")
    dm = TextFilesDataModule(path=root, block_size=T, batch_size=B, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="zoo.data.text"):
        docs = dm.documents()
    assert docs[0].startswith("alpha") and docs[1].startswith("valid start \ufffd") and docs[2].startswith("# beta")
    assert len(docs) == 3
    assert "1 of 3 files are not valid UTF-8" in caplog.text and "bad.txt" in caplog.text
    dm.prepare_data()
    dm.setup("fit")
    assert "\ufffd" in dm.codec.chars


def test_text_files_glob_and_single_file(tmp_path):
    for name in ("x1.txt", "x2.txt", "y.txt"):
        (tmp_path / name).write_text(name * 10)
    globbed = TextFilesDataModule(path=str(tmp_path / "x*.txt"), block_size=T, batch_size=B)
    assert globbed.documents() == ["x1.txt" * 10, "x2.txt" * 10]
    single = TextFilesDataModule(path=tmp_path / "y.txt", block_size=T, batch_size=B)
    assert single.documents() == ["y.txt" * 10]


def test_text_files_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="empty corpus.*no files matched"):
        TextFilesDataModule(path=tmp_path, block_size=T, batch_size=B).documents()
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="all 1 files are empty"):
        TextFilesDataModule(path=tmp_path, block_size=T, batch_size=B).documents()
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*does not exist.*a folder.*glob"):
        TextFilesDataModule(path=missing, block_size=T, batch_size=B).documents()


# -- downloads -------------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "remote" / "input.txt"
    src.parent.mkdir()
    src.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50)
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_download_file_url_verifies_and_reuses_cache(tmp_path, source):
    src, sha = source
    dest = tmp_path / "cache" / "input.txt"
    assert download(src.as_uri(), dest, sha256=sha.upper(), progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()  # a valid cached file needs no network
    assert download(src.as_uri(), dest, sha256=sha) == dest
    assert os.listdir(dest.parent) == ["input.txt"]


def test_download_wrong_sha_deletes_and_raises(tmp_path, source):
    src, sha = source
    dest = tmp_path / "cache" / "input.txt"
    with pytest.raises(ChecksumError, match=f"expected {'0' * 64}, got {sha}"):
        download(src.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and os.listdir(dest.parent) == []
    dest.write_text("corrupted cache")  # a bad cached copy is replaced by a good download
    assert download(src.as_uri(), dest, sha256=sha).read_bytes() == src.read_bytes()


def test_download_without_sha_warns_and_missing_source_errors(tmp_path, source, caplog):
    src, sha = source
    with caplog.at_level(logging.WARNING, logger="zoo.data.download"):
        download(src.as_uri(), tmp_path / "out.txt")
    assert sha in caplog.text
    with pytest.raises(OSError, match="could not download .*nothing.txt"):
        download((tmp_path / "nothing.txt").as_uri(), tmp_path / "other.txt")
    assert not (tmp_path / "other.txt").exists()


def test_tinyshakespeare_from_file_url(tmp_path, source):
    src, sha = source
    kw = dict(url=src.as_uri(), sha256=sha, block_size=T, batch_size=B, cache_dir=tmp_path / "cache")
    dm = TinyShakespeareDataModule(**kw)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.codec.decode(dm.train_tokens[:14].tolist()) == "First Citizen:"
    src.unlink()  # second run: everything from the cache
    again = TinyShakespeareDataModule(**kw)
    again.prepare_data()
    again.setup("fit")
    assert np.array_equal(again.val_tokens, dm.val_tokens)
    src.write_text("the file changed upstream")
    with pytest.raises(ChecksumError, match=sha):
        TinyShakespeareDataModule(**{**kw, "cache_dir": tmp_path / "fresh"}).prepare_data()


def test_unigram_baseline_matches_a_direct_computation(tmp_path):
    import math
    from collections import Counter

    from zoo.data.text import TextFilesDataModule

    text = "abracadabra " * 300
    (tmp_path / "c.txt").write_text(text)
    dm = TextFilesDataModule(path=tmp_path / "c.txt", block_size=16, batch_size=2, max_val_windows=3,
                             cache_dir=tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    counts = Counter(dm.train_tokens.tolist())
    total = len(dm.train_tokens) + dm.codec.vocab_size
    targets = [int(t) for w in dm.val_dataloader().dataset for t in w["targets"]]
    expected = -sum(math.log((counts[t] + 1) / total) for t in targets) / len(targets)
    assert len(targets) == 3 * 16
    assert dm.unigram_nll() == pytest.approx(expected, rel=1e-9)


def test_fit_to_vocabulary_drops_replaces_or_refuses_what_a_char_codec_cannot_encode():
    from zoo.codecs.text import CharCodec, fit_to_vocabulary

    codec = CharCodec(list("ab ?"))
    docs = ["ab$a", "€€", "ba"]
    assert fit_to_vocabulary(codec, docs, "skip", "t") == (["aba", "ba"], {"$": 1, "€": 2})  # an emptied doc goes
    assert fit_to_vocabulary(codec, docs, "replace", "t") == (["ab?a", "??", "ba"], {"$": 1, "€": 2})
    assert fit_to_vocabulary(codec, ["ab"], "error", "t") == (["ab"], {})  # nothing unknown: unchanged
    with pytest.raises(ValueError, match=r"t: 3 characters .* char vocabulary of 4 \('€' x2, '\$' x1\); "
                                         r"set data.unknown=skip"):
        fit_to_vocabulary(codec, docs, "error", "t")
    with pytest.raises(ValueError, match="data.unknown=replace needs U\\+FFFD, '\\?' or ' '"):
        fit_to_vocabulary(CharCodec(list("ab")), docs, "replace", "t")
    with pytest.raises(ValueError, match="unknown must be one of 'error', 'skip', 'replace', got 'drop'"):
        from zoo.data.text import PydocDataModule
        PydocDataModule(block_size=8, batch_size=2, unknown="drop")
