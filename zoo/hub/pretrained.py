"""What `zoo.load` returns: `Pretrained`, a model ready to sample, with its codec, sampling defaults, config
and model card; and the sampling defaults a checkpoint carries (generation_config.json, or a zoo-train
run's `samples` section), read under today's option names."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from zoo.codecs.base import Codec
from zoo.members import Member, Samples, member_for
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


@dataclass
class Pretrained:
    """A model ready to sample, as returned by `zoo.load`.

    Attributes: `model` (the `nn.Module`, eval mode), `codec` (tokens <-> text / images / MIDI; None
    for a GPT-2 folder without vocab files), `generation` (the checkpoint's sampling defaults, from
    generation_config.json), `config` (model type, model config and, for zoo runs, the resolved
    training config), `name` and `card` (the model card: data, licence, steps, hardware, metric), and
    `quantize` (None, "int8" or "int4": how zoo.load stored the Linear weights, zoo.core.quant).
    `m(idx, cond=None)` gives logits (B, T, V) for token ids (B, T) without gradients;
    `m.to(device, dtype)` moves it; `m.generate(...)` samples (see its help).
    """

    model: torch.nn.Module
    codec: Codec | None
    generation: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    card: dict[str, Any] = field(default_factory=dict)
    drafts: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)  # draft= models, loaded once
    quantize: str | None = None  # weight-only quantisation applied by zoo.load (zoo.core.quant), None = float

    @property
    def model_type(self) -> str:
        return getattr(self.model, "model_type", type(self.model).__name__)

    def __repr__(self) -> str:  # one line: the dataclass default would print the module tree and configs
        p = next(self.model.parameters(), None)
        n = sum(q.numel() for q in self.model.parameters())
        where = f", device={p.device}, dtype={str(p.dtype).removeprefix('torch.')}" if p is not None else ""
        codec = getattr(self.codec, "type_name", None)
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return (f"Pretrained(name={self.name!r}, model_type={self.model_type!r}, params={n:,}, codec={codec!r}"
                f"{where}{quant})")

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Pretrained:
        self.model.to(device=device, dtype=dtype)
        return self

    def __call__(self, idx: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T)."""
        with torch.no_grad():
            return self.model(idx, cond=cond)

    def draft_model(self, source: str) -> torch.nn.Module:
        """The draft model for speculative decoding (`draft=SOURCE`: anything `zoo.load` accepts), loaded once
        onto this model's device and dtype. Refused when its codec differs from this model's."""
        p = next(self.model.parameters())
        if source not in self.drafts:
            from zoo.hub.loading import load  # loading imports this module

            d = load(source, device=p.device, dtype=p.dtype)
            ours, theirs = (None if c is None else c.to_dict() for c in (self.codec, d.codec))
            if ours != theirs:
                raise ValueError(f"draft={source!r} has another codec than {self.name or 'this model'} "
                                 f"({getattr(d.codec, 'type_name', None)!r}, {getattr(d.codec, 'vocab_size', None)} "
                                 f"tokens vs {getattr(self.codec, 'type_name', None)!r}, "
                                 f"{getattr(self.codec, 'vocab_size', None)}): a draft must share the codec")
            self.drafts[source] = d.model
        return self.drafts[source].to(p.device, p.dtype)  # follows this model when `.to` moved it

    @property
    def member(self) -> Member:
        """The member (`zoo.members`) that samples this model: asked by its codec, else its model type."""
        return member_for(self.codec, model_type=self.model_type)

    def generate(self, prompt: Any = None, **options: Any) -> Any:
        """Sample from the model; what `prompt` means and what comes back depend on the member.

        Sampling options (`zoo.sampling.SamplingConfig`) override the checkpoint's defaults
        (`.generation`): max_new_tokens, temperature (0 = greedy), top_k, top_p, min_p,
        repetition_penalty, guidance (classifier-free guidance scale; 1 = none), stop, num_samples,
        seed, use_cache, compile, draft (speculative decoding: "ngram" or a smaller model with the same
        codec, e.g. draft="gpt-pydoc-draft"; text and music), draft_tokens. Each member honours the
        options that make sense for it; any other option, or an unknown one, raises ValueError naming it
        and the accepted ones.

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
        return self.sample(options).value

    def sample(self, options: dict[str, Any], *, explicit: Collection[str] | None = None,
               on_text: Callable[[str], Any] | None = None) -> Samples:
        """`Member.sample` over the checkpoint's sampling defaults (`.generation`): how `generate`, zoo-sample
        and zoo-serve all sample, so that one seed gives one sample whichever is asked."""
        member = self.member
        base = SamplingConfig.from_options({k: v for k, v in self.generation.items() if k in member.sampling})
        draft = options.get("draft", base.draft)
        if isinstance(draft, str) and draft != "ngram":  # a model: loaded here, where zoo.load lives
            base = replace(base, draft_model=self.draft_model(draft))
        return member.sample(self.model, self.codec, options, base=base, explicit=explicit, on_text=on_text)
