"""`zoo.load`: one loader for every kind of source, a name in the registry included.

    import zoo
    zoo.list_models()                                   # ['gpt-pydoc', 'image-gpt-digits', ...]
    m = zoo.load("gpt-pydoc")                           # shipped inside the package, sha256-verified
    print(m.generate("The with statement", max_new_tokens=80))
    zoo.load("runs/gpt_pydoc/checkpoints/last.ckpt")    # a zoo-train checkpoint (weights_only=True)
    zoo.load("exports/gpt_pydoc")                       # a folder written by zoo-export
    zoo.load("gpt2")                                    # OpenAI's GPT-2 from the Hugging Face Hub, converted
    zoo.load("hf:ORG/NAME", revision="main")            # any GPT-2 Hub repo, or a zoo export pushed there
    zoo.load("gpt2", path="~/models/gpt2")              # a Hugging Face GPT-2 folder you already have

`help(zoo.load)` is the user's guide (names, what comes back, how to sample each member, devices,
files and errors). An entry's files live in a folder inside the package (`zoo/hub/<name>/`), behind
a URL prefix or in a Hugging Face Hub repo; URL files are downloaded once into `$ZOO_CACHE/hub/<name>/`,
Hub files into the Hugging Face cache (zoo.hub.hf_hub), and every registered file is checked against its
pinned sha256 before use, so an offline machine runs from the cache. Loading never
unpickles untrusted data: exported weights are safetensors, `.ckpt` files and `pytorch_model.bin` are
read with weights_only=True. To publish a new checkpoint: `zoo-export`, copy the folder to
`zoo/hub/<name>/`, add an `Entry` to zoo/hub/registry.py with the files' sha256, and a function in hubconf.py
(docs/adding_a_model.md).

The work is split by job: `sources.py` turns a registry entry into a verified local folder,
`build.py` rebuilds a model from files (export, .ckpt, GPT-2 folder), `pretrained.py` is the object that
comes back; this module decides which source `name_or_path` is.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from zoo.codecs.base import Codec
from zoo.core.quant import check_scheme, quantize_
from zoo.hub.build import gpt2_pretrained, imagegpt_pretrained, load_checkpoint, load_export, ready
from zoo.hub.pretrained import _SAMPLING_KEYS, Pretrained, generation_defaults, upgrade_options
from zoo.hub.registry import (
    CONFIG_FILE,
    GPT2_REPOS,
    HF_PREFIX,
    IMAGEGPT_REPOS,
    REGISTRY,
    WEIGHTS_FILE,
    HubError,
    describe_models,
    list_models,
)
from zoo.hub.sources import hf_model_type, is_hf_gpt2, resolve_entry

# the names this module has always offered (zoo.hub, zoo.hub.export, zoo.export and tests import them from here)
__all__ = ["_SAMPLING_KEYS", "Pretrained", "generation_defaults", "load", "load_any", "load_checkpoint", "load_export",
           "resolve_entry", "upgrade_options"]


def load(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
         path: str | Path | None = None, revision: str | None = None, quantize: str | None = None) -> Pretrained:
    """Load a pretrained zoo model, ready to sample: `m = zoo.load(name_or_path); m.generate(...)`.

    Names (`zoo.list_models()`):
      {registry}

    name_or_path may also be
      * a zoo-train checkpoint, e.g. "runs/gpt_pydoc/checkpoints/last.ckpt" (read with weights_only=True);
      * a folder written by zoo-export (model.safetensors, config.json, codec.json, generation_config.json);
      * "imagegpt-small", "imagegpt-medium", "imagegpt-large": OpenAI's Image GPT (openai/imagegpt-*, from
        the Hub as GPT-2 is; path= for a folder you have), converted to zoo's GPT and a colour-cluster codec:
        zoo.load("imagegpt-small").generate(num_samples=8, out="samples/"), primer="photo.jpg" completes it;
      * "hf:ORG/NAME": a Hugging Face Hub repo of the GPT-2 or ImageGPT architecture (converted) or a zoo
        export pushed with `zoo-export ... push_to=ORG/NAME`; `revision` picks a branch, tag or commit
        (default main). Hub files (and "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", from
        openai-community/, or a copy transformers cached under the legacy id "gpt2"...) are fetched once
        by huggingface_hub into its cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub), then read
        from there; HF_HUB_OFFLINE=1 never touches the network;
        HF_TOKEN or `hf auth login` give access to private and gated repos;
      * a Hugging Face GPT-2 folder (config.json with model_type "gpt2", model.safetensors or
        pytorch_model.bin, vocab.json + merges.txt), or "gpt2" with path=FOLDER: converted to zoo's GPT
        and a byte-level BPE codec, logits equal to transformers' GPT2LMHeadModel.
    `path` also points a registered name at your own copy of its files (still sha256-verified).

    Returns a `zoo.hub.Pretrained`: `.model` (nn.Module in eval mode on `device`), `.codec`,
    `.generation` (sampling defaults), `.config`, `.card` (model card), `.generate(...)`, and
    `m(idx)` -> logits (B, T, V).

    Sampling each member (options: max_new_tokens, temperature, top_k, top_p, min_p,
    repetition_penalty, guidance, stop, num_samples, seed; details in help(zoo.hub.Pretrained.generate)):
      text      zoo.load("gpt-pydoc").generate("The with statement", max_new_tokens=80, top_k=40) -> str
                (num_samples=4 -> list[str]; stop=("\\n\\n",) ends a sample at a blank line)
      image     zoo.load("image-gpt-digits").generate(labels=[3, 7], num_samples=8, guidance=2.0,
                out="digits.png") -> Tensor (16, 1, 8, 8) in [0, 1]; labels=None: every class
      captions  zoo.load("text2image-digits").generate(["a 3 on the left and a 7 on the right"],
                num_samples=8, guidance=3.0, out="grid.png") -> Tensor (8, 1, 8, 16); "" = unconditional
                (guidance: 1 = none; left out, the checkpoint's default in m.generation)
      music     zoo.load("music-transformer-bach").generate(max_new_tokens=512, out="bach.mid")
                -> pretty_midi.PrettyMIDI; primer="song.mid" continues a file; a style model:
                zoo.load("music-transformer-styles").generate(style="irish", guidance=4, out="irish.mid")

    Devices and dtype: `device` is "cpu" (default), "cuda", "cuda:1" or a torch.device; `dtype=None`
    gives float32 (the shipped float16 weights are upcast: half precision is slow on CPU);
    torch.bfloat16 or "bfloat16" casts. `m.to(device, dtype)` moves it later.

    Files and cache: shipped names are read from the installed package (zoo/hub/<name>/); an entry
    with a URL location downloads once into $ZOO_CACHE/hub/<name>/ ($ZOO_CACHE defaults to
    ~/.cache/zoo), one with an "hf:" location into the Hugging Face cache, and then works offline.
    Every registered file is checked against its pinned sha256.

    Errors (all subclasses of ValueError, each message says what to do):
      HubError        unknown name (lists the registered ones), missing file, a folder that is not an
                      export, weights that do not fit the config, a bad dtype; a Hub repo or revision
                      that does not exist, is gated or refused (says which token it needs), a Hub repo's
                      pickle that would run code, or a repo not in the cache when offline (says how to fetch it)
      ChecksumError   (zoo.data.download) a file's sha256 differs from the pinned one: truncated,
                      corrupt or another checkpoint; delete it and load again, or reinstall zoo
      CheckpointError (zoo.checkpoints) a .ckpt that is empty, truncated or not a zoo checkpoint; a
                      pickle that would run code is refused (HubError for GPT-2 .bin files)
    """
    scheme = check_scheme(quantize)  # before any work: a bad value fails at once
    m = _load(str(name_or_path), device, dtype, path, revision)
    if scheme is not None:
        quantize_(m.model, scheme)
        m.quantize = scheme
    return m


def _load(name: str, device: str | torch.device, dtype: torch.dtype | str | None, path: str | Path | None,
          revision: str | None) -> Pretrained:
    """`load` without quantisation: which source `name` is, and the model read from it."""
    is_hub = name.startswith(HF_PREFIX) or (name in GPT2_REPOS | IMAGEGPT_REPOS and path is None)
    if revision is not None and not is_hub:
        raise HubError(f"revision={revision!r} applies to Hugging Face Hub sources ('hf:ORG/NAME', "
                       f"{sorted(GPT2_REPOS | IMAGEGPT_REPOS)}), not to {name!r}")
    if name in REGISTRY:
        entry = REGISTRY[name]
        m = _load_folder(resolve_entry(entry, path), entry.name, device, dtype)
        m.name, m.card = entry.name, {**m.card, **entry.card}
        return m
    if name == "gpt2" or name.startswith("gpt2-"):
        if path is not None:
            return ready(gpt2_pretrained(Path(path).expanduser(), name), device, dtype)
        if name not in GPT2_REPOS:
            raise HubError(f"{name!r} is not a GPT-2 size on the Hub; accepted {list(GPT2_REPOS)}, "
                           "'hf:ORG/NAME' for another repo, or path= to a Hugging Face GPT-2 folder")
        return ready(_from_hub(_gpt2_repo(name, revision), revision, name, gpt2_pretrained), device, dtype)
    if name in IMAGEGPT_REPOS:
        if path is not None:
            return ready(imagegpt_pretrained(Path(path).expanduser(), name), device, dtype)
        return ready(_from_hub(IMAGEGPT_REPOS[name], revision, name, imagegpt_pretrained), device, dtype)
    if name.startswith(HF_PREFIX):
        m = _from_hub(name.removeprefix(HF_PREFIX), revision, name, lambda f, n: _load_folder(f, n, device, dtype))
        m.name = name
        return m
    p = Path(name).expanduser()
    hf_config = (p if p.is_dir() else p.parent) / CONFIG_FILE
    if p.exists() and hf_config.is_file() and is_hf_gpt2(hf_config):
        return ready(gpt2_pretrained(p, p.name), device, dtype)
    if p.exists() and hf_model_type(hf_config) == "imagegpt":
        return ready(imagegpt_pretrained(p, p.name), device, dtype)
    if p.is_dir():
        return load_export(p, device=device, dtype=dtype)
    if p.is_file():
        if p.name == WEIGHTS_FILE:
            return load_export(p.parent, device=device, dtype=dtype)
        return load_checkpoint(p, device=device, dtype=dtype)
    raise HubError(f"{name!r} is neither a registered pretrained model nor an existing file or folder; "
                   f"registered: {list_models()}; or give a .ckpt file or a folder written by zoo-export")


if load.__doc__:  # None under python -OO
    load.__doc__ = load.__doc__.replace("{registry}", textwrap.indent(describe_models(), " " * 6).strip())


def _gpt2_repo(name: str, revision: str | None) -> str:
    """The Hub repo to read GPT-2 size `name` from: openai-community/NAME, unless only the legacy id NAME is in
    the cache (where transformers' `from_pretrained("gpt2")` puts it): the same weights, not fetched twice."""
    from zoo.hub.hf_hub import cached_snapshot

    canonical = GPT2_REPOS[name]
    if cached_snapshot(canonical, revision) is None and cached_snapshot(name, revision) is not None:
        return name
    return canonical


def _from_hub(repo_id: str, revision: str | None, name: str, read: Any) -> Pretrained:
    """`read(folder, name)` of the Hub repo's snapshot; a file it refuses (a pickle that would run code, a
    corrupt download) is a HubError that names the source, as a fetch error does."""
    from zoo.hub.hf_hub import fetch  # huggingface_hub (and httpx) only when a Hub source is asked for

    folder = fetch(repo_id, revision, name=name)
    try:
        return read(folder, name)
    except HubError as e:
        raise HubError(f"{name}: {e}") from e


def _load_folder(folder: Path, name: str, device: str | torch.device, dtype: torch.dtype | str | None) -> Pretrained:
    """A verified folder (registry entry or Hub snapshot): a zoo export, or a Hugging Face GPT-2 or ImageGPT folder."""
    if is_hf_gpt2(folder / CONFIG_FILE):
        return ready(gpt2_pretrained(folder, name), device, dtype)
    if hf_model_type(folder / CONFIG_FILE) == "imagegpt":
        return ready(imagegpt_pretrained(folder, name), device, dtype)
    return load_export(folder, device=device, dtype=dtype)


def load_any(source: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Codec | None, dict[str, Any]]:
    """For zoo-sample: (model, codec, config) from a name, an exported folder or a `.ckpt` path."""
    m = load(source, device=device)
    return m.model, m.codec, m.config
