"""The text member: prompts are encoded with the model's codec, samples decoded and streamed (`TextMember`,
`generate_text`); the training callback's text renderer (`text_samples`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from zoo.codecs.base import Codec
from zoo.codecs.text import StreamDecoder
from zoo.members.base import Member, Samples, SampleSet, register_member
from zoo.members.serving import Limits, OnText, Option, OptionError, sampling_options
from zoo.models.base import GenerativeModel
from zoo.sampling import OPTIONS, SamplingConfig, generate, generate_sliding


def generate_text(model: GenerativeModel, codec: Codec, prompts: Sequence[str], cfg: SamplingConfig | None = None, *,
                  on_text: Callable[[str], Any] | None = None, **overrides: Any) -> list[tuple[str, str]]:
    """Sample `cfg.num_samples` continuations of each prompt; return (prompt, continuation) pairs.

    An empty prompt starts from the codec's end-of-text token when it has one, else from "\\n".
    Stop strings end a sample; the returned text is cut just before the stop string. Longer than
    the model's context, generation slides a window (`zoo.sampling.generate_sliding`).
    `on_text`, for a single row, receives the text as it is generated (streaming).
    """
    eos = getattr(codec, "eos_id", None)
    cfg = replace(cfg or SamplingConfig(), **overrides, stop_tokens=(eos,) if eos is not None else ())
    stop = cfg.stop
    rows = [p for p in prompts for _ in range(cfg.num_samples)]
    ids = [codec.encode(p) if p else ([eos] if eos is not None else codec.encode("\n")) for p in rows]

    def should_stop(r: int, out: list[int]) -> bool:
        return bool(stop) and any(s in codec.decode(out[-64:]) for s in stop)

    stream = StreamDecoder(codec) if on_text is not None else None

    def on_token(step: int, tokens: Any) -> None:
        tok = int(tokens[0])
        if tok >= 0 and tok != eos:
            on_text(stream.push(tok))

    if any(len(i) + cfg.max_new_tokens > model.max_len for i in ids):
        # Past the context: slide a window (stop strings are then applied to the finished text).
        out = generate_sliding(model, ids, cfg, on_token=on_token if stream else None)
    else:
        out = generate(model, ids, cfg, on_token=on_token if stream else None,
                       should_stop=should_stop if stop else None)
    if stream is not None:
        on_text(stream.flush())
    texts = []
    for p, o in zip(rows, out):
        if eos is not None and o and o[-1] == eos:
            o = o[:-1]
        texts.append((p, cut_at_stop(codec.decode(o), stop)))
    return texts


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the first of the stop strings it contains."""
    return text[:min((text.index(s) for s in stop if s in text), default=len(text))]


def text_samples(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path,
                 step: int) -> SampleSet:
    codec: Codec = module.codec
    prompts = list(getattr(datamodule, "sample_prompts", None) or ["\n"])
    room = module.model.max_len
    ids = [codec.encode(p)[-(room // 2):] for p in prompts]  # leave at least half the context to generate
    prompts = [codec.decode(i) for i in ids]
    max_new = min(cfg.max_new_tokens, room - max(len(i) for i in ids))
    rows = generate(module.model, ids, cfg, max_new_tokens=max_new)
    texts = [(p, cut_at_stop(codec.decode(r), cfg.stop)) for p, r in zip(prompts, rows)]
    path = out_dir / f"step_{step:06d}.txt"
    path.write_text("".join(f"=== prompt: {p!r}\n{p}{s}\n\n" for p, s in texts))
    return SampleSet(texts=texts)


class TextMember(Member):
    """Text models: `prompt` (or a batch, `prompts`) -> continuations; streamed to `on_text` when `stream`
    is set and a single sample is drawn. Value: prompt + continuation, a list when several are drawn."""

    name = "text"
    codec_types = ("char", "byte", "bpe")
    model_types = ("gpt",)
    inputs = {"prompt": None, "prompts": [], "stream": False}
    primary = "prompt"
    sampling = frozenset(OPTIONS) - {"guidance"}
    rejected = {"guidance": "classifier-free guidance needs a conditional model and text models have no condition"}
    outputs, streams = ("text",), True

    def sample(self, model: Any, codec: Any, options: Mapping[str, Any], *, base: SamplingConfig | None = None,
               explicit: Any = None, on_text: Callable[[str], Any] | None = None) -> Samples:
        inputs, cfg = self.parse(options, base=base, explicit=explicit)
        block = getattr(getattr(model, "config", None), "block_size", None)
        if base is not None and "max_new_tokens" not in options and block is not None:
            # a checkpoint's default length must fit the context whatever the prompt; an explicit one may slide
            longest = max(1, *(len(codec.encode(p)) for p in self._prompts(inputs)))
            cfg = replace(cfg, max_new_tokens=max(0, min(cfg.max_new_tokens, block - longest)))
        return self.generate(model, codec, inputs, cfg, on_text=on_text)

    @staticmethod
    def _prompts(inputs: dict[str, Any]) -> list[str]:
        prompts = list(inputs["prompts"] or [])
        if inputs["prompt"] is not None:
            prompts.append(str(inputs["prompt"]))
        return prompts or [""]

    def generate(self, model: Any, codec: Any, inputs: dict[str, Any], sampling: SamplingConfig, *,
                 on_text: Callable[[str], Any] | None = None) -> Samples:
        prompts = self._prompts(inputs)
        stream = on_text is not None and inputs["stream"] and len(prompts) == 1 and sampling.num_samples == 1
        if stream:
            on_text(prompts[0])  # the prompt, then the continuation as it is generated
        texts = generate_text(model, codec, prompts, sampling, on_text=on_text if stream else None)
        full = [p + t for p, t in texts]
        lines = [""] if stream else [f"=== sample {i} (prompt {p!r})\n{p}{t}\n" for i, (p, t) in enumerate(texts)]
        return Samples(full[0] if len(full) == 1 else full, lines=lines)

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        return text_samples(module, datamodule, sampling, out_dir, step)

    # ---- zoo-serve: one prompt per request; requests with the same options share one batched call ----
    def request_options(self, m: Any, limits: Limits) -> list[Option]:
        block = m.model.max_len
        return [Option(name="prompt", kind="string", default="", max_length=limits.max_prompt_chars,
                       sampling=False, help=f"text to continue; at most {block - 1} tokens"),
                Option(name="num_samples", kind="integer", minimum=1, maximum=limits.max_num_samples,
                       default=1, sampling=False, help="continuations of the prompt"),
                Option(name="stop", kind="strings", default=[], max_length=limits.max_stop, sampling=False,
                       help="strings that end a sample (cut before them)"),
                *sampling_options(m, max_tokens=limits.max_new_tokens)]

    def check_request(self, m: Any, opts: dict[str, Any], limits: Limits) -> None:
        room = m.model.max_len - 1  # at least one token is generated inside the context
        try:
            n = len(m.codec.encode(opts["prompt"]))
        except ValueError as e:  # characters outside a char vocabulary
            raise OptionError("prompt", str(e), "text in the model's vocabulary", opts["prompt"][:80]) from None
        if n > room:
            raise OptionError("prompt", f"{n} tokens is too long; at most {room} tokens (the model's context "
                              f"is {room + 1})", f"at most {room} tokens", n)
        opts["stop"] = tuple(opts["stop"])

    def batch_key(self, opts: Mapping[str, Any]) -> Hashable | None:
        # One random generator serves a batch, so a seeded sampled request runs alone (its sample must
        # not depend on its neighbours); greedy and unseeded requests with the same options share a batch.
        if opts["seed"] is not None and opts["temperature"] != 0:
            return None
        return tuple((k, v) for k, v in sorted(opts.items()) if k not in ("prompt", "seed"))

    def serve(self, m: Any, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        first = batch[0]
        n = first["num_samples"]
        sampling = {k: v for k, v in first.items() if k in OPTIONS and k not in ("num_samples", "stop")}
        pairs = generate_text(m.model, m.codec, [o["prompt"] for o in batch], num_samples=n, stop=first["stop"],
                              on_text=on_text, **sampling)
        results = []
        for i, opts in enumerate(batch):
            completions = [t for _, t in pairs[i * n:(i + 1) * n]]
            results.append({"prompt": opts["prompt"], "completions": completions,
                            "text": opts["prompt"] + completions[0]})
        return results


register_member(TextMember)
