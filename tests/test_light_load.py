"""Inference is light (issue 24, STYLE.md principle 14): `import zoo; zoo.load(NAME)` and sampling import no
trainer (Lightning, zoo.training), no metrics library and no Hydra; zoo-sample imports Hydra, not the trainer.

Each check runs in a fresh process, whose `sys.modules` after the work says what was imported. The times
are measured by benchmarks/load_time.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import torch
from helpers import ROOT

from zoo.checkpoints import CHECKPOINT_VERSION
from zoo.codecs.text import CharCodec
from zoo.models.gpt import GPT, GPTConfig

TRAINER = ("lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics", "torchvision", "zoo.training")
HYDRA = ("hydra", "omegaconf")

# One shipped checkpoint per member, and a small generate call for each (what comes back: its type's name).
GENERATE = [
    ("gpt-pydoc", {"prompt": "The with statement", "max_new_tokens": 8, "seed": 0}, "str"),
    ("image-gpt-digits", {"labels": [3], "seed": 0}, "Tensor"),
    ("music-transformer-bach", {"max_new_tokens": 16, "seed": 0}, "PrettyMIDI"),
    ("text2image-digits", {"prompt": "a 3 on the left and a 1 on the right", "seed": 0}, "Tensor"),
]

LOAD_AND_GENERATE = """
import json, sys
import zoo
made = {}
for name, options, _ in json.loads(sys.argv[1]):
    made[name] = type(zoo.load(name).generate(**options)).__name__
print(json.dumps({"made": made, "modules": sorted(sys.modules)}))
"""

ZOO_SAMPLE = """
import json, sys
from zoo.sample import main
sys.argv = ["zoo-sample", "checkpoint=gpt-pydoc", "prompt=def", "max_new_tokens=8", "seed=0"]
main()
print("\\n" + json.dumps({"modules": sorted(sys.modules)}))
"""


def _run(code: str, *args: str, cwd) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def imported(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The packages of `packages` that any of `modules` belongs to."""
    return sorted({p for p in packages for m in modules if m == p or m.startswith(p + ".")})


def test_imported_names_a_package_and_its_submodules_only():
    modules = ["zoo", "zoo.training.lora", "lightningx", "hydra_core", "omegaconf.dictconfig"]
    assert imported(modules, TRAINER + HYDRA) == ["omegaconf", "zoo.training"]


def test_load_and_generate_import_no_trainer_and_no_hydra(tmp_path):
    """Every member's shipped checkpoint loads and generates in a process that never imports Lightning
    (nor torchmetrics/torchvision, which come with it), zoo.training, Hydra or OmegaConf."""
    out = _run(LOAD_AND_GENERATE, json.dumps(GENERATE), cwd=tmp_path)
    assert out["made"] == {name: kind for name, _, kind in GENERATE}
    assert imported(out["modules"], TRAINER + HYDRA) == []


def test_a_zoo_train_checkpoint_loads_without_the_trainer(tmp_path):
    """A `.ckpt` (what zoo-train writes, made here without training) is read through zoo.checkpoints: no Lightning."""
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8)
    meta = {"version": CHECKPOINT_VERSION, "model_type": "gpt", "model_config": dataclasses.asdict(config),
            "codec": CharCodec.fit("abcde").to_dict(), "train_config": {}}
    state = {f"model.{k}": v for k, v in GPT(config).state_dict().items()}
    torch.save({"state_dict": state, "zoo": meta, "global_step": 1}, tmp_path / "last.ckpt")
    job = [(str(tmp_path / "last.ckpt"), {"prompt": "ab", "max_new_tokens": 4, "seed": 0}, "str")]
    out = _run(LOAD_AND_GENERATE, json.dumps(job), cwd=tmp_path)
    assert out["made"] == {str(tmp_path / "last.ckpt"): "str"}
    assert imported(out["modules"], TRAINER + HYDRA) == []


def test_zoo_sample_imports_hydra_but_no_trainer(tmp_path):
    out = _run(ZOO_SAMPLE, cwd=tmp_path)
    assert imported(out["modules"], HYDRA) == ["hydra", "omegaconf"]  # the entry point's own config
    assert imported(out["modules"], TRAINER) == []
