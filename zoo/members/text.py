"""Text in, text out: prompts are encoded with the model's codec, samples decoded and streamed; the text
renderer of the training callback (`text_samples`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.codecs.base import Codec
from zoo.codecs.text import StreamDecoder
from zoo.members.base import SampleSet, register_renderer
from zoo.models.base import GenerativeModel
from zoo.sampling import SamplingConfig, generate, generate_sliding


def generate_text(model: GenerativeModel, codec: Codec, prompts: Sequence[str], *, num_samples: int = 1,
                  stop: Sequence[str] = (), on_text: Callable[[str], Any] | None = None,
                  **sampling: Any) -> list[tuple[str, str]]:
    """Sample `num_samples` continuations of each prompt; return (prompt, continuation) pairs.

    An empty prompt starts from the codec's end-of-text token when it has one, else from "\\n".
    Stop strings end a sample; the returned text is cut just before the stop string. Longer than
    the model's context, generation slides a window (`zoo.sampling.generate_sliding`).
    `on_text`, for a single row, receives the text as it is generated (streaming).
    """
    rows = [p for p in prompts for _ in range(num_samples)]
    eos = getattr(codec, "eos_id", None)
    ids = [codec.encode(p) if p else ([eos] if eos is not None else codec.encode("\n")) for p in rows]
    cfg = SamplingConfig(**sampling, stop_tokens=(eos,) if eos is not None else ())

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
        t = codec.decode(o)
        for s in stop:
            if s in t:
                t = t[: t.index(s)]
        texts.append((p, t))
    return texts


def text_samples(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path,
                 step: int) -> SampleSet:
    codec: Codec = module.codec
    prompts = list(getattr(datamodule, "sample_prompts", None) or ["\n"])
    room = module.model.max_len
    ids = [codec.encode(p)[-(room // 2):] for p in prompts]  # leave at least half the context to generate
    prompts = [codec.decode(i) for i in ids]
    max_new = min(cfg.max_new_tokens, room - max(len(i) for i in ids))
    rows = generate(module.model, ids, cfg, max_new_tokens=max_new)
    texts = [(p, codec.decode(r)) for p, r in zip(prompts, rows)]
    path = out_dir / f"step_{step:06d}.txt"
    path.write_text("".join(f"=== prompt: {p!r}\n{p}{s}\n\n" for p, s in texts))
    return SampleSet(texts=texts)


register_renderer(("char", "byte", "bpe"), text_samples)
