"""Pretrained zoo models: a registry of named checkpoints and one loader for every kind of source.

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
`zoo/hub/<name>/`, add an `Entry` below with the files' sha256, and a function in hubconf.py
(docs/adding_a_model.md).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.checkpoints.reading import model_from_checkpoint
from zoo.codecs.base import CODEC_FILE, Codec, load_codec
from zoo.data.download import ChecksumError, cache_root, download, file_sha256
from zoo.hub.adapters import fold_adapters
from zoo.hub.gpt2 import load_gpt2
from zoo.hub.hf_hub import fetch
from zoo.hub.registry import (
    ADAPTER_WEIGHTS,
    CONFIG_FILE,
    EXPORT_FORMAT,
    GENERATION_FILE,
    GPT2_REPOS,
    HF_PREFIX,
    HUB_DIR,
    REGISTRY,
    WEIGHTS_FILE,
    Entry,
    HubError,
    describe_models,
    list_models,
)
from zoo.members import Member, member_for
from zoo.models.base import build_model
from zoo.sampling import RENAMED, SamplingConfig

# What a run's `samples` section contributes to a checkpoint's sampling defaults (generation_config.json).
_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "guidance")


def generation_defaults(train_config: dict[str, Any]) -> dict[str, Any]:
    """Sampling defaults from the training run's `samples` section (what its logged samples used)."""
    samples = upgrade_options(train_config.get("samples") or {})
    return {k: samples[k] for k in _SAMPLING_KEYS if samples.get(k) is not None}


def upgrade_options(stored: dict[str, Any]) -> dict[str, Any]:
    """Sampling options read back from a file written by an older zoo (generation_config.json, a checkpoint's
    training config: `guidance_scale`) under today's names; a value under the new name wins."""
    old = {RENAMED[k]: v for k, v in stored.items() if k in RENAMED}
    return old | {k: v for k, v in stored.items() if k not in RENAMED}



# ---- the loaded object --------------------------------------------------------------------------
@dataclass
class Pretrained:
    """A model ready to sample, as returned by `zoo.load`.

    Attributes: `model` (the `nn.Module`, eval mode), `codec` (tokens <-> text / images / MIDI; None
    for a GPT-2 folder without vocab files), `generation` (the checkpoint's sampling defaults, from
    generation_config.json), `config` (model type, model config and, for zoo runs, the resolved
    training config), `name` and `card` (the model card: data, licence, steps, hardware, metric).
    `m(idx, cond=None)` gives logits (B, T, V) for token ids (B, T) without gradients;
    `m.to(device, dtype)` moves it; `m.generate(...)` samples (see its help).
    """

    model: torch.nn.Module
    codec: Codec | None
    generation: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return getattr(self.model, "model_type", type(self.model).__name__)

    def __repr__(self) -> str:  # one line: the dataclass default would print the module tree and configs
        p = next(self.model.parameters(), None)
        n = sum(q.numel() for q in self.model.parameters())
        where = f", device={p.device}, dtype={str(p.dtype).removeprefix('torch.')}" if p is not None else ""
        codec = getattr(self.codec, "type_name", None)
        return f"Pretrained(name={self.name!r}, model_type={self.model_type!r}, params={n:,}, codec={codec!r}{where})"

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Pretrained:
        self.model.to(device=device, dtype=dtype)
        return self

    def __call__(self, idx: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T)."""
        with torch.no_grad():
            return self.model(idx, cond=cond)

    @property
    def member(self) -> Member:
        """The member (`zoo.members`) that samples this model: asked by its codec, else its model type."""
        return member_for(self.codec, model_type=self.model_type)

    def generate(self, prompt: Any = None, **options: Any) -> Any:
        """Sample from the model; what `prompt` means and what comes back depend on the member.

        Sampling options (`zoo.sampling.SamplingConfig`) override the checkpoint's defaults
        (`.generation`): max_new_tokens, temperature (0 = greedy), top_k, top_p, min_p,
        repetition_penalty, guidance (classifier-free guidance scale; 1 = none), stop, num_samples,
        seed, use_cache, compile. Each member honours the options that make sense for it; any other
        option, or an unknown one, raises ValueError naming it and the accepted ones.

        text (gpt-pydoc, gpt2):
            generate(prompt="", *, num_samples=1, stop=(), **options) -> str
            prompt + continuation; a list of num_samples strings when num_samples > 1. `stop`: strings
            that end a sample. The default max_new_tokens fits the context; longer slides a window.
        image (image-gpt-digits):
            generate(labels=None, *, num_samples=1, guidance=None, out=None, **options) -> Tensor
            float images in [0, 1], (len(labels) * num_samples, C, H, W), num_samples per label;
            labels: class ids or names (None = every class); guidance: classifier-free guidance scale
            (None or 1 = none, 2 gives class-typical digits; left out = the checkpoint's default, .generation);
            out: a PNG grid, one row per label; primer=IMAGE, rows=N: complete an image's top N rows.
        captions (text2image-digits):
            generate(captions, *, num_samples=1, guidance=None, out=None, **options) -> Tensor
            float images in [0, 1], (len(captions) * num_samples, C, H, W); a caption string or a list;
            "" or None is the unconditional prompt; guidance as for images; out: a PNG grid, one row per
            caption.
        music (music-transformer-bach, -jsb, -styles):
            generate(primer=None, *, style=None, out=None, render_audio=False, **options) -> pretty_midi.PrettyMIDI
            primer: a .mid file to continue (None = from the start); out: writes a .mid file (render_audio:
            also .wav and a piano roll). A style model (music-transformer-styles, `m.codec.styles`) takes
            style="irish" (a name, an id, a list, or "all": num_samples pieces per style -> a list) and
            guidance (1 = none). Longer than the context, a window slides. Audio and pictures:
            zoo.members.music_render.render_wav(pm, "x.wav") and zoo.members.music_render.piano_roll_png(pm, "x.png").
        Any other member (a plug-in): see its `Member` class, `m.member`.
        """
        member = self.member
        if prompt is not None:
            if member.primary is None or member.primary in options:
                raise TypeError(f"generate() got a positional argument {prompt!r} that the {member.name} member "
                                f"has no place for" + (f" besides {member.primary}=" if member.primary else ""))
            options = {member.primary: prompt, **options}
        base = SamplingConfig.from_options({k: v for k, v in self.generation.items() if k in member.sampling})
        return member.sample(self.model, self.codec, options, base=base).value


# ---- loading ------------------------------------------------------------------------------------
def load(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
         path: str | Path | None = None, revision: str | None = None) -> Pretrained:
    """Load a pretrained zoo model, ready to sample: `m = zoo.load(name_or_path); m.generate(...)`.

    Names (`zoo.list_models()`):
      {registry}

    name_or_path may also be
      * a zoo-train checkpoint, e.g. "runs/gpt_pydoc/checkpoints/last.ckpt" (read with weights_only=True);
      * a folder written by zoo-export (model.safetensors, config.json, codec.json, generation_config.json);
      * "hf:ORG/NAME": a Hugging Face Hub repo of the GPT-2 architecture (converted, as below) or a zoo
        export pushed with `zoo-export ... push_to=ORG/NAME`; `revision` picks a branch, tag or commit
        (default main). Hub files (and "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", from
        openai-community/) are fetched once by huggingface_hub into its cache (HF_HUB_CACHE, default
        ~/.cache/huggingface/hub), then read from there; HF_HUB_OFFLINE=1 never touches the network;
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
    name = str(name_or_path)
    is_hub = name.startswith(HF_PREFIX) or (name in GPT2_REPOS and path is None)
    if revision is not None and not is_hub:
        raise HubError(f"revision={revision!r} applies to Hugging Face Hub sources ('hf:ORG/NAME', "
                       f"{sorted(GPT2_REPOS)}), not to {name!r}")
    if name in REGISTRY:
        entry = REGISTRY[name]
        m = _load_folder(resolve_entry(entry, path), entry.name, device, dtype)
        m.name, m.card = entry.name, {**m.card, **entry.card}
        return m
    if name == "gpt2" or name.startswith("gpt2-"):
        if path is not None:
            return _ready(_gpt2_pretrained(Path(path).expanduser(), name), device, dtype)
        if name not in GPT2_REPOS:
            raise HubError(f"{name!r} is not a GPT-2 size on the Hub; accepted {list(GPT2_REPOS)}, "
                           "'hf:ORG/NAME' for another repo, or path= to a Hugging Face GPT-2 folder")
        return _ready(_from_hub(GPT2_REPOS[name], revision, name, _gpt2_pretrained), device, dtype)
    if name.startswith(HF_PREFIX):
        m = _from_hub(name.removeprefix(HF_PREFIX), revision, name, lambda f, n: _load_folder(f, n, device, dtype))
        m.name = name
        return m
    p = Path(name).expanduser()
    hf_config = (p if p.is_dir() else p.parent) / CONFIG_FILE
    if p.exists() and hf_config.is_file() and _is_hf_gpt2(hf_config):
        return _ready(_gpt2_pretrained(p, p.name), device, dtype)
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


def _from_hub(repo_id: str, revision: str | None, name: str, read: Any) -> Pretrained:
    """`read(folder, name)` of the Hub repo's snapshot; a file it refuses (a pickle that would run code, a
    corrupt download) is a HubError that names the source, as a fetch error does."""
    folder = fetch(repo_id, revision, name=name)
    try:
        return read(folder, name)
    except HubError as e:
        raise HubError(f"{name}: {e}") from e


def _load_folder(folder: Path, name: str, device: str | torch.device, dtype: torch.dtype | str | None) -> Pretrained:
    """A verified folder (registry entry or Hub snapshot): a zoo export, or a Hugging Face GPT-2 folder."""
    if _is_hf_gpt2(folder / CONFIG_FILE):
        return _ready(_gpt2_pretrained(folder, name), device, dtype)
    return load_export(folder, device=device, dtype=dtype)


def _gpt2_pretrained(path: Path, name: str) -> Pretrained:
    model, codec = load_gpt2(path)
    config = {"model_type": "gpt", "model_config": dataclasses.asdict(model.config)}
    return Pretrained(model, codec, {"temperature": 0.8, "top_k": 40}, config=config, name=name)


def _is_hf_gpt2(config_path: Path) -> bool:
    try:
        return json.loads(config_path.read_text()).get("model_type") == "gpt2"
    except (json.JSONDecodeError, AttributeError, FileNotFoundError):
        return False


def resolve_entry(entry: Entry, path: str | Path | None = None) -> Path:
    """The verified local folder of `entry`: `path`, the package folder, or the download cache (zoo's for
    a URL, the Hugging Face cache for an "hf:" repo)."""
    if path is not None:
        folder = Path(path).expanduser()
    elif entry.hf_repo is not None:
        folder = fetch(entry.hf_repo, entry.revision, files=sorted(entry.files), name=entry.name)
    elif not entry.is_url:
        folder = HUB_DIR / entry.location
    else:
        folder = cache_root() / "hub" / entry.name
        for fname, sha in entry.files.items():
            download(f"{entry.location.rstrip('/')}/{fname}", folder / fname, sha256=sha)
    for fname, sha in entry.files.items():
        f = folder / fname
        if not f.is_file():
            raise HubError(f"{entry.name}: missing {f}; expected the files {sorted(entry.files)}")
        actual = file_sha256(f)
        if actual != sha and entry.hf_repo is not None and path is None:
            raise ChecksumError(f"{entry.name}: {fname} of the Hub repo {entry.hf_repo} (revision {entry.revision}) "
                                f"has sha256 {actual}, expected {sha}; nothing was loaded. The cached file "
                                f"{f.resolve()} is corrupt, or the revision does not hold the pinned file: "
                                f"delete the file and load again, or pin the revision that holds it.")
        if actual != sha:
            raise ChecksumError(f"{entry.name}: {f} has sha256 {actual}, expected {sha}: the file is truncated, "
                                f"corrupt or not this checkpoint. Delete it and load again (URL entries are "
                                f"downloaded anew), or reinstall zoo for files shipped in the package.")
    return folder


def load_export(folder: str | Path, device: str | torch.device = "cpu",
                dtype: torch.dtype | str | None = None) -> Pretrained:
    """Rebuild a model from a folder written by `zoo.hub.export.export` (safetensors, no pickle)."""
    folder = Path(folder)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{folder} is not an exported zoo model: missing {missing}; expected a folder written by "
                       f"zoo-export (model.safetensors, config.json, codec.json, generation_config.json)")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise HubError(f"{folder / CONFIG_FILE} is not valid JSON ({e}); the file is truncated or corrupt") from e
    if config.get("format") != EXPORT_FORMAT:
        raise HubError(f"{folder / CONFIG_FILE} has format {config.get('format')!r}, expected {EXPORT_FORMAT!r}")
    try:
        state = load_file(folder / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"cannot read {folder / WEIGHTS_FILE}: the file is truncated or corrupt ({e})") from e
    model = build_model(config["model_type"], config["model_config"])
    _load_state(model, state, source=str(folder / WEIGHTS_FILE))
    if (folder / ADAPTER_WEIGHTS).is_file():  # zoo-export adapters=separate: the fine-tuned model is base + adapters
        fold_adapters(model, folder)
    codec = load_codec(folder) if (folder / CODEC_FILE).is_file() else None
    gen_path = folder / GENERATION_FILE
    generation = upgrade_options(json.loads(gen_path.read_text())) if gen_path.is_file() else {}
    return _ready(Pretrained(model, codec, generation, config=config, name=config.get("name"),
                             card=config.get("card", {})), device, dtype)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> Pretrained:
    """A zoo-train `.ckpt` (read with weights_only=True; a pickle that would run code is refused)."""
    model, codec, meta = model_from_checkpoint(path)
    cfg = {"model_type": meta["model_type"], "model_config": meta["model_config"],
           "train_config": meta.get("train_config", {})}
    return _ready(Pretrained(model, codec, generation_defaults(cfg["train_config"]), config=cfg), device, dtype)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load, except that a tensor tied to one in the file (stored once by safetensors) may be absent."""
    own = model.state_dict()
    ptr = {k: (v.untyped_storage().data_ptr(), v.storage_offset()) for k, v in own.items()}
    present = {ptr[k] for k in state if k in ptr}
    missing = [k for k in sorted(set(own) - set(state)) if ptr[k] not in present]
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise HubError(f"{source}: weights do not match a {getattr(model, 'model_type', '?')} model with its config: "
                       f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise HubError(f"{source}: tensor shapes differ from the config's model (name, file, expected): {bad[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))


def _ready(m: Pretrained, device: str | torch.device, dtype: torch.dtype | str | None) -> Pretrained:
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise HubError(f"dtype={dtype!r} is not a torch dtype; accepted e.g. 'float32', 'bfloat16', 'float16'")
        dtype = getattr(torch, dtype)
    m.model.to(device=device, dtype=dtype).eval()
    return m


def load_any(source: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Codec | None, dict[str, Any]]:
    """For zoo-sample: (model, codec, config) from a name, an exported folder or a `.ckpt` path."""
    m = load(source, device=device)
    return m.model, m.codec, m.config
