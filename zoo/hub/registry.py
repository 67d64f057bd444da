"""The registry of pretrained checkpoints: one `Entry` per name, its files pinned by sha256.

An entry's files live in a folder inside the package (`zoo/hub/<name>/`, next to this module), behind
a URL prefix, or in a Hugging Face Hub repo ("hf:ORG/NAME" at a pinned revision). The file names below
are the export format that `zoo.hub.export` writes and `zoo.hub.loading` reads. To publish a new
checkpoint: `zoo-export`, copy the folder to `zoo/hub/<name>/` (or `zoo-export ... push_to=ORG/NAME`
and pin the pushed commit), add an `Entry` below with the files' sha256, and a function in hubconf.py
(docs/adding_a_model.md, docs/hub.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HUB_DIR = Path(__file__).resolve().parent  # shipped checkpoints (package data): zoo/hub/<name>/
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
# zoo-export adapters=separate: a LoRA run's adapters in peft's files and key layout (PeftModel.save_pretrained's:
# keys under "base_model.model."), beside the base weights; zoo.load folds them in, peft.PeftModel.from_pretrained
# reads them as they are.
ADAPTER_WEIGHTS, ADAPTER_CONFIG, PEFT_PREFIX = "adapter_model.safetensors", "adapter_config.json", "base_model.model."
EXPORT_FORMAT = "zoo-export"
HF_PREFIX = "hf:"  # zoo.load("hf:ORG/NAME"): a Hugging Face Hub repo

# Names for OpenAI's GPT-2 checkpoints on the Hugging Face Hub (weights under a modified MIT licence).
GPT2_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
# OpenAI's Image GPT (Chen et al. 2020): 32×32 images of 512 colour clusters (zoo.hub.imagegpt converts them).
IMAGEGPT_REPOS = {name: f"openai/{name}" for name in ("imagegpt-small", "imagegpt-medium", "imagegpt-large")}
# transformers' `from_pretrained("gpt2")` caches the same weights under the legacy id, the bare name
# (models--gpt2): zoo.hub.loading reads a cached copy there before downloading openai-community/'s.


class HubError(ValueError):
    """A pretrained model cannot be found, verified or read; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    """A registered pretrained checkpoint.

    location: a folder relative to `zoo/hub/` (shipped in the package), an http(s):// / file:// URL
    prefix, or "hf:ORG/NAME", a Hugging Face Hub repo fetched at `revision` (a commit hash pins it; None =
    main) into the Hugging Face cache; `files` maps each file of the folder to its sha256 (for a Hub repo,
    the files fetched: a zoo export's or a GPT-2 folder's). `card` summarises the model
    card of the folder's config.json / README.md (data, data_license, steps, hardware, train_command,
    metric, metric_value); the metric is re-measured by `zoo.hub.export.measure_loss(zoo.load(name))`.
    `summary` is the one line `help(zoo.load)` shows for it.
    """

    name: str
    model_type: str
    location: str
    files: dict[str, str]
    card: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    revision: str | None = None

    @property
    def is_url(self) -> bool:
        return "://" in self.location

    @property
    def hf_repo(self) -> str | None:
        """The Hub repo id of an "hf:ORG/NAME" location, else None."""
        return self.location.removeprefix(HF_PREFIX) if self.location.startswith(HF_PREFIX) else None

    @property
    def hub_function(self) -> str:
        """Its torch.hub entry point in hubconf.py."""
        return self.name.replace("-", "_")


# The registry. Each entry's folder was written by `zoo-export`; its files' sha256 are pinned here.
REGISTRY: dict[str, Entry] = {e.name: e for e in (
    Entry(
        name="gpt-pydoc",
        summary="character-level GPT (1.8 M params, context 128 chars) on Python's pydoc topics",
        model_type="gpt",
        location="gpt-pydoc",
        files={
            "README.md": "e5e6ff2739667ed4e398f6013f4210b42109513c9676dc4df919d75c0f45141e",
            "codec.json": "9a813a40bec2bac84cb336e4678954ac6fec6fc35b7cf11f3480e60e102a3e62",
            "config.json": "9a0312799ed9e0c1eca2af36a12f56c7ff9c95ff6b9f4b1d9eca8052e4839913",
            "generation_config.json": "34fa0ab8b76b7ff37041b36fd9c1a7174608f0fe90b02349a548cae6469e1c4e",
            "model.safetensors": "d42e21698c65d978eac730f9a61a524679f1241dabe750f38048c53b9323cffc",
        },
        card={
            "data": "pydoc",
            "data_license": "Python Software Foundation License 2.0 (Python's documentation, module "
                            "pydoc_data.topics)",
            "steps": 600,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4), 523 s of training CPU time",
            "train_command": "zoo-train experiment=gpt_pydoc_fast trainer.max_steps=600 trainer.val_check_interval=50 "
                             "data.max_val_windows=null samples.every_n_steps=0 threads=1",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.1525,
        },
    ),
    Entry(
        name="gpt-pydoc-draft",
        summary="gpt-pydoc's speculative-decoding draft: 1 layer, 0.23 M params, same data and codec "
                "(zoo-sample checkpoint=gpt-pydoc draft=gpt-pydoc-draft)",
        model_type="gpt",
        location="gpt-pydoc-draft",
        files={
            "README.md": "67aa2bd97e9a76b3bee7c3a2bb47bd42a5977d687c96f6f972bd8f2d1b637057",
            "codec.json": "9a813a40bec2bac84cb336e4678954ac6fec6fc35b7cf11f3480e60e102a3e62",
            "config.json": "a9b0b33afe868c9f4aa1f671b6dca081785a783c0ee431c143bfb01b08a8b50a",
            "generation_config.json": "34fa0ab8b76b7ff37041b36fd9c1a7174608f0fe90b02349a548cae6469e1c4e",
            "model.safetensors": "6ee6f0b12edf1fdb4bb956f1c37938faae0d498d314e6e0a4c2f33ed790fa92c",
        },
        card={
            "data": "pydoc",
            "data_license": "Python Software Foundation License 2.0 (Python's documentation, module "
                            "pydoc_data.topics)",
            "steps": 1200,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4), 273 s of training wall time",
            "train_command": "zoo-train experiment=gpt_pydoc_fast name=gpt_pydoc_draft model.n_layer=1 "
                             "model.n_embd=128 model.n_head=4 trainer.max_steps=1200 trainer.val_check_interval=100 "
                             "data.max_val_windows=null samples.every_n_steps=0 threads=1",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.259,
        },
    ),
    Entry(
        name="image-gpt-digits",
        summary="class-conditional patch image GPT (0.47 M) on 8x8 digits, 17 grey levels",
        model_type="image_gpt",
        location="image-gpt-digits",
        files={
            "README.md": "f6441de497b359d9831e19e76e5c63d82ffa0e6509fb26790d785769b8da706e",
            "codec.json": "8dbbbedcafd4335014b875d987c412a345e5efaac72b54d305b2a0d2d282ddea",
            "config.json": "8e9649e43894b36bffc2350086e477cd2d2c7176ef47d244ba6b9240f2e022e0",
            "generation_config.json": "9cfe5c6d563008b0fb682edd514b35e35f35c3579b9f9a717f58748328ad2fc4",
            "model.safetensors": "1d0acb1505e02a04ff0157f20fd12c26744cba6f541828ff710259fc21aa1d66",
            "samples.png": "a49161056f2e7d6d3707dd758ef2216fa8a9f448417c694c2820e2442687e79a",
        },
        card={
            "data": "digits",
            "data_license": "CC BY 4.0 (UCI ML hand-written digits, as shipped by scikit-learn)",
            "steps": 800,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4), 122 s of training",
            "train_command": "zoo-train experiment=image_gpt_digits_fast module.lr=2e-3 module.warmup_steps=100 "
                             "trainer.max_steps=800 trainer.val_check_interval=100 samples.every_n_steps=0 threads=1",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.1416,
        },
    ),
    Entry(
        name="music-transformer-bach",
        summary="Music Transformer, relative attention (0.97 M, 2,500 steps) on Bach chorales (MIDI events)",
        model_type="music_transformer",
        location="music-transformer-bach",
        files={
            "README.md": "48c1c6815faf5a3b5370dabd5df4566c156cf663411d6a1d16071cea4ea6694e",
            "codec.json": "4b828a5b3031156304813ed274e6cf9c2e3cbaa654c2a6faa9161c0950d00481",
            "config.json": "db6dec0373a31c560e6db03332ad822ac8f6354b5cd232f72943729658a53b03",
            "generation_config.json": "aea8d3d1c960bf6a6e42cbd25076c6c5f4891b635f9c50708dae62936fafabad",
            "model.safetensors": "b3da5666d79aa004ed921df5c52ef60f31c8138b854300023f9044d8ee2d2bb9",
            "pianoroll.png": "2407a7e9ce885437465d88bfc5a2385c52574cdd0de746d501c7404deead3dc1",
        },
        card={
            "data": "bach_chorales",
            "data_license": "public domain compositions; encodings from the music21 corpus (BSD-3-Clause)",
            "steps": 2500,
            "hardware": "CPU, 2 threads of a shared 2-core x86_64 VM (AMD EPYC), 32 min wall",
            "train_command": "zoo-train experiment=music_transformer_bach trainer.max_steps=2500 model.dropout=0.1 "
                             "threads=2",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 0.8839,
        },
    ),
    Entry(
        name="music-transformer-jsb",
        summary="Music Transformer, relative attention (0.93 M, 10,000 steps, Muon) on JSB Chorales "
                "(16th grid): val 0.343 as the paper scores it",
        model_type="music_transformer",
        location="music-transformer-jsb",
        files={
            "README.md": "16604990cf5b2c03cbf9b1a6e652ddc68c8a44b7691b1c479bb96ac05c52fe94",
            "codec.json": "c050699d210052510ecafd22126aa8491296ec2842c0085a06f8c79eb6db88e8",
            "config.json": "b754611cb111d420fd0da574586b4e4729fe20f9f931a63af5670baea2ee80d8",
            "generation_config.json": "d0a3c37b03d51a133442ae11c39df230293a7ab8a149fd08576b717e0999f75a",
            "model.safetensors": "7a11149fe2cce29f1a9ea1ab46721c035151c6bcd2e629fb533faa9e3fb433b5",
            "pianoroll.png": "87e5b6fc2f6e8f0b0b25e87766126349e2ffd91869160ead0892b89f3ab886f0",
        },
        card={
            "data": "jsb_chorales",
            "data_license": "public domain compositions; JSB Chorales dataset (Boulanger-Lewandowski et al. "
                              "2012)",
            "steps": 10000,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4): about 117 min of CPU at 0.7 s "
                          "a step",
            "train_command": "zoo-train experiment=music_transformer_jsb_paper_fast data.path=Jsb16thSeparated.json "
                               "threads=1 (one 10,000-step schedule; its first 1,635 steps ran with max_steps=5000 and "
                               "were resumed exactly: benchmarks/jsb.md)",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 0.3701,
        },
    ),
    Entry(
        name="music-transformer-styles",
        summary="Style-conditioned Music Transformer (0.98 M, 5,000 steps) on six music21 "
                "collections; sample by style with guidance",
        model_type="music_transformer",
        location="music-transformer-styles",
        files={
            "README.md": "bc03a4d416912eab03c36d882c1e2e7dc9fbfd86312e6565049c07d100951710",
            "codec.json": "b418263f5abd219d9d40e260ed8628f1e2a131c872f80f7e1a454ba311f118f8",
            "config.json": "98e1f925ea0f0303c8d8bef906a6f3043d5feadbe84eac5713aba7e4da9e4fce",
            "generation_config.json": "7e720d8d482f1023d40f3cdc85bd22202ee1ef3095964a94f9aab5d56ae9c9b8",
            "model.safetensors": "f95b69d271e0f4b9b3a11db6f2e78c84ee15491f92c6fd201b7d7e71c0ab0028",
            "pianoroll.png": "085452c994403c560c3438ca975196dec76dc1cb9a7d9e93346a34910eac4507",
        },
        card={
            "data": "music21_styles",
            "data_license": "see the data module",
            "steps": 5000,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4): 5,000 steps in 65 min "
                          "wall beside another training run on the other core (+ 3 min converting the scores)",
            "train_command": "zoo-train experiment=music_transformer_styles_fast threads=1 (one 5,000-step run)",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.4662,
        },
    ),
    Entry(
        name="text2image-digits",
        summary='text-to-image decoder (0.40 M): "a 3 on the left and a 7 on the right" -> 8x16',
        model_type="text2image",
        location="text2image-digits",
        files={
            "README.md": "32258515674b46e0aa3d445031fe0e99277e2a8430713332d04c5066825b21b7",
            "codec.json": "2ec4eafe9c2991e9b96521e02e168395229068a54087eba9bdd3ddf35cd7cab7",
            "config.json": "daf0bc8d233abc1f1497993dcc7af6305e6484d49c7981ca48a5306895ecf05f",
            "generation_config.json": "1a75cbcd4b83b1d2a75016b3dd30243439421f313c4c90c0850570c5e190e8c8",
            "model.safetensors": "064bfc0c4e50c7502c426c73f7b1c2877c14aa1efea47f878320f33ead585f9b",
            "samples.png": "58d7db83a04f874dd1db56bc1cca6afd2c0119624493f044eedd41b222dcf068",
        },
        card={
            "data": "captioned_digits",
            "data_license": "CC BY 4.0 (UCI ML hand-written digits, as shipped by scikit-learn); captions generated",
            "steps": 1500,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM (AMD EPYC Zen 4), 33 min wall beside 3-10 other "
                        "jobs",
            "train_command": "zoo-train experiment=text2image_digits_fast trainer.max_steps=1500 "
                             "trainer.val_check_interval=250 samples.every_n_steps=0 threads=1",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 0.8768,
        },
    ),
)}


def list_models() -> list[str]:
    """Names accepted by `load`: registered pretrained checkpoints, then "gpt2" (from the Hugging Face Hub;
    "gpt2-medium", "gpt2-large", "gpt2-xl" too, see describe_models)."""
    return sorted(REGISTRY) + ["gpt2"]


def describe_models() -> str:
    """One line per name `load` accepts: summary and re-measured validation loss (generated from REGISTRY)."""
    lines = []
    for name in sorted(REGISTRY):
        e = REGISTRY[name]
        metric = e.card.get("metric_value")
        lines.append(f"{name:<24}{e.summary or e.model_type}" + (f"; val {metric:.3f} nats/token" if metric else ""))
    for name, repo in GPT2_REPOS.items():
        lines.append(f"{name:<24}OpenAI's GPT-2 from the Hugging Face Hub ({repo}), fetched once into the HF cache")
    for name, repo in IMAGEGPT_REPOS.items():
        lines.append(f"{name:<24}OpenAI's Image GPT from the Hugging Face Hub ({repo}): 32x32 images, 512 colours")
    lines.append(f"{'hf:ORG/NAME':<24}any Hub repo of the GPT-2 or ImageGPT architecture, or a zoo export pushed there")
    return "\n".join(lines)
