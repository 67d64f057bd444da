"""zoo-sample, `zoo.load(...).generate` and zoo-serve sample a checkpoint the same way.

All three go through `Pretrained.sample`: options given by the caller over the checkpoint's sampling
defaults (generation_config.json: image-gpt-digits' guidance 2, gpt-pydoc's temperature 0.8).
With the same seed and options, the three give the very same sample; an option left out is the
checkpoint's default in all three (zoo-sample once used its own config's defaults instead).
"""

from __future__ import annotations

import base64
import sys

import pytest

import zoo

pytest.importorskip("fastapi", reason="zoo-serve needs the [serve] extra")
from fastapi.testclient import TestClient  # noqa: E402

from zoo.serve import ServeSettings, create_app  # noqa: E402


def zoo_sample(args: list[str], tmp_path, monkeypatch, capsys) -> str:
    """zoo-sample run in this process, from `tmp_path`; returns what it printed."""
    from zoo import sample

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo-sample", *args, "hydra.run.dir=.", "hydra.output_subdir=null"])
    capsys.readouterr()
    sample.main()
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def digits():
    return zoo.load("image-gpt-digits")


@pytest.fixture(scope="module")
def pydoc():
    return zoo.load("gpt-pydoc")


def serve(models: dict, body: dict) -> dict:
    with TestClient(create_app(models, ServeSettings(timeout_s=120))) as client:
        r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_an_image_checkpoint_default_guidance_applies_in_all_three(digits, tmp_path, monkeypatch, capsys):
    assert digits.generation["guidance"] == 2.0  # the default under test (stored as guidance_scale)
    zoo_sample(["checkpoint=image-gpt-digits", "labels=[3]", "num_samples=2", "seed=0", "out=cli.png"],
               tmp_path, monkeypatch, capsys)
    digits.generate(labels=[3], num_samples=2, seed=0, out=tmp_path / "api.png")
    served = serve({"digits": digits}, {"model": "digits", "labels": [3], "num_samples": 2, "seed": 0})
    cli, api = (tmp_path / "cli.png").read_bytes(), (tmp_path / "api.png").read_bytes()
    assert cli == api == base64.b64decode(served["png"])
    digits.generate(labels=[3], num_samples=2, seed=0, guidance=1, out=tmp_path / "unguided.png")
    assert (tmp_path / "unguided.png").read_bytes() != api  # the default guidance changes the sample


def test_a_text_checkpoint_samples_alike_in_all_three(pydoc, tmp_path, monkeypatch, capsys):
    """zoo-sample streams the text, zoo-serve batches prompts through its own call: the same text all the same."""
    assert pydoc.generation["temperature"] == 0.8
    printed = zoo_sample(["checkpoint=gpt-pydoc", "prompt=The", "max_new_tokens=24", "seed=3"],
                         tmp_path, monkeypatch, capsys)
    api = pydoc.generate("The", max_new_tokens=24, seed=3)
    served = serve({"pydoc": pydoc}, {"model": "pydoc", "prompt": "The", "max_new_tokens": 24, "seed": 3})
    assert printed.rstrip("\n") == api == served["text"]
    assert pydoc.generate("The", max_new_tokens=24, seed=3, temperature=1.0) != api  # the default matters
