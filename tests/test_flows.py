"""Whole flows, run the way README.md and docs/streaming.md tell users to: your own text, MIDI, images or
prepared streaming shards at an absolute path -> `zoo-train` -> `zoo-export` (val loss measured) ->
`zoo.load(folder)` -> `generate`; and a LoRA fine-tune exported merged and with `adapters=separate`,
the separate adapters applied back through zoo and through peft (issue 22).

Every command is a subprocess started from a scratch working directory, as a user types it; the model is
tiny and trains 2 steps, validating at the last one, so that the run's logged `val/loss` belongs to the
weights in last.ckpt and the export's card must reproduce it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_cli

import zoo

pytestmark = pytest.mark.slow  # whole flows as subprocesses (~2 min in all): CI runs them, -m 'not slow' skips

# 2 steps, validation (and last.ckpt) at step 2, metrics in run_dir/csv/metrics.csv, no samples in between.
RUN = ["data.batch_size=4", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
       "trainer.accelerator=cpu", "samples.every_n_steps=0", "samples.num_samples=1", "samples.max_new_tokens=4",
       "checkpoint.every_n_steps=2", "logger=csv", "threads=1"]
TINY_GPT = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=32"]

# The card's metric is the exported float32 weights' val loss, rounded to 4 decimals (<= 5e-5 off), against
# the value Lightning logged: the same weights and windows, both token-weighted means, summed in float32 by
# Lightning (per-batch means weighted by target count) and in float64 by measure_loss: ~1e-6 apart at a loss of
# 3-6 nats over a few hundred targets. 1e-5 more covers that with room, and is far below any real difference
# (2 training steps move the loss by ~1e-2).
CARD_TOLERANCE = 5e-5 + 1e-5


def prepare_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`zoo-prepare ARGS` (helpers.run_cli runs train/sample/export; prepare the same way)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "zoo.prepare", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path})


def check(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def logged_val_loss(run_dir: Path) -> float:
    """The run's last `val/loss` as its CSV logger wrote it: the value ModelCheckpoint monitored, logged at
    the last step (trainer.val_check_interval = max_steps), i.e. for the weights last.ckpt holds."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    assert rows, f"no val/loss in {run_dir / 'csv' / 'metrics.csv'}"
    return float(rows[-1]["val/loss"])


def train_and_export(work: Path, name: str, train_args: list[str], *export_args: str) -> tuple[Path, Path]:
    """`zoo-train ... run_dir=ABS` then `zoo-export checkpoint=ABS/last.ckpt out=ABS dtype=float32`, measured."""
    run_dir, out = work / f"run_{name}", work / f"export_{name}"
    check(run_cli(["zoo-train", *train_args, f"run_dir={run_dir}"], cwd=work))
    r = check(run_cli(["zoo-export", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}", f"out={out}",
                       "dtype=float32", *export_args], cwd=work))
    assert "val loss (nats/token" in r.stdout
    return run_dir, out


def assert_card_reproduces_the_run(out: Path, run_dir: Path) -> dict:
    config = json.loads((out / "config.json").read_text())
    assert str(out.parent) not in (out / "config.json").read_text() + (out / "README.md").read_text()
    card = config["card"]
    assert card["steps"] == 2
    assert abs(card["metric_value"] - logged_val_loss(run_dir)) <= CARD_TOLERANCE, (card, logged_val_loss(run_dir))
    return config


def write_text(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 150)
    (folder / "notes.md").write_text("Pack my box with five dozen liquor jugs.\n" * 150)
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The user's scratch folder: data and runs below it, every command started from it."""
    return tmp_path_factory.mktemp("flows")


@pytest.fixture(scope="module")
def corpus(work) -> Path:
    return write_text(work / "corpus")


def test_own_text_files_train_export_load_generate(work, corpus):
    run_dir, out = train_and_export(work, "text", ["data=text_files", f"data.path={corpus}", *TINY_GPT, *RUN,
                                                   "data.max_val_windows=8"])
    config = assert_card_reproduces_the_run(out, run_dir)
    assert config["train_config"]["data"]["path"] is None  # the written config keeps no path of this machine
    text = zoo.load(out).generate("The ", max_new_tokens=12, seed=0)
    assert text.startswith("The ") and len(text) == 4 + 12  # char codec: one character per token


def test_own_midi_folder_train_export_load_generate(work):
    import pretty_midi

    folder = work / "midi"
    folder.mkdir()
    rng = random.Random(0)
    for i in range(6):  # the split gives val and test a file each
        pm, piano, t = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(program=0), 0.0
        for _ in range(40):
            step = rng.choice([0.25, 0.5])
            piano.notes.append(pretty_midi.Note(velocity=80, pitch=rng.randint(55, 75), start=t, end=t + step))
            t += step
        pm.instruments.append(piano)
        pm.write(str(folder / f"tune{i}.mid"))
    run_dir, out = train_and_export(work, "midi", ["model=music_transformer", "data=midi_folder",
                                                   f"data.path={folder}", *TINY_GPT, *RUN, "data.max_val_windows=4"])
    assert_card_reproduces_the_run(out, run_dir)
    pm = zoo.load(out).generate(max_new_tokens=32, seed=0, out=work / "sample.mid")
    notes = [n for inst in pretty_midi.PrettyMIDI(str(work / "sample.mid")).instruments for n in inst.notes]
    assert isinstance(pm, pretty_midi.PrettyMIDI) and notes
    assert all(0 <= n.pitch < 128 and n.end > n.start >= 0 for n in notes)


def test_own_image_folder_train_export_load_generate(work):
    import numpy as np
    from PIL import Image

    rng = random.Random(0)
    for cls in ("dots", "bars"):  # sub-folders are classes
        (work / "images" / cls).mkdir(parents=True)
        for i in range(10):
            a = np.zeros((8, 8), np.uint8)
            if cls == "dots":
                a[rng.randrange(8), rng.randrange(8)] = 255
            else:
                a[:, rng.randrange(8)] = 255
            Image.fromarray(a).save(work / "images" / cls / f"{i}.png")
    run_dir, out = train_and_export(work, "images", [
        "model=image_gpt", "data=image_folder", f"data.root={work / 'images'}", "data.height=8", "data.width=8",
        "data.channels=1", "data.patch_size=2", "data.levels=16", "model.n_layer=1", "model.n_head=2",
        "model.n_embd=16", "model.local_n_layer=1", "model.local_n_head=2", "model.local_n_embd=16", *RUN])
    assert_card_reproduces_the_run(out, run_dir)
    images = zoo.load(out).generate(labels=[0, 1], seed=0)
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images * 15, (images * 15).round())  # 16 grey levels


def test_streaming_shards_prepare_train_export_load_generate(work, corpus):
    shards = work / "shards"
    r = check(prepare_cli([f"inputs={corpus}", f"out={shards}", "codec=char", "num_workers=1", "val_fraction=0.1"],
                          work))
    assert f"next: zoo-train data=streaming data.path={shards}" in r.stdout
    run_dir, out = train_and_export(work, "streaming", ["data=streaming", f"data.path={shards}", *TINY_GPT, *RUN,
                                                        "data.max_val_windows=8"])
    config = assert_card_reproduces_the_run(out, run_dir)
    assert config["train_config"]["data"]["path"] is None
    text = zoo.load(out).generate("Pack ", max_new_tokens=12, seed=0)
    assert text.startswith("Pack ") and len(text) == 5 + 12


def test_lora_finetune_exported_merged_and_separate_give_the_same_logits(work, corpus):
    """README's recipe `zoo-train init_from=gpt-pydoc data=text_files data.path=corpus/ lora.rank=8 module.lr=3e-3`
    (2 steps), exported merged and with adapters=separate; the separate adapters, applied through zoo (the
    folder as zoo.load reads it) and through peft (PeftModel.from_pretrained on the base), give the merged
    export's logits."""
    import peft
    from safetensors.torch import load_file

    run_dir, merged_dir = train_and_export(work, "lora", [
        "init_from=gpt-pydoc", "data=text_files", f"data.path={corpus}", "lora.rank=8", "module.lr=3e-3", *RUN,
        "data.max_val_windows=4"])
    separate_dir = work / "export_lora_separate"
    check(run_cli(["zoo-export", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}", f"out={separate_dir}",
                   "dtype=float32", "adapters=separate"], cwd=work))
    assert_card_reproduces_the_run(merged_dir, run_dir)
    assert_card_reproduces_the_run(separate_dir, run_dir)  # measured with the adapters, not on the bare base

    merged = zoo.load(merged_dir)
    idx = torch.randint(0, merged.codec.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    expected = merged(idx)
    base = zoo.load("gpt-pydoc")
    assert not torch.allclose(base(idx), expected, atol=1e-4)  # the adapters changed something
    # float32 throughout: merged = W + s·BA rounded once, the others add s·B(Ax) at run time, ~1e-6 apart
    torch.testing.assert_close(zoo.load(separate_dir)(idx), expected, rtol=1e-5, atol=1e-5)
    # the folder's model.safetensors is the base model as fine-tuning found it (tied head stored once)
    for k, v in load_file(str(separate_dir / "model.safetensors")).items():
        assert torch.equal(v, base.model.state_dict()[k]), k
    with torch.no_grad():
        via_peft = peft.PeftModel.from_pretrained(base.model, str(separate_dir)).eval()(idx)
    torch.testing.assert_close(via_peft, expected, rtol=1e-5, atol=1e-5)
    assert zoo.load(merged_dir).generate("The ", max_new_tokens=8, seed=0).startswith("The ")


def test_export_works_whatever_the_data_path_was(work):
    """Issue 26: a run trained on a relative glob, exported from another folder, exports (no metric, one
    warning naming the data and +data.path); +data.path= pointing at where the files are measures the card."""
    trained_in = work / "project"
    (trained_in / "books").mkdir(parents=True)
    (trained_in / "books" / "a.txt").write_text("The with statement wraps a block in a context manager. " * 80)
    run_dir = work / "glob_run"
    check(run_cli(["zoo-train", "data=text_files", "data.path='books/*.txt'", f"run_dir={run_dir}", *TINY_GPT, *RUN],
                  cwd=trained_in))
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    ckpt = f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}"
    r = check(run_cli(["zoo-export", ckpt, f"out={work / 'exp_a'}", "dtype=float32"], cwd=elsewhere))
    assert "the card gets no val loss" in r.stderr and "books/*.txt" in r.stderr and "+data.path=" in r.stderr
    assert "metric_value" not in json.loads((work / "exp_a" / "config.json").read_text())["card"]
    r = run_cli(["zoo-export", ckpt, f"out={work / 'exp_b'}", "measure=true"], cwd=elsewhere)
    assert r.returncode != 0 and "books/*.txt" in r.stderr and not (work / "exp_b").exists()
    r = check(run_cli(["zoo-export", ckpt, f"out={work / 'exp_c'}", "dtype=float32",
                       f"+data.path='{trained_in}/books/*.txt'"], cwd=elsewhere))
    assert r.stderr.count(f"dropping the absolute path train_config.run_dir='{run_dir}'") == 1  # not per rewrite
    assert_card_reproduces_the_run(work / "exp_c", run_dir)
    assert zoo.load(work / "exp_a").generate("The ", max_new_tokens=4, seed=0).startswith("The ")
