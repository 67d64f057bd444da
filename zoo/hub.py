"""Pretrained zoo models: a registry of named checkpoints and one loader for every kind of source.

    import zoo
    zoo.list_models()                                   # ['gpt-pydoc', 'image-gpt-digits', ...]
    m = zoo.load("gpt-pydoc")                           # shipped inside the package, sha256-verified
    print(m.generate("The with statement", max_new_tokens=80))
    zoo.load("runs/gpt_pydoc/checkpoints/last.ckpt")    # a zoo-train checkpoint (weights_only=True)
    zoo.load("exports/gpt_pydoc")                       # a folder written by zoo-export
    zoo.load("gpt2", path="~/models/gpt2")              # a Hugging Face GPT-2 folder, converted

`help(zoo.load)` is the user's guide (names, what comes back, how to sample each member, devices,
files and errors). An entry's files live in a folder inside the package (`zoo/hub/<name>/`) or behind
a URL prefix; URL files are downloaded once into `$ZOO_CACHE/hub/<name>/` and every file is checked
against its pinned sha256 before use, so an offline machine runs from the cache. Loading never
unpickles untrusted data: exported weights are safetensors, `.ckpt` files and `pytorch_model.bin` are
read with weights_only=True. To publish a new checkpoint: `zoo-export`, copy the folder to
`zoo/hub/<name>/`, add an `Entry` below with the files' sha256, and a function in hubconf.py
(docs/adding_a_model.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.codecs.base import Codec

log = logging.getLogger(__name__)

HUB_DIR = Path(__file__).resolve().parent / "hub"  # shipped checkpoints (package data)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
EXPORT_FORMAT = "zoo-export"


class HubError(ValueError):
    """A pretrained model cannot be found, verified or read; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    """A registered pretrained checkpoint.

    location: a folder relative to `zoo/hub/` (shipped in the package) or an http(s):// / file:// URL
    prefix; `files` maps each file of the exported folder to its sha256. `card` summarises the model
    card of the folder's config.json / README.md (data, data_license, steps, hardware, train_command,
    metric, metric_value); the metric is re-measured by `zoo.export.measure_loss(zoo.load(name))`.
    `summary` is the one line `help(zoo.load)` shows for it.
    """

    name: str
    model_type: str
    location: str
    files: dict[str, str]
    card: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def is_url(self) -> bool:
        return "://" in self.location

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
            "README.md": "b0ec537e2b00a43b8248059d9cb73702fa8447223941c638393b8b7752693340",
            "codec.json": "9a813a40bec2bac84cb336e4678954ac6fec6fc35b7cf11f3480e60e102a3e62",
            "config.json": "fb10c3d983016c0b7525959735275a90bb0efe708057d0329aa0b3ced795e62e",
            "generation_config.json": "34fa0ab8b76b7ff37041b36fd9c1a7174608f0fe90b02349a548cae6469e1c4e",
            "model.safetensors": "81416c47e9ab9dff7077a1b845db009469c632103c1a9949a61161b6304779be",
        },
        card={
            "data": "pydoc",
            "data_license": "Python Software Foundation License 2.0 (Python's documentation, module "
                            "pydoc_data.topics)",
            "steps": 600,
            "hardware": "CPU, 2 threads of a shared 2-core x86_64 VM, 19 min wall (about 5 min unshared)",
            "train_command": "zoo-train experiment=gpt_pydoc threads=2",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.6419,
        },
    ),
    Entry(
        name="image-gpt-digits",
        summary="class-conditional patch image GPT (0.47 M) on 8x8 digits, 17 grey levels",
        model_type="image_gpt",
        location="image-gpt-digits",
        files={
            "README.md": "b00f9ea3cf19c9194604e22c027b66b5babab7e47e59a31d89f1240556e6066f",
            "codec.json": "8dbbbedcafd4335014b875d987c412a345e5efaac72b54d305b2a0d2d282ddea",
            "config.json": "45fd42ee80025184ba31f03a071de8a2f0edd3fee0c6ee19806f41c60669dbda",
            "generation_config.json": "383b07d995810b5ccb3965d0ec4c98f5a3f6079aee8896ce9caa94495d9cf313",
            "model.safetensors": "4e1cc043362693fc8bcd6c747e9caa42c5b701c85e265f254c187dc8ef485b9d",
            "samples.png": "02b6902fc1af2045e5a1d6ce7ad8646d4a81dbaf0afe0a39105fff5c8ca4fc38",
        },
        card={
            "data": "digits",
            "data_license": "CC BY 4.0 (UCI ML hand-written digits, as shipped by scikit-learn)",
            "steps": 800,
            "hardware": "CPU, 2 threads of a shared 2-core x86_64 VM, 11 min wall",
            "train_command": "zoo-train experiment=image_gpt_digits threads=2",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.1779,
        },
    ),
    Entry(
        name="music-transformer-bach",
        summary="Music Transformer, relative attention (0.97 M) on Bach chorales (MIDI events)",
        model_type="music_transformer",
        location="music-transformer-bach",
        files={
            "README.md": "a53fb66cd8735d67fdd3076c7df18691c738925a7aa6c6b91247df4e35322f94",
            "codec.json": "4b828a5b3031156304813ed274e6cf9c2e3cbaa654c2a6faa9161c0950d00481",
            "config.json": "675346b32f3ab236c9d7db203d9b861a6f995224194e45e5676b212d1524d364",
            "generation_config.json": "aea8d3d1c960bf6a6e42cbd25076c6c5f4891b635f9c50708dae62936fafabad",
            "model.safetensors": "3e7f62929aba6dad9611e430d3c3a9e189fc7d2fd189ef27586be11026ec7d2f",
            "pianoroll.png": "88f7a8a783823922f255a9e37ccd4666ac11ef84eff7fe859df60bb9e59c5637",
        },
        card={
            "data": "bach_chorales",
            "data_license": "music21 corpus (BSD-3-Clause); the chorales themselves are public domain",
            "steps": 300,
            "hardware": "CPU, 1 thread of a shared 2-core x86_64 VM, 3 min wall",
            "train_command": "zoo-train experiment=music_transformer_bach",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 1.4944,
        },
    ),
    Entry(
        name="text2image-digits",
        summary='text-to-image decoder (0.40 M): "a 3 on the left and a 7 on the right" -> 8x16',
        model_type="text2image",
        location="text2image-digits",
        files={
            "README.md": "7edaa21ee230604fb972b2f35c6da0e500401bf28e128b6ea49f7fe5a0833361",
            "codec.json": "2ec4eafe9c2991e9b96521e02e168395229068a54087eba9bdd3ddf35cd7cab7",
            "config.json": "49c112295048c7324b3ba42dec575f3b9d094794325a34b4d822f49868ab7380",
            "generation_config.json": "263922bb6c1d00b3493245cc6147c7398f0513b68497f82552cfaf430e5d1093",
            "model.safetensors": "3fc097b04b97598487d2584be8ec034c0fde840422a03ccb6dcef1d11d768bb1",
            "samples.png": "09d004c7e1fea8de000534e6312e5852dcbe1e188fc74ad56dc73e419e18e3cd",
        },
        card={
            "data": "captioned_digits",
            "data_license": "CC BY 4.0 (UCI ML hand-written digits, as shipped by scikit-learn); captions generated",
            "steps": 1500,
            "hardware": "CPU, 2 threads of a shared 2-core x86_64 VM, 7 min wall",
            "train_command": "zoo-train experiment=text2image_digits",
            "metric": "val loss (nats/token, validation split of the training data)",
            "metric_value": 0.8935,
        },
    ),
)}


def list_models() -> list[str]:
    """Names accepted by `load`, registered pretrained checkpoints first, then "gpt2" (needs path=)."""
    return sorted(REGISTRY) + ["gpt2"]


def describe_models() -> str:
    """One line per name `load` accepts: summary and re-measured validation loss (generated from REGISTRY)."""
    lines = []
    for name in sorted(REGISTRY):
        e = REGISTRY[name]
        metric = e.card.get("metric_value")
        lines.append(f"{name:<24}{e.summary or e.model_type}" + (f"; val {metric:.3f} nats/token" if metric else ""))
    lines.append(f"{'gpt2':<24}a Hugging Face GPT-2 folder you already have (path=...), converted; no download")
    return "\n".join(lines)


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

    def sampling_options(self, **overrides: Any) -> dict[str, Any]:
        from zoo.sampling import SamplingConfig

        accepted = {f.name for f in dataclasses.fields(SamplingConfig)} - {"stop_tokens"}
        opts = {k: v for k, v in self.generation.items() if k in accepted} | overrides
        unknown = sorted(set(opts) - accepted)
        if unknown:
            raise TypeError(f"unknown sampling option(s) {unknown}; accepted: {sorted(accepted)}")
        return opts

    def generate(self, prompt: Any = None, **options: Any) -> Any:
        """Sample from the model; what `prompt` means and what comes back depend on the member.

        Keyword options common to every member override the checkpoint's defaults (`.generation`):
        max_new_tokens, temperature (0 = greedy), top_k, top_p, min_p, repetition_penalty, seed
        (`zoo.sampling.SamplingConfig`); an unknown option raises TypeError listing the accepted ones.

        text (gpt-pydoc, gpt2):
            generate(prompt="", *, num_samples=1, stop=(), **options) -> str
            prompt + continuation; a list of num_samples strings when num_samples > 1. `stop`: strings
            that end a sample. The default max_new_tokens fits the context; longer slides a window.
        image (image-gpt-digits):
            generate(labels=None, *, num_samples=1, guidance=None, out=None, **options) -> Tensor
            float images in [0, 1], (len(labels) * num_samples, C, H, W), num_samples per label;
            labels: class ids or names (None = every class); guidance: classifier-free guidance scale
            (1 = none, 2 gives class-typical digits; None = the checkpoint's default, see .generation);
            out: a PNG grid, one row per label.
        captions (text2image-digits):
            generate(captions, *, num_samples=1, guidance=None, out=None, **options) -> Tensor
            float images in [0, 1], (len(captions) * num_samples, C, H, W); a caption string or a list;
            "" or None is the unconditional prompt; guidance as for images; out: a PNG grid, one row per
            caption.
        music (music-transformer-bach):
            generate(primer=None, *, out=None, **options) -> pretty_midi.PrettyMIDI
            primer: a .mid file to continue (None = from the start); out: writes a .mid file. Longer
            than the context, a window slides. Audio and pictures: zoo.music_render.render_wav(pm,
            "x.wav") and zoo.music_render.piano_roll_png(pm, "x.png").
        """
        kind = getattr(self.codec, "type_name", None)
        if kind in ("char", "byte", "bpe"):
            return self._generate_text(prompt or "", **options)
        if kind == "image_patch":  # the "prompt" of an image model is its class label(s)
            return self._generate_images(options.pop("labels", prompt), **options)
        if kind in ("midi_performance", "jsb_grid"):  # ... and of a music model a primer MIDI file
            return self._generate_music(options.pop("primer", prompt), **options)
        if kind == "text_image":  # ... and of a text-to-image model its caption(s)
            return self._generate_captioned(prompt, **options)
        raise HubError(f"no generate() for codec {kind!r}; use .model and zoo.sampling.generate directly")

    def _generate_text(self, prompt: str, num_samples: int = 1, stop: tuple[str, ...] = (), **options: Any) -> Any:
        from zoo.text_generation import generate_text

        opts = self.sampling_options(**options)
        block = getattr(getattr(self.model, "config", None), "block_size", None)
        if "max_new_tokens" not in options and block is not None and "max_new_tokens" in opts:
            # the default must fit the context whatever the prompt; an explicit value is checked by sampling
            opts["max_new_tokens"] = max(0, min(opts["max_new_tokens"], block - max(1, len(self.codec.encode(prompt)))))
        texts = generate_text(self.model, self.codec, [prompt], num_samples=num_samples, stop=stop, **opts)
        out = [p + t for p, t in texts]
        return out[0] if num_samples == 1 else out

    def _generate_images(self, labels: Any = None, num_samples: int = 1, out: str | Path | None = None,
                         guidance: float | None = None, **options: Any) -> torch.Tensor:
        from zoo.image_samples import parse_labels, sample_tokens
        from zoo.sampling import SamplingConfig

        ids = parse_labels(self.codec, labels)  # None: every class (conditional) or no class
        opts = self.sampling_options(**options)
        if guidance is not None:
            opts["guidance_scale"] = None if float(guidance) == 1.0 else float(guidance)
        rows = ids.repeat_interleave(num_samples) if ids is not None else None
        tokens = sample_tokens(self.model, self.codec, rows, num=num_samples, cfg=SamplingConfig(**opts))
        images = self.codec.decode_batch(tokens.cpu())
        if out is not None:
            from zoo.image_io import save_grid_png
            from zoo.image_samples import PADDING

            save_grid_png(images, Path(out), nrow=num_samples, padding=PADDING)
        return images

    def _generate_captioned(self, captions: str | list[str] | None = None, num_samples: int = 1,
                            out: str | Path | None = None, guidance: float | None = None,
                            **options: Any) -> torch.Tensor:
        """Images (len(captions)·num_samples, C, H, W) for caption(s); "" or None = unconditional."""
        from zoo.image_io import save_grid_png
        from zoo.image_samples import PADDING
        from zoo.sampling import SamplingConfig
        from zoo.text2image_samples import sample_images

        captions = [captions or ""] if captions is None or isinstance(captions, str) else list(captions)
        rows = [c for c in captions for _ in range(num_samples)]
        if guidance is not None:  # else the checkpoint's generation default
            options["guidance_scale"] = None if float(guidance) == 1.0 else float(guidance)
        cfg = SamplingConfig(**self.sampling_options(**options))
        images = self.codec.decode_batch(sample_images(self.model, self.codec, rows, cfg).cpu())
        if out is not None:
            save_grid_png(images, Path(out), nrow=num_samples, padding=PADDING)
        return images

    def _generate_music(self, primer: str | Path | None = None, out: str | Path | None = None,
                        **options: Any) -> Any:
        from zoo.music_samples import ids_to_midi, primer_ids, window_alignment
        from zoo.sampling import SamplingConfig, generate_sliding

        prompt = primer_ids(self.codec, primer) if primer is not None else [self.codec.bos_id]
        cfg = SamplingConfig(**self.sampling_options(**options), stop_tokens=(self.codec.eos_id,))
        ids = generate_sliding(self.model, [prompt], cfg, align=window_alignment(self.codec))[0]
        pm = ids_to_midi(self.codec, prompt + ids)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            pm.write(str(out))
        return pm


# ---- loading ------------------------------------------------------------------------------------
def load(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
         path: str | Path | None = None) -> Pretrained:
    """Load a pretrained zoo model, ready to sample: `m = zoo.load(name_or_path); m.generate(...)`.

    Names (`zoo.list_models()`):
      {registry}

    name_or_path may also be
      * a zoo-train checkpoint, e.g. "runs/gpt_pydoc/checkpoints/last.ckpt" (read with weights_only=True);
      * a folder written by zoo-export (model.safetensors, config.json, codec.json, generation_config.json);
      * a Hugging Face GPT-2 folder (config.json with model_type "gpt2", model.safetensors or
        pytorch_model.bin, vocab.json + merges.txt), or "gpt2" with path=FOLDER: converted to zoo's GPT
        and a byte-level BPE codec, logits equal to transformers' GPT2LMHeadModel. Nothing is downloaded.
    `path` also points a registered name at your own copy of its files (still sha256-verified).

    Returns a `zoo.hub.Pretrained`: `.model` (nn.Module in eval mode on `device`), `.codec`,
    `.generation` (sampling defaults), `.config`, `.card` (model card), `.generate(...)`, and
    `m(idx)` -> logits (B, T, V).

    Sampling each member (options: max_new_tokens, temperature, top_k, top_p, min_p,
    repetition_penalty, seed; details in help(zoo.hub.Pretrained.generate)):
      text      zoo.load("gpt-pydoc").generate("The with statement", max_new_tokens=80, top_k=40) -> str
                (num_samples=4 -> list[str]; stop=("\\n\\n",) ends a sample at a blank line)
      image     zoo.load("image-gpt-digits").generate(labels=[3, 7], num_samples=8, guidance=2.0,
                out="digits.png") -> Tensor (16, 1, 8, 8) in [0, 1]; labels=None: every class
      captions  zoo.load("text2image-digits").generate(["a 3 on the left and a 7 on the right"],
                num_samples=8, guidance=3.0, out="grid.png") -> Tensor (8, 1, 8, 16); "" = unconditional
                (guidance: 1 = none; left out, the checkpoint's default in m.generation)
      music     zoo.load("music-transformer-bach").generate(max_new_tokens=512, out="bach.mid")
                -> pretty_midi.PrettyMIDI; primer="song.mid" continues a file

    Devices and dtype: `device` is "cpu" (default), "cuda", "cuda:1" or a torch.device; `dtype=None`
    gives float32 (the shipped float16 weights are upcast: half precision is slow on CPU);
    torch.bfloat16 or "bfloat16" casts. `m.to(device, dtype)` moves it later.

    Files and cache: shipped names are read from the installed package (zoo/hub/<name>/); an entry
    with a URL location downloads once into $ZOO_CACHE/hub/<name>/ ($ZOO_CACHE defaults to
    ~/.cache/zoo) and then works offline. Every registered file is checked against its pinned sha256.

    Errors (all subclasses of ValueError, each message says what to do):
      HubError        unknown name (lists the registered ones), missing file, a folder that is not an
                      export, weights that do not fit the config, "gpt2" without path=, a bad dtype
      ChecksumError   (zoo.data.download) a file's sha256 differs from the pinned one: truncated,
                      corrupt or another checkpoint; delete it and load again, or reinstall zoo
      CheckpointError (zoo.checkpoint) a .ckpt that is empty, truncated or not a zoo checkpoint; a
                      pickle that would run code is refused (HubError for GPT-2 .bin files)
    """
    name = str(name_or_path)
    if name in REGISTRY:
        entry = REGISTRY[name]
        folder = resolve_entry(entry, path)
        m = load_export(folder, device=device, dtype=dtype)
        m.name, m.card = entry.name, {**m.card, **entry.card}
        return m
    if name == "gpt2" or name.startswith("gpt2-"):
        if path is None:
            raise HubError("zoo does not download GPT-2 weights; pass path= to a Hugging Face GPT-2 folder "
                           "(config.json, model.safetensors or pytorch_model.bin, vocab.json, merges.txt)")
        return _ready(_gpt2_pretrained(Path(path).expanduser(), name), device, dtype)
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


def _gpt2_pretrained(path: Path, name: str) -> Pretrained:
    model, codec = load_gpt2(path)
    config = {"model_type": "gpt", "model_config": dataclasses.asdict(model.config)}
    return Pretrained(model, codec, {"temperature": 0.8, "top_k": 40}, config=config, name=name)


def _is_hf_gpt2(config_path: Path) -> bool:
    try:
        return json.loads(config_path.read_text()).get("model_type") == "gpt2"
    except (json.JSONDecodeError, AttributeError):
        return False


def resolve_entry(entry: Entry, path: str | Path | None = None) -> Path:
    """The verified local folder of `entry`: `path`, the package folder, or the download cache."""
    from zoo.data.download import ChecksumError, cache_root, download, file_sha256

    if path is not None:
        folder = Path(path).expanduser()
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
        if actual != sha:
            raise ChecksumError(f"{entry.name}: {f} has sha256 {actual}, expected {sha}: the file is truncated, "
                                f"corrupt or not this checkpoint. Delete it and load again (URL entries are "
                                f"downloaded anew), or reinstall zoo for files shipped in the package.")
    return folder


def load_export(folder: str | Path, device: str | torch.device = "cpu",
                dtype: torch.dtype | str | None = None) -> Pretrained:
    """Rebuild a model from a folder written by `zoo.export.export` (safetensors, no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from zoo.codecs.base import CODEC_FILE, load_codec
    from zoo.models.base import build_model

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
    codec = load_codec(folder) if (folder / CODEC_FILE).is_file() else None
    gen_path = folder / GENERATION_FILE
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    return _ready(Pretrained(model, codec, generation, config=config, name=config.get("name"),
                             card=config.get("card", {})), device, dtype)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> Pretrained:
    """A zoo-train `.ckpt` (read with weights_only=True; a pickle that would run code is refused)."""
    from zoo.checkpoint import model_from_checkpoint
    from zoo.export import generation_defaults

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


def load_gpt2(path: str | Path) -> tuple[torch.nn.Module, Codec | None]:
    """Convert a Hugging Face GPT-2 folder (or a weights file inside one) into zoo's GPT and BPE codec.

    Reads config.json, then model.safetensors or pytorch_model.bin (torch.load with weights_only=True,
    so a pickle that would run code is refused), and vocab.json + merges.txt when present (codec None
    otherwise). The model's logits equal `GPT2LMHeadModel`'s (tests/test_hub.py).
    """
    from zoo.codecs.text import BPECodec
    from zoo.models.gpt import GPT

    p = Path(path).expanduser()
    folder, weights = (p, None) if p.is_dir() else (p.parent, p)
    if not (folder / CONFIG_FILE).is_file():
        raise HubError(f"no config.json in {folder}; expected a Hugging Face GPT-2 folder (save_pretrained output)")
    hf = json.loads((folder / CONFIG_FILE).read_text())
    if hf.get("model_type") != "gpt2":
        raise HubError(f"{folder / CONFIG_FILE} describes model_type={hf.get('model_type')!r}; only 'gpt2' converts")
    if weights is None:
        candidates = [folder / "model.safetensors", folder / "pytorch_model.bin"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise HubError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin "
                           "(sharded checkpoints are not supported)")
    state = _read_weights(weights)
    model = GPT(GPT.from_hf_config(hf))
    model.load_hf_state_dict(state)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    codec = None
    if vocab.is_file() and merges.is_file():
        eos = "<|endoftext|>" if "<|endoftext|>" in json.loads(vocab.read_text()) else None
        codec = BPECodec.from_gpt2_files(vocab, merges, eos_token=eos)
    else:
        log.warning("%s has no vocab.json + merges.txt: loaded the GPT-2 weights without a tokenizer", folder)
    return model.eval(), codec


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch pickle, never running pickled code."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        from zoo.checkpoint_io import unpickler_reason

        reason = unpickler_reason(str(e))
        if "GLOBAL " not in reason:
            raise HubError(f"cannot read {path}: the file is truncated or corrupt ({reason})") from e
        raise HubError(f"refused to load {path}: it holds objects other than tensors and plain data, which "
                       f"could run code when unpickled ({reason})") from e
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise HubError(f"cannot read {path}: the file is truncated or corrupt ({e})") from e


def load_any(source: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Codec | None, dict[str, Any]]:
    """For zoo-sample: (model, codec, config) from a name, an exported folder or a `.ckpt` path."""
    m = load(source, device=device)
    return m.model, m.codec, m.config
