"""Pretrained models: export -> load round trips, registry verification, safety, GPT-2 import, torch.hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY, compose_train

import zoo
from zoo import hub
from zoo.data.download import ChecksumError, file_sha256
from zoo.hub.export import export, export_checkpoint, measure_loss
from zoo.training.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 2-step zoo-train run of a tiny char GPT on pydoc (its run_dir is an absolute path)."""
    from zoo.train import run

    run_dir = tmp_path_factory.mktemp("run")
    os.environ["ZOO_CACHE"] = str(run_dir / "cache")  # module scope: the autouse fixture is per test
    run(compose_train([*TINY, "trainer.max_steps=2", f"run_dir={run_dir}", f"data.cache_dir={run_dir / 'cache'}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def _tokens(m: hub.Pretrained, shape=(2, 16)) -> torch.Tensor:
    return torch.randint(0, m.codec.vocab_size, shape, generator=torch.Generator().manual_seed(0))


def _entry(name: str, location: str, files: dict[str, str]) -> hub.Entry:
    return hub.Entry(name=name, model_type="gpt", location=location, files=files)


# ---- export / load ------------------------------------------------------------------------------
def test_export_round_trip_gives_identical_logits(tiny_ckpt, tmp_path):
    ref = zoo.load(tiny_ckpt)
    x = _tokens(ref)
    out32 = export(ref, tmp_path / "fp32", dtype="float32")
    assert sorted(p.name for p in out32.iterdir()) == ["README.md", "codec.json", "config.json",
                                                      "generation_config.json", "model.safetensors"]
    m = zoo.load(out32)
    assert torch.equal(m(x), ref(x))
    assert m.codec.to_dict() == ref.codec.to_dict() and m.generation == ref.generation
    # fp16 storage: exactly the reference model with its weights rounded to fp16
    m16 = zoo.load(export(ref, tmp_path / "fp16", dtype="float16"))
    ref.model.half().float()
    assert next(m16.model.parameters()).dtype == torch.float32
    assert torch.equal(m16(x), ref(x))
    assert zoo.load(tmp_path / "fp16", dtype="bfloat16").model.lm_head.weight.dtype == torch.bfloat16
    # tied head stored once
    from safetensors import safe_open

    with safe_open(str(out32 / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert "lm_head.weight" not in stored and "transformer.wte.weight" in stored


def test_export_of_own_files_measures_them_writes_no_absolute_path_and_loads_after_moving(tmp_path, caplog):
    """Issue 22: a run on your own files (data.path absolute) exports with its val loss measured on those
    files; the written config keeps no absolute path. Issue 26: without the files the export still works
    (no metric, a warning), measure=true stops with nothing written, data.path= measures where they are now."""
    from zoo.train import run

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The assert statement checks a condition. The with statement. " * 60)
    summary = run(compose_train([*TINY, "data=text_files", f"data.path={corpus}", "trainer.max_steps=2",
                                 f"run_dir={tmp_path / 'run'}"]))
    out = export_checkpoint(summary["checkpoint"], tmp_path / "a" / "exp", dtype="float32")
    text = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".md"))
    assert str(tmp_path) not in text
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["data"]["path"] is None and config["train_config"]["run_dir"] is None
    # the val loss of the weights validated at the last step (float32: the same weights); the card rounds to 4
    # decimals (<= 5e-5), the rest is float32 summation order (~1e-6 on a loss of ~3)
    assert abs(config["card"]["metric_value"] - summary["metrics"]["val/loss"]) <= 5e-5 + 1e-5
    x = _tokens(zoo.load(out))
    before = zoo.load(out)(x)
    moved = shutil.move(str(out), str(tmp_path / "elsewhere"))
    after = zoo.load(moved)
    assert torch.equal(after(x), before)
    assert after.generate("The ", max_new_tokens=5, seed=0).startswith("The ")
    # the files are gone: measure=true insists, so the export stops naming the path and the ways out ...
    corpus.rename(tmp_path / "moved_corpus")
    with pytest.raises(FileNotFoundError, match=rf"(?s){corpus}.*\+data.path=.*measure=false"):
        export_checkpoint(summary["checkpoint"], tmp_path / "b", dtype="float32", measure=True)
    assert not (tmp_path / "b").exists()
    # ... the default (auto) exports without the metric, saying why in one warning ...
    with caplog.at_level("WARNING"):
        b = export_checkpoint(summary["checkpoint"], tmp_path / "b")
    card = json.loads((b / "config.json").read_text())["card"]
    assert "metric_value" not in card and "the card gets no val loss" in caplog.text and str(corpus) in caplog.text
    assert "metric_value" not in json.loads(
        (export_checkpoint(summary["checkpoint"], tmp_path / "c", measure=False) / "config.json").read_text())["card"]
    # ... and data.path= measures where the data is now: the same loss as before it moved
    moved_data = export_checkpoint(summary["checkpoint"], tmp_path / "d", dtype="float32",
                                   data={"path": str(tmp_path / "moved_corpus")})
    moved_card = json.loads((moved_data / "config.json").read_text())["card"]
    assert moved_card["metric_value"] == config["card"]["metric_value"]


@pytest.mark.slow  # two fresh interpreters (~10 s each on a busy 2-core machine)
def test_zoo_export_cli_then_zoo_sample_reads_the_folder(tiny_ckpt, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "zoo.export", f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'e'}",
                        "dtype=float32"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "e" / "config.json").read_text())["card"]
    assert card["steps"] == 2 and card["metric_value"] == pytest.approx(measure_loss(zoo.load(tmp_path / "e")),
                                                                         abs=1e-4)
    r = subprocess.run([sys.executable, "-m", "zoo.sample", f"checkpoint={tmp_path / 'e'}", "prompt=The",
                        "max_new_tokens=5", "seed=0"], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("The"), r.stderr
    with pytest.raises(ValueError, match="dtype='int8' is not accepted; choose one of"):
        export_checkpoint(tiny_ckpt, tmp_path / "x", dtype="int8")


def test_unknown_name_lists_the_registered_models(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(hub.HubError, match=r"registered: \['gpt-pydoc'"):
        zoo.load("no-such-model")
    with pytest.raises(hub.HubError, match="not an exported zoo model"):
        zoo.load(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # empty, offline: tests/test_hf_hub.py
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.HubError, match="openai-community/gpt2 is not in the cache"):
        zoo.load("gpt2")
    assert "gpt-pydoc" in zoo.list_models()


# ---- registry: download, cache, verification ----------------------------------------------------
def test_url_entry_downloads_once_verifies_and_works_offline(tiny_ckpt, tmp_path, monkeypatch):
    src = export_checkpoint(tiny_ckpt, tmp_path / "server" / "m", measure=False)
    files = {p.name: file_sha256(p) for p in src.iterdir()}
    monkeypatch.setitem(hub.REGISTRY, "tiny", _entry("tiny", src.as_uri(), files))
    x = _tokens(zoo.load(src))
    logits = zoo.load("tiny")(x)
    cached = Path(os.environ["ZOO_CACHE"]) / "hub" / "tiny"
    assert sorted(p.name for p in cached.iterdir()) == sorted(files)
    shutil.rmtree(src)  # "offline": the URL is gone, the cache serves
    assert torch.equal(zoo.load("tiny")(x), logits)


def test_sha256_mismatch_deletes_the_download_and_raises(tiny_ckpt, tmp_path, monkeypatch):
    src = export_checkpoint(tiny_ckpt, tmp_path / "server" / "m", measure=False)
    files = {p.name: file_sha256(p) for p in src.iterdir()} | {"model.safetensors": "0" * 64}
    monkeypatch.setitem(hub.REGISTRY, "bad", _entry("bad", src.as_uri(), files))
    with pytest.raises(ChecksumError, match="sha256 mismatch.*the download was deleted"):
        zoo.load("bad")
    assert not (Path(os.environ["ZOO_CACHE"]) / "hub" / "bad" / "model.safetensors").exists()
    assert not list((Path(os.environ["ZOO_CACHE"]) / "hub" / "bad").glob("*.part"))


def test_truncated_files_raise_clear_errors(tiny_ckpt, tmp_path, monkeypatch):
    src = export_checkpoint(tiny_ckpt, tmp_path / "m", measure=False)
    files = {p.name: file_sha256(p) for p in src.iterdir()}
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    monkeypatch.setitem(hub.REGISTRY, "local", _entry("local", "local", files))
    with pytest.raises(ChecksumError, match="truncated, corrupt or not this checkpoint"):
        zoo.load("local", path=src)
    with pytest.raises(hub.HubError, match="model.safetensors: the file is truncated or corrupt"):
        zoo.load(src)
    data = tiny_ckpt.read_bytes()
    (tmp_path / "t.ckpt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        zoo.load(tmp_path / "t.ckpt")


class _Exploit:
    """Unpickling this runs `touch MARKER` (the classic malicious-checkpoint payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_pickle_is_refused_and_its_code_never_runs(tiny_ckpt, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    ckpt["zoo"]["train_config"] = _Exploit(marker)
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refused to load"):
        zoo.load(tmp_path / "evil.ckpt")
    gpt2_dir = _tiny_gpt2(tmp_path / "hf")
    (gpt2_dir / "model.safetensors").unlink()
    torch.save({"w": _Exploit(marker)}, gpt2_dir / "pytorch_model.bin")
    with pytest.raises(hub.HubError, match="refused to load"):
        zoo.load("gpt2", path=gpt2_dir)
    assert not marker.exists()
    import pickle  # the payload is real: plain unpickling would have run it

    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


# ---- GPT-2 import -------------------------------------------------------------------------------
def _tiny_gpt2(folder: Path) -> Path:
    """A random GPT2LMHeadModel + a GPT-2-format BPE tokenizer trained on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = ByteLevelBPETokenizer()
    text = ["The with statement wraps a block.", "def f(x):\n    return x * 2  # double", "naïve café ünïcode"]
    tok.train_from_iterator(text * 20, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok.save_model(str(folder))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_gpt2_import_matches_transformers(tmp_path, weights):
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    folder = _tiny_gpt2(tmp_path / "gpt2")
    ref = GPT2LMHeadModel.from_pretrained(folder).eval()
    if weights == "bin":
        (folder / "model.safetensors").unlink()
        torch.save(ref.state_dict(), folder / "pytorch_model.bin")
    m = zoo.load("gpt2", path=folder)
    text = "The with statement: naïve café\n    return x"
    hf_tok = GPT2TokenizerFast.from_pretrained(folder)  # reads vocab.json + merges.txt
    ids = m.codec.encode(text)
    assert ids == hf_tok(text)["input_ids"] and m.codec.decode(ids) == text
    x = torch.tensor([ids[:32]])
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x).logits, atol=1e-5, rtol=1e-5)
    from zoo.sampling import generate

    ours = generate(m.model, [ids[:8]], max_new_tokens=6, temperature=0.0)[0]
    # the folder itself is recognised, and the converted model exports to a zoo folder
    assert torch.equal(zoo.load(folder)(x), m(x))
    assert torch.equal(zoo.load(export(m, tmp_path / "zoo_gpt2", dtype="float32"))(x), m(x))
    theirs = ref.generate(torch.tensor([ids[:8]]), max_new_tokens=6, do_sample=False, pad_token_id=0)[0, 8:]
    assert ours == theirs.tolist()


# ---- shipped checkpoints ------------------------------------------------------------------------
SHIPPED = sorted(hub.REGISTRY)


def test_hubconf_has_an_entry_point_per_registered_model():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    for name in SHIPPED:
        fn = getattr(hubconf, hub.REGISTRY[name].hub_function, None)
        assert callable(fn) and fn.__doc__, name


@pytest.mark.parametrize("name", SHIPPED)
def test_torch_hub_load_local(name):
    m = torch.hub.load(str(ROOT), hub.REGISTRY[name].hub_function, source="local", trust_repo=True)
    assert isinstance(m, hub.Pretrained) and m.name == name and not m.model.training


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_are_verified_small_and_self_contained(name):
    entry = hub.REGISTRY[name]
    folder = hub.resolve_entry(entry)  # raises on any sha256 mismatch
    assert sorted(p.name for p in folder.iterdir()) == sorted(entry.files)
    assert (folder / "model.safetensors").stat().st_size <= 8 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert entry.card.items() <= config["card"].items() and config["dtype"] in ("float16", "bfloat16")
    assert "/work/" not in (folder / "config.json").read_text()


JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"  # a download otherwise (no network here)
# Frozen copies of validation pieces as converted for the cards: converting music21's corpus takes ~1.5 min
# (Bach) and ~25 min (the six styles). Made by reading `dm._load_splits()["val"]` of the data module that
# zoo.hub.export.validation_data rebuilds from the checkpoint's config, saved as names, offsets, notes.
FROZEN_VAL = {"music-transformer-bach": ROOT / "tests" / "data" / "bach_chorales_val.npz",
              "music-transformer-styles": ROOT / "tests" / "data" / "music21_styles_val.npz"}


def frozen_val_datamodule(m, frozen: Path):
    """The checkpoint's data module (its own data options and codec) holding the frozen validation pieces."""
    import numpy as np

    from zoo.training.builders import build_data

    dm = build_data({**m.config["train_config"]["data"], "codec": m.codec})
    with np.load(frozen, allow_pickle=False) as z:
        names, bounds = z["names"].tolist(), z["offsets"]
        notes = [z["notes"][bounds[i]:bounds[i + 1]] for i in range(len(names))]
    dm._loaded = {"train": (names, notes), "val": (names, notes), "test": ([], [])}  # train: only needs to exist
    return dm


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_metric_is_reproduced(name):
    m = zoo.load(name)
    card = hub.REGISTRY[name].card
    if name == "music-transformer-jsb":
        if not JSB.is_file():
            pytest.skip(f"needs the JSB Chorales file at {JSB} (the download needs a network)")
        loss = measure_loss(m, data={"path": str(JSB)})
    elif name in FROZEN_VAL:
        loss = measure_loss(m, datamodule=frozen_val_datamodule(m, FROZEN_VAL[name]))
    else:
        loss = measure_loss(m)
    # The card prints 4 decimals of a deterministic re-measurement: within half a unit of the last one
    # (plus float rounding), never more.
    assert abs(loss - card["metric_value"]) <= 5e-5 + 1e-7, (loss, card["metric_value"])


def test_gpt_pydoc_one_liner_runs_offline(tmp_path):
    code = ("import zoo; m = zoo.load('gpt-pydoc'); "
            "print(m.generate('The with statement', max_new_tokens=80, seed=0))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "no_proxy": "", "HTTP_PROXY": "http://0.0.0.0:9",
           "HTTPS_PROXY": "http://0.0.0.0:9"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The with statement") and len(r.stdout) > 60


@pytest.mark.skipif("image-gpt-digits" not in hub.REGISTRY, reason="image-gpt-digits not registered")
def test_image_gpt_digits_writes_a_digit_grid(tmp_path):
    from PIL import Image

    m = zoo.load("image-gpt-digits")
    images = m.generate(labels=[3, 7], num_samples=2, guidance=2.0, seed=0, out=tmp_path / "grid.png")
    assert images.shape[:2] == (4, 1) and Image.open(tmp_path / "grid.png").size[0] > 16


def test_music_transformer_bach_writes_valid_midi(tmp_path):
    import pretty_midi

    m = zoo.load("music-transformer-bach")
    pm = m.generate(out=tmp_path / "bach.mid", max_new_tokens=200, seed=0)
    notes = [n for inst in pm.instruments for n in inst.notes]
    assert notes and all(0 <= n.pitch <= 127 and n.end > n.start for n in notes)
    assert pretty_midi.PrettyMIDI(str(tmp_path / "bach.mid")).get_end_time() > 0


def test_text2image_digits_writes_an_image_grid(tmp_path):
    from PIL import Image

    m = zoo.load("text2image-digits")
    images = m.generate("a 4 on the left and a 1 on the right", num_samples=3, guidance=3, seed=0,
                        out=tmp_path / "grid.png")
    assert images.shape[0] == 3 and images.shape[-2:] == (8, 16)
    assert Image.open(tmp_path / "grid.png").size[0] > 3 * 16
    again = m.generate("a 4 on the left and a 1 on the right", num_samples=3, guidance=3, seed=0)
    assert torch.equal(images, again)  # deterministic under a seed
