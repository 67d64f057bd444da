"""Streaming token shards (zoo.data.streaming, zoo-prepare): exact tokenisation, training, exact
mid-epoch resume, disjoint DDP/worker shards, weighted mixtures, clear errors. Corpora are a few
hundred KB, generated here."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, ordinary_user, public_folder, run_cli

pytest.importorskip("litdata")

from zoo.codecs.text import BPECodec, CharCodec  # noqa: E402
from zoo.data.streaming import (  # noqa: E402
    DOC_SEPARATOR,
    MANIFEST,
    StreamingTextDataModule,
    find_files,
    litdata,
    prepare_corpus,
)


def write_corpus(folder: Path, n_files: int = 4, size: int = 20_000, alphabet: str = string.ascii_lowercase,
                 seed: int = 0) -> Path:
    """Random words over `alphabet` in lines: no two 33-token windows alike (disjointness is checkable)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        words = []
        while sum(map(len, words)) < size:
            words.append("".join(rng.choices(alphabet, k=rng.randint(1, 9))) + rng.choice(" \n"))
        (folder / f"doc{i}.txt").write_text("".join(words))
    return folder


def prepare(tmp: Path, name: str, corpus: Path | str, **kwargs) -> Path:
    kwargs = {"num_workers": 1, "chunk_tokens": 4096, "piece_bytes": 8_000, "val_fraction": 0.1, **kwargs}
    prepare_corpus(str(corpus), str(tmp / name), **kwargs)
    return tmp / name


def all_tokens(folder: str) -> list[int]:
    """Every token of a prepared split, in file order."""
    ds = litdata().StreamingDataset(folder, item_loader=litdata().TokensLoader(block_size=1), shuffle=False)
    return [int(np.asarray(ds[i])[0]) for i in range(len(ds))]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_prepare_is_exact_tokenisation_of_the_corpus(tmp_path, kind):
    """train + val tokens, in order, decode to the corpus: files joined by the separator (char) or eos (bpe)."""
    corpus = write_corpus(tmp_path / "corpus", n_files=3, size=3_000)
    source = str(corpus) if kind == "char" else str(corpus / "*.txt")  # a folder, then a glob
    extra = {"vocab_size": 300} if kind == "bpe" else {}
    out = prepare(tmp_path, kind, source, codec=kind, piece_bytes=1_000, **extra)
    manifest, codec = __import__("zoo.data.streaming", fromlist=["x"]).load_manifest(str(out))
    assert isinstance(codec, CharCodec if kind == "char" else BPECodec)
    assert manifest["codec_type"] == kind and manifest["n_files"] == 3 and len(manifest["sources"]) == 3
    texts = [f.read_text() for f in sorted(corpus.glob("*.txt"))]
    assert [s["sha256"] for s in manifest["sources"]] == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    train, val = all_tokens(f"{out}/train"), all_tokens(f"{out}/val")
    assert (manifest["train_tokens"], manifest["val_tokens"]) == (len(train), len(val))
    assert 0 < len(val) < len(train)
    if kind == "char":
        assert codec.decode(train + val) == "".join(t + DOC_SEPARATOR for t in texts)
    else:  # pieces are tokenised separately (cut at line starts): the text is exact, merges may differ there
        docs = codec.decode(train + val).split("<|endoftext|>")
        assert docs == [*texts, ""]


def zoo_prepare(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "zoo.prepare", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.mark.slow  # ~40 s: zoo-train subprocesses, interrupted and resumed
def test_zoo_train_streams_and_resumes_mid_epoch_exactly(tmp_path):
    """zoo-prepare -> zoo-train data=streaming; 3 steps + resume to 6 == 6 uninterrupted steps (dropout on),
    and zoo-sample works on the checkpoint."""
    corpus = write_corpus(tmp_path / "corpus")
    out = tmp_path / "prep"
    r = zoo_prepare(f"inputs={corpus}", f"out={out}", "codec=char", "num_workers=2", "chunk_tokens=4096",
                    "piece_bytes=8000", "val_fraction=0.1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "next: zoo-train data=streaming" in r.stdout and (out / MANIFEST).is_file()
    args = ["zoo-train", "data=streaming", f"data.path={out}", *TINY, "logger=csv", "model.dropout=0.1",
            "checkpoint.every_n_steps=3"]
    full = run_cli([*args, "trainer.max_steps=6", f"run_dir={tmp_path / 'full'}"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    first = run_cli([*args, "trainer.max_steps=3", f"run_dir={tmp_path / 'res'}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli([*args, "trainer.max_steps=6", f"run_dir={tmp_path / 'res'}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    expected, resumed = losses(tmp_path / "full"), losses(tmp_path / "res")
    assert sorted(expected) == list(range(6))
    assert resumed == expected  # the same batches, in the same order: equal to the last bit
    sample = run_cli(["zoo-sample", f"checkpoint={tmp_path / 'res' / 'checkpoints' / 'last.ckpt'}",
                      "max_new_tokens=8", "prompt=abc"], cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr[-2000:]


def _read_rank(rank: int, world: int, folder: str, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    dm = StreamingTextDataModule(folder, block_size=32, batch_size=4, seed=3)
    dm.setup()
    rows = [w.numpy().tobytes() for b in dm.train_dataloader() for w in torch.cat([b["idx"], b["targets"][:, -1:]], 1)]
    Path(f"{out}{rank}").write_text("\n".join(hashlib.sha1(r).hexdigest() for r in rows))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_ranks_and_two_workers_read_disjoint_windows(tmp_path):
    """One epoch on 2 gloo processes: equal numbers of windows, none read by both ranks; then 2 loader
    workers in one process: no window twice, and the same windows as the single-process epoch."""
    folder = str(prepare(tmp_path, "prep", write_corpus(tmp_path / "corpus"), codec="char"))
    port = 29_500 + os.getpid() % 1000
    torch.multiprocessing.spawn(_read_rank, args=(2, folder, port, str(tmp_path / "rank")), nprocs=2)
    r0, r1 = ((tmp_path / f"rank{r}").read_text().split() for r in range(2))
    assert len(r0) == len(r1) > 100 and len(set(r0)) == len(r0)
    assert not set(r0) & set(r1)

    def epoch(workers: int) -> list[str]:
        dm = StreamingTextDataModule(folder, block_size=32, batch_size=4, seed=3, num_workers=workers)
        dm.setup()
        return [hashlib.sha1(w.numpy().tobytes()).hexdigest() for b in dm.train_dataloader()
                for w in torch.cat([b["idx"], b["targets"][:, -1:]], 1)]

    one, two = epoch(0), epoch(2)
    assert len(set(two)) == len(two) and set(two) <= set(one) and len(two) >= 0.9 * len(one)
    # and zoo-train itself on 2 DDP processes
    run = run_cli(["zoo-train", "data=streaming", f"data.path={folder}", *TINY, "strategy=ddp", "trainer.devices=2",
                   f"run_dir={tmp_path / 'ddp'}"], cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "finished at step 4" in run.stdout


def test_weighted_mixture_samples_in_proportion(tmp_path):
    a = prepare(tmp_path, "a", write_corpus(tmp_path / "ca", alphabet="abcdefgh", size=40_000), codec="byte")
    b = prepare(tmp_path, "b", write_corpus(tmp_path / "cb", alphabet="ABCDEFGH", size=40_000), codec="byte")
    dm = StreamingTextDataModule([str(a), str(b)], block_size=32, batch_size=8, weights=[0.8, 0.2], seed=1)
    dm.setup()
    from_a = n = 0
    for i, batch in enumerate(dm.train_dataloader()):
        upper = (batch["idx"] >= ord("A")) & (batch["idx"] <= ord("H"))
        from_a += int((~upper.any(1)).sum())
        n += len(upper)
        if i == 99:
            break
    assert n == 800 and abs(from_a / n - 0.8) < 0.05, from_a / n


def test_mismatches_and_bad_inputs_give_clear_errors(tmp_path):
    a = prepare(tmp_path, "a", write_corpus(tmp_path / "ca", alphabet="abc", n_files=1), codec="char")
    b = prepare(tmp_path, "b", write_corpus(tmp_path / "cb", alphabet="xyz", n_files=1), codec="char")
    with pytest.raises(ValueError, match="share one codec.*codec_from"):
        StreamingTextDataModule([str(a), str(b)], block_size=8, batch_size=2).setup()
    c = prepare(tmp_path, "c", write_corpus(tmp_path / "cc", alphabet="ab", n_files=1, seed=1), codec_from=str(a))
    StreamingTextDataModule([str(a), str(c)], block_size=8, batch_size=2).setup()  # the fix the message names
    with pytest.raises(ValueError, match="char codec lacks 3 characters of these inputs"):
        prepare(tmp_path, "d", tmp_path / "cb", codec_from=str(a))
    with pytest.raises(ValueError, match="data.codec='bpe' but .* prepared with the 'char' codec"):
        StreamingTextDataModule(str(a), block_size=8, batch_size=2, codec="bpe").setup()
    with pytest.raises(ValueError, match="data.vocab_size=99 but .* vocabulary of 5"):
        StreamingTextDataModule(str(a), block_size=8, batch_size=2, vocab_size=99).setup()
    with pytest.raises(FileNotFoundError, match="does not exist; make it with `zoo-prepare"):
        StreamingTextDataModule(str(tmp_path / "nope"), block_size=8, batch_size=2).setup()
    with pytest.raises(FileNotFoundError, match="holds no zoo_stream.json"):
        StreamingTextDataModule(str(tmp_path / "ca"), block_size=8, batch_size=2).setup()
    with pytest.raises(FileNotFoundError, match="matches no file"):
        find_files(str(tmp_path / "*.nothing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    with pytest.raises(ValueError, match="empty corpus: all 1 input files are empty"):
        prepare_corpus(str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(FileExistsError, match="not empty.*overwrite=true"):
        prepare_corpus(str(tmp_path / "ca"), str(a))
    with public_folder() as folder:  # an unreadable file; as root, checked with an ordinary user's view
        (folder / "ok.txt").write_text("x")
        (folder / "locked.txt").write_text("x")
        (folder / "locked.txt").chmod(0)
        with ordinary_user(), pytest.raises(PermissionError, match="locked.txt.*not readable"):
            find_files(str(folder))
    r = zoo_prepare(f"inputs={tmp_path / 'missing'}", f"out={tmp_path / 'o'}")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == \
        f"zoo-prepare: input {str(tmp_path / 'missing')!r} does not exist; give a text file, a folder or a glob " \
        "pattern such as 'books/**/*.txt'"
