"""zoo: a PyTorch Lightning model zoo of generative transformers on one attention core.

    import zoo
    zoo.list_models()                         # pretrained names
    m = zoo.load("gpt-pydoc")                 # help(zoo.load): names, sampling per member, devices, errors
    print(m.generate("The with statement", max_new_tokens=80))

Entry points (console scripts, configured by Hydra from conf/):
    zoo-train    zoo.train    train any member: `zoo-train experiment=image_gpt_digits`, `--cfg job`, `-m` sweeps
    zoo-sample   zoo.sample   sample a .ckpt, an exported folder or a pretrained name
    zoo-export   zoo.export   a .ckpt -> safetensors folder + model card that `zoo.load` reads
    zoo-bench    zoo.bench    speed and memory report (benchmarks/)
    torch.hub    hubconf.py   one entry point per pretrained checkpoint

Map of the package, by layer (low -> high; a module imports only its own layer and lower ones,
models and codecs never each other, eval never data; tests/test_layers.py enforces it, and no cycles):
    core/            attention.py: MultiHeadAttention; kernels.py: math (reference) / sdpa / chunked; positions.py:
                     rotary, position biases (relative, ALiBi); KV cache; layers.py: pre-norm Block, MLP, norms
    config.py        the one config checker: dataclass fields and constructor signatures as the schema
    models/          one file per member (pure PyTorch, config dataclass + `register`): gpt, image_gpt,
                     music_transformer, text2image; models/base.py: the registry, `build_model` and the
                     upgrade of older config spellings; models/gpt2_weights.py: GPT-2 -> GPT state dicts
    codecs/          text (char, byte, BPE), image patches, MIDI events, captions: exact round trips
    data/            LightningDataModules with deterministic, resumable batch streams; download + sha256
    sampling.py      the one generation loop: temperature, top-k/p, min-p, repetition penalty, guidance
    checkpoints/     checkpoint files without Lightning: safe (weights-only) reading, atomic writing, the
                     `ckpt["zoo"]` metadata, rebuilding model + codec, LoRA adapters
    eval/            bits/dim, classifiers, FID features, caption faithfulness
    members/         one module per modality (text, image, music, text2image): how samples are drawn,
                     rendered and saved; base.py: SampleSet and the renderer registry
    training/        module.py GenerativeModule, callbacks, tracking (loggers), progress, resilience,
                     checkpoint_io (Lightning's atomic checkpoint IO), builders
                     config (the module / checkpoint / top-level dataclasses), preflight (zoo-train's
                     config check), summary (the end-of-run screens as text)
    hub/             registry, loading (`load`, `Pretrained`), gpt2 import, export; shipped weights in zoo/hub/<name>/
    train.py sample.py export.py cli.py, bench/   entry points, the only Hydra importers

`load` and `list_models` come from `zoo.hub`, imported on first use so that `import zoo` stays fast.
Guides: README.md, docs/configuration.md, docs/adding_a_model.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["list_models", "load"]


def __getattr__(name: str) -> Any:
    """`zoo.load` and `zoo.list_models` are `zoo.hub`'s own functions (so `help(zoo.load)` is the guide)."""
    if name in __all__:
        from zoo import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
