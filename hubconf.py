"""torch.hub entry points, one per pretrained zoo checkpoint (weights ship inside the package), gpt2 and imagegpt.

    import torch
    m = torch.hub.load("/path/to/zoo", "gpt_pydoc", source="local")
    print(m.generate("The with statement", max_new_tokens=80))

Each returns a `zoo.hub.Pretrained`: `.model` (nn.Module, eval mode), `.codec`, `.generate(...)`;
`help(zoo.load)` documents the names, how to sample each member, devices, dtypes and errors.
Every shipped file is checked against its sha256 before loading; nothing is unpickled. `device`
("cpu", "cuda", ...) and `dtype` (None = float32, or e.g. torch.bfloat16) are passed to `zoo.load`.
"""

from __future__ import annotations

from typing import Any

dependencies = ["torch", "safetensors", "tokenizers", "huggingface_hub"]


def _load(name: str, device: Any, dtype: Any) -> Any:
    from zoo.hub import load

    return load(name, device=device, dtype=dtype)


def gpt_pydoc(device: str = "cpu", dtype: Any = None) -> Any:
    """Character-level GPT (4 layers, 192 wide, 128-character context) trained on Python's pydoc topics.

    `m.generate("The with statement", max_new_tokens=80)` -> str. Card: zoo/hub/gpt-pydoc/README.md.
    """
    return _load("gpt-pydoc", device, dtype)


def gpt_pydoc_draft(device: str = "cpu", dtype: Any = None) -> Any:
    """gpt-pydoc's draft for speculative decoding (1 layer, 128 wide; same data and codec).

    `torch.hub.load(REPO, "gpt_pydoc").generate("The with statement", draft="gpt-pydoc-draft")`.
    Card: zoo/hub/gpt-pydoc-draft/README.md.
    """
    return _load("gpt-pydoc-draft", device, dtype)


def image_gpt_digits(device: str = "cpu", dtype: Any = None) -> Any:
    """Class-conditional patch image GPT on scikit-learn's 8x8 digits (17 grey levels, 2x2 patches).

    `m.generate(labels=[0, 1, 2], num_samples=4, guidance=2.0, out="digits.png")` -> images (N, 1, 8, 8).
    Card: zoo/hub/image-gpt-digits/README.md.
    """
    return _load("image-gpt-digits", device, dtype)


def music_transformer_bach(device: str = "cpu", dtype: Any = None) -> Any:
    """Music Transformer (relative attention, 0.97 M params) trained 2,500 steps on music21's Bach chorales
    as performance events (val 0.884 nats/event). `m.generate(max_new_tokens=512, out="bach.mid")` returns
    a pretty_midi.PrettyMIDI and writes a MIDI file; `primer="song.mid"` continues one."""
    return _load("music-transformer-bach", device, dtype)


def music_transformer_jsb(device: str = "cpu", dtype: Any = None) -> Any:
    """Music Transformer (relative attention, 0.93 M params) trained 10,000 steps (Muon, wsd) on JSB Chorales, four
    voices on a 16th-note grid (val 0.343 nats/token scored as the paper's table, benchmarks/jsb.md).
    `m.generate(max_new_tokens=512, out="chorale.mid")` writes 128 sixteenth steps of four-voice chorale."""
    return _load("music-transformer-jsb", device, dtype)


def music_transformer_styles(device: str = "cpu", dtype: Any = None) -> Any:
    """Style-conditioned Music Transformer (relative attention, 0.98 M params) on six music21 collections:
    bach, palestrina, monteverdi, quartets, folk, irish (benchmarks/music_styles.md).
    `m.generate(style="irish", guidance=4, out="irish.mid")`; `style="all"` gives one piece per style."""
    return _load("music-transformer-styles", device, dtype)


def text2image_digits(device: str = "cpu", dtype: Any = None) -> Any:
    """Text-to-image decoder (0.40 M params) on captioned digits ("a 4 on the left and a 1 on the
    right"; val 0.894 nats/token). `m.generate("a 3 on the left and a 7 on the right", guidance=3,
    num_samples=8, out="grid.png")` writes an image grid."""
    return _load("text2image-digits", device, dtype)


def gpt2(path: str | None = None, device: str = "cpu", dtype: Any = None, size: str = "gpt2",
         revision: str | None = None) -> Any:
    """OpenAI's GPT-2 converted to zoo's GPT and BPE codec (logits equal transformers'): `size` "gpt2",
    "gpt2-medium", "gpt2-large" or "gpt2-xl", fetched once from the Hugging Face Hub (openai-community/,
    at `revision`) into its cache (HF_HUB_CACHE; HF_HUB_OFFLINE=1 reads only the cache); or `path`, a
    Hugging Face GPT-2 folder you already have (config.json, model.safetensors or pytorch_model.bin,
    vocab.json, merges.txt)."""
    from zoo.hub import load

    return load(size, device=device, dtype=dtype, path=path, revision=revision)


def imagegpt(size: str = "imagegpt-small", path: str | None = None, device: str = "cpu", dtype: Any = None,
             revision: str | None = None) -> Any:
    """OpenAI's Image GPT converted to zoo's GPT and a colour-cluster codec (logits equal transformers'): `size`
    "imagegpt-small", "imagegpt-medium" or "imagegpt-large", fetched once from the Hugging Face Hub (openai/, at
    `revision`), or `path`, a Hugging Face ImageGPT folder you already have. `m.generate(num_samples=8,
    out="samples/")` writes 32x32 samples; primer="photo.jpg" completes a picture from its top rows."""
    from zoo.hub import load

    return load(size, device=device, dtype=dtype, path=path, revision=revision)
