"""A fifth member from outside the zoo package, registered through the entry-point group `zoo.members`.

tests/plugin_member/zoo_plug is a tiny plug-in (a bigram model of digit strings, its codec, data module
and `Member`). A `*.dist-info/entry_points.txt` made in a temporary folder and put on PYTHONPATH registers
it the way `pip install` would, so nothing is installed. Then zoo-train (its model/data configs found via
hydra.searchpath), zoo-sample, `zoo.load(...).generate`, zoo-export, `zoo.load(export)` and zoo-serve must
all work for it, asking the member, with no zoo file naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

from zoo.codecs import base as codecs_base
from zoo.members import base as members_base
from zoo.models.base import MODELS

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_member"
ENTRY_POINTS = "[zoo.members]\ndigits = zoo_plug:PlugMember\n"


def make_site(folder: Path) -> Path:
    """A folder holding the plug-in's package metadata, as `pip install zoo-plug` would leave it."""
    info = folder / "zoo_plug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder


@pytest.fixture
def plugin_loaded(tmp_path, monkeypatch):
    """The plug-in loaded into this process through its entry point; every registration undone after."""
    for path in (str(make_site(tmp_path / "site")), str(PLUGIN_DIR)):
        monkeypatch.syspath_prepend(path)
    monkeypatch.setattr(members_base, "_loaded", False)
    monkeypatch.setattr(members_base, "MEMBERS", dict(members_base.MEMBERS))
    monkeypatch.setitem(MODELS, "_placeholder", None)  # so monkeypatch restores MODELS' keys below
    models_before, codecs_before = dict(MODELS), dict(codecs_base._REGISTRY)
    members_base.load_plugins()
    yield
    MODELS.clear()
    MODELS.update(models_before)
    codecs_base._REGISTRY.clear()
    codecs_base._REGISTRY.update(codecs_before)
    sys.modules.pop("zoo_plug", None)


def test_entry_point_registers_member_model_and_codec(plugin_loaded):
    member = members_base.member_for("plug_digits")
    assert member.name == "digits_plug" and type(member).__name__ == "PlugMember"
    assert members_base.member_for(None, model_type="bigram") is member
    assert "bigram" in MODELS and "plug_digits" in codecs_base._REGISTRY
    with pytest.raises(ValueError, match="`guidance` does not apply to digits_plug models .*a bigram has no condition"):
        member.parse({"guidance": 2.0})
    with pytest.raises(ValueError, match="unknown option 'tempreature'; did you mean 'temperature'"):
        member.parse({"tempreature": 1.0})


def test_zoo_serve_serves_a_plugin_member(plugin_loaded):
    """The plug-in's member is served with no zoo file naming it: its request fields come from its `inputs`
    (`out` is the server's: the files come back in the result) and the sampling options it takes, with the
    checkpoint's defaults; the result is the sample's value, the same as the Python API's."""
    pytest.importorskip("fastapi")
    import base64

    import torch
    import zoo_plug
    from fastapi.testclient import TestClient

    from zoo.hub.loading import Pretrained
    from zoo.serve import ServeSettings, create_app

    model = zoo_plug.Bigram(zoo_plug.BigramConfig(vocab_size=10))
    with torch.no_grad():
        model.table.weight.copy_(10 * torch.eye(10).roll(1, dims=1))  # row i peaks at i + 1: counting
    m = Pretrained(model.eval(), zoo_plug.DigitCodec(), {"max_new_tokens": 5, "temperature": 0.0}, name="digits")
    with TestClient(create_app({"digits": m}, ServeSettings(timeout_s=60))) as client:
        entry = client.get("/v1/models").json()["data"][0]
        assert (entry["member"], entry["codec"], entry["outputs"]) == ("digits_plug", "plug_digits", ["value", "files"])
        assert set(entry["inputs"]) == {"prompt", "num_samples"}  # no `out`: a client writes no server file
        assert entry["options"]["max_new_tokens"]["default"] == 5 and "guidance" not in entry["options"]
        r = client.post("/v1/generate", json={"model": "digits", "prompt": "7"})
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"value": "789012",
                                      "files": {"digits.txt": base64.b64encode(b"789012\n").decode()}}
        two = client.post("/v1/generate", json={"model": "digits", "prompt": "3", "num_samples": 2,
                                                "max_new_tokens": 2})
        assert two.json()["result"]["value"] == ["345", "345"], two.text
        for body, field, words in [({"prompt": "x7"}, None, "DigitCodec encodes digits only"),
                                   ({"guidance": 2}, "guidance", "not an option of digits_plug models"),
                                   ({"max_new_tokens": 0}, "max_new_tokens", "out of range")]:
            bad = client.post("/v1/generate", json={"model": "digits", **body})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
            assert words in bad.json()["error"]["message"], bad.text
    assert m.generate("7") == "789012"


def test_unknown_codec_names_the_known_members():
    with pytest.raises(ValueError, match=r"no zoo member serves codec 'nope'; known members: .*text \(codecs char"):
        members_base.member_for("nope")


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch, caplog):
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[zoo.members]\nbroken = no_such_module:Member\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(members_base, "_loaded", False)
    monkeypatch.setattr(members_base, "PLUGIN_ERRORS", [])
    members_base.load_plugins()
    assert members_base.member_for("bpe").name == "text"  # the built-in members still work
    with pytest.raises(ValueError, match="Plug-ins that failed to load: broken \\(no_such_module:Member\\)"):
        members_base.member_for("nope")


@pytest.mark.slow  # five fresh interpreters
def test_train_sample_load_export_and_serve_a_plugin_member(tmp_path):
    pytest.importorskip("fastapi")
    site = make_site(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site), str(PLUGIN_DIR)])}
    run_dir = tmp_path / "run"
    r = run_cli(["zoo-train", f"hydra.searchpath=[file://{PLUGIN_DIR / 'zoo_plug' / 'conf'}]", "model=plug",
                 "data=plug", "trainer.max_steps=30", "trainer.val_check_interval=10", "trainer.accelerator=cpu",
                 "module.lr=0.5", "module.warmup_steps=0", "module.weight_decay=0", "samples.every_n_steps=0",
                 "samples.max_new_tokens=6",
                 "samples.temperature=0", "checkpoint.every_n_steps=10", "logger=none", "threads=1",
                 f"run_dir={run_dir}"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run_dir / "samples" / "step_30.txt").read_text().startswith("3")

    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "prompt=7", "max_new_tokens=5", "temperature=0",
                 f"out={tmp_path / 'out'}"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "789012" in r.stdout and (tmp_path / "out" / "digits.txt").read_text() == "789012\n"
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "labels=3"], cwd=tmp_path, env=env)
    assert r.returncode != 0 and "`labels` does not apply to digits_plug models" in r.stderr

    r = run_cli(["zoo-export", f"checkpoint={ckpt}", f"out={tmp_path / 'export'}"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    code = ("import sys, zoo\n"
            "for source in sys.argv[1:]:\n"
            "    m = zoo.load(source)\n"
            "    print(type(m.member).__name__, m.generate('4', max_new_tokens=4, temperature=0))\n"
            "from fastapi.testclient import TestClient\n"  # and zoo-serve's app serves the export
            "from zoo.serve import create_app, load_models\n"
            "with TestClient(create_app(load_models([f'digits={sys.argv[2]}']))) as client:\n"
            "    body = {'model': 'digits', 'prompt': '4', 'max_new_tokens': 4, 'temperature': 0}\n"
            "    print('served', client.post('/v1/generate', json=body).json()['result']['value'])\n")
    r = subprocess.run([sys.executable, "-c", code, str(ckpt), str(tmp_path / "export")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == ["PlugMember 45678", "PlugMember 45678", "served 45678"]
