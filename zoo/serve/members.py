"""What the server knows about each member: which inputs and sampling options it takes (zoo.serve.options),
how a request is checked, how it is generated (alone or batched) and how results become JSON.

This is the one module that talks to the members; everything else in zoo.serve asks an `Adapter`. It is
built on the public API: `zoo.load(...)` (a `Pretrained` whose `.member` validates and generates),
`Pretrained.generate`, `.generation` (the checkpoint's sampling defaults, `guidance` included), `.card`,
and `zoo.members.text.generate_text` for text (batched prompts and the `on_text` stream, which
`Pretrained.generate` does not expose).
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.serve.errors import RequestError, bad_field
from zoo.serve.options import MAX_SEED, Limits, OnText, Option, _b64, _guidance, _num, _sampling  # noqa: F401


# ---- adapters -----------------------------------------------------------------------------------
class Adapter:
    """One loaded model as the server sees it. Subclasses: one per member."""

    member: str = ""
    outputs: tuple[str, ...] = ()
    streams = False

    def __init__(self, m: Any, limits: Limits) -> None:
        self.m, self.limits = m, limits
        self.options: dict[str, Option] = {o.name: o for o in self._options()}

    def _options(self) -> list[Option]:
        raise NotImplementedError

    @property
    def model(self) -> Any:
        return self.m.model

    def describe(self) -> dict[str, Any]:
        card = self.m.card or {}
        p = next(self.model.parameters(), None)
        return {"member": self.member, "model_type": self.m.model_type,
                "codec": getattr(self.m.codec, "type_name", None),
                "parameters": sum(q.numel() for q in self.model.parameters()),
                "device": str(p.device) if p is not None else None,
                "dtype": str(p.dtype).removeprefix("torch.") if p is not None else None,
                "card": {k: card[k] for k in ("metric", "metric_value", "perplexity", "data", "data_license", "steps")
                         if k in card},
                "streams": self.streams, "outputs": list(self.outputs),
                "inputs": {n: o.describe() for n, o in self.options.items() if not o.sampling},
                "options": {n: o.describe() for n, o in self.options.items() if o.sampling}}

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Checked options with defaults filled in; a 422 naming the first bad or unknown field."""
        unknown = sorted(set(body) - set(self.options))
        if unknown:
            raise bad_field(unknown[0], f"not an option of {self.member} models", sorted(self.options))
        opts = {n: o.check(body[n]) if n in body else o.default for n, o in self.options.items()}
        self._check_together(opts)
        return opts

    def _check_together(self, opts: dict[str, Any]) -> None:
        """Checks that need more than one field or the codec (prompt length in tokens, image count)."""

    def batch_key(self, opts: Mapping[str, Any]) -> Hashable | None:
        """Requests with equal keys may run as one batch; None: this one runs alone."""
        return None

    def run(self, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        """Generate for `batch` (one request unless `batch_key` groups them); one result dict per request."""
        return [self._run_one(opts) for opts in batch]

    def _run_one(self, opts: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _sampling_kwargs(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        names = [n for n, o in self.options.items() if o.sampling and n != "guidance"]
        return {n: opts[n] for n in names}  # the defaults are the checkpoint's already (`_sampling`)


class TextAdapter(Adapter):
    member, outputs, streams = "text", ("text",), True

    def _options(self) -> list[Option]:
        block = self.model.max_len
        return [Option(name="prompt", kind="string", default="", max_length=self.limits.max_prompt_chars,
                       sampling=False, help=f"text to continue; at most {block - 1} tokens"),
                Option(name="num_samples", kind="integer", minimum=1, maximum=self.limits.max_num_samples,
                       default=1, sampling=False, help="continuations of the prompt"),
                Option(name="stop", kind="strings", default=[], max_length=self.limits.max_stop, sampling=False,
                       help="strings that end a sample (cut before them)"),
                *_sampling(self.m, max_tokens=self.limits.max_new_tokens)]

    def _check_together(self, opts: dict[str, Any]) -> None:
        room = self.model.max_len - 1  # at least one token is generated inside the context
        try:
            n = len(self.m.codec.encode(opts["prompt"]))
        except ValueError as e:  # characters outside a char vocabulary
            raise bad_field("prompt", str(e), "text in the model's vocabulary", opts["prompt"][:80]) from None
        if n > room:
            raise bad_field("prompt", f"{n} tokens is too long; at most {room} tokens (the model's context "
                            f"is {room + 1})", f"at most {room} tokens", n)
        opts["stop"] = tuple(opts["stop"])

    def batch_key(self, opts: Mapping[str, Any]) -> Hashable | None:
        # One random generator serves a batch, so a seeded sampled request runs alone (its sample must
        # not depend on its neighbours); greedy and unseeded requests with the same options share a batch.
        if opts["seed"] is not None and opts["temperature"] != 0:
            return None
        return tuple((k, v) for k, v in sorted(opts.items()) if k not in ("prompt", "seed"))

    def run(self, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        from zoo.members.text import generate_text

        first = batch[0]
        n = first["num_samples"]
        pairs = generate_text(self.model, self.m.codec, [o["prompt"] for o in batch], num_samples=n,
                              stop=first["stop"], on_text=on_text, **self._sampling_kwargs(first))
        results = []
        for i, opts in enumerate(batch):
            completions = [t for _, t in pairs[i * n:(i + 1) * n]]
            results.append({"prompt": opts["prompt"], "completions": completions,
                            "text": opts["prompt"] + completions[0]})
        return results


class ImageAdapter(Adapter):
    member, outputs = "image", ("png",)

    def _options(self) -> list[Option]:
        names = self.m.codec.class_names or list(range(self.m.codec.num_classes))
        return [Option(name="labels", kind="labels", nullable=True, default=None, sampling=False,
                       max_length=self.limits.max_images,
                       help=f"class ids or names, one grid row each (null = every class): {names}"),
                Option(name="num_samples", kind="integer", minimum=1, maximum=self.limits.max_num_samples,
                       default=4, sampling=False, help="images per label"),
                _guidance(self.m), *_sampling(self.m, max_tokens=None, repetition=False)]

    def _rows(self, opts: Mapping[str, Any]) -> int:
        from zoo.members.image import parse_labels

        try:
            ids = parse_labels(self.m.codec, opts["labels"])
        except ValueError as e:
            raise bad_field("labels", str(e), self.options["labels"].accepted(), opts["labels"]) from None
        return 1 if ids is None else len(ids)

    def _check_together(self, opts: dict[str, Any]) -> None:
        images = self._rows(opts) * opts["num_samples"]
        if images > self.limits.max_images:
            raise bad_field("num_samples", f"{images} images (labels x num_samples) is too many; at most "
                            f"{self.limits.max_images}", f"labels x num_samples <= {self.limits.max_images}",
                            opts["num_samples"])

    def _run_one(self, opts: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            out = Path(tmp) / "grid.png"
            images = self.m.generate(labels=opts["labels"], num_samples=opts["num_samples"], out=out,
                                     guidance=opts["guidance"], **self._sampling_kwargs(opts))
            return {"png": _b64(out), "shape": list(images.shape), "rows": self._rows(opts)}


class CaptionAdapter(Adapter):
    member, outputs = "text2image", ("png",)

    def _options(self) -> list[Option]:
        codec = self.m.codec
        return [Option(name="caption", kind="string", default="", max_length=self.limits.max_prompt_chars,
                       sampling=False, help=f"what to draw, at most {codec.text_len} tokens (\"\" = anything)"),
                Option(name="num_samples", kind="integer", minimum=1,
                       maximum=min(self.limits.max_num_samples, self.limits.max_images), default=8,
                       sampling=False, help="images of the caption"),
                _guidance(self.m), *_sampling(self.m, max_tokens=None, repetition=False)]

    def _check_together(self, opts: dict[str, Any]) -> None:
        codec = self.m.codec
        try:
            n = len(codec.text.encode(opts["caption"]))
        except ValueError as e:
            raise bad_field("caption", str(e), "text in the model's vocabulary", opts["caption"][:80]) from None
        if n > codec.text_len:  # the codec would cut it silently
            raise bad_field("caption", f"{n} tokens is too long; at most {codec.text_len}",
                            f"at most {codec.text_len} tokens", n)

    def _run_one(self, opts: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            out = Path(tmp) / "grid.png"
            images = self.m.generate(opts["caption"], num_samples=opts["num_samples"], out=out,
                                     guidance=opts["guidance"], **self._sampling_kwargs(opts))
            return {"png": _b64(out), "shape": list(images.shape), "rows": 1}


class MusicAdapter(Adapter):
    member, outputs = "music", ("midi", "wav", "piano_roll_png")

    def _options(self) -> list[Option]:
        styles = list(getattr(self.m.codec, "styles", None) or [])
        conditional = [Option(name="style", kind="string", nullable=True, default=None, sampling=False,
                              max_length=64, help=f"the style to play: one of {styles} (null = no style)"),
                       _guidance(self.m)] if styles else []
        return [Option(name="primer", kind="midi", nullable=True, default=None, sampling=False,
                       max_length=self.limits.max_primer_bytes,
                       help="a MIDI file to continue, base64 (null = from the start)"),
                Option(name="audio", kind="boolean", default=True, sampling=False,
                       help="also render a WAV (sine or FluidSynth synthesis)"),
                *conditional, *_sampling(self.m, max_tokens=self.limits.max_music_tokens)]

    def _check_together(self, opts: dict[str, Any]) -> None:
        from zoo.members.music import parse_styles, primer_ids

        if "style" in self.options:
            try:
                parse_styles(self.m.codec, opts["style"])
            except ValueError as e:
                raise bad_field("style", str(e), f"one of {self.m.codec.styles}, or null", opts["style"]) from None
        if opts["primer"] is None:
            return

        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            path = Path(tmp) / "primer.mid"
            path.write_bytes(opts["primer"])
            try:
                primer_ids(self.m.codec, path)
            except ValueError as e:  # the member's message names the problem and what a primer must be
                raise bad_field("primer", str(e), self.options["primer"].accepted(),
                                f"{len(opts['primer'])} bytes") from None

    def _run_one(self, opts: dict[str, Any]) -> dict[str, Any]:
        from zoo.members.music_render import piano_roll_png, render_wav

        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            tmp = Path(tmp)
            primer = None
            if opts["primer"] is not None:
                primer = tmp / "primer.mid"
                primer.write_bytes(opts["primer"])
            styled = {"style": opts["style"], "guidance": opts["guidance"]} if "style" in self.options else {}
            pm = self.m.generate(primer=primer, out=tmp / "sample.mid", **styled, **self._sampling_kwargs(opts))
            result = {"midi": _b64(tmp / "sample.mid"), "seconds": round(pm.get_end_time(), 3),
                      "notes": sum(len(i.notes) for i in pm.instruments),
                      "piano_roll_png": _b64(piano_roll_png(pm, tmp / "roll.png"))}
            if opts["audio"]:
                result["wav"] = _b64(render_wav(pm, tmp / "sample.wav"))
            return result


ADAPTERS: dict[str, type[Adapter]] = {  # codec type -> adapter
    "char": TextAdapter, "byte": TextAdapter, "bpe": TextAdapter,
    "image_patch": ImageAdapter,
    "text_image": CaptionAdapter,
    "midi_performance": MusicAdapter, "jsb_grid": MusicAdapter,
}


def adapter_for(m: Any, limits: Limits) -> Adapter:
    """The adapter for a `Pretrained`, chosen by its codec; ValueError for a model the server cannot serve."""
    kind = getattr(m.codec, "type_name", None)
    if kind not in ADAPTERS:
        raise ValueError(f"{m.name or m.model_type}: no server adapter for codec {kind!r}; known: {sorted(ADAPTERS)}")
    return ADAPTERS[kind](m, limits)


__all__ = ["ADAPTERS", "Adapter", "Limits", "Option", "RequestError", "adapter_for"]
