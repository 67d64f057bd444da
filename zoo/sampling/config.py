"""`SamplingConfig`: every sampling option, one name each, validated once (CLI, training config, Python)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(kw_only=True)
class SamplingConfig:
    """Every sampling option, the one schema for zoo-sample, training's `samples:` section and Python.

    `guidance` is the classifier-free guidance scale (logits = u + guidance · (c − u)); None and 1 both
    mean "off" (u + 1·(c − u) = c), normalised to None here and nowhere else. `stop` (strings) and
    `num_samples` are applied by the members (`zoo.members`), not by `generate`, which sees token ids:
    its stop rule is `stop_tokens`, set by a member (its codec's EOS), never a user option.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0  # CTRL (Keskar et al. 2019): >1 discourages tokens already present
    guidance: float | None = None  # classifier-free guidance; needs a conditional model; None or 1 = off
    stop: tuple[str, ...] = ()  # stop strings (text members): a sample ends before the first one
    num_samples: int = 1  # samples per prompt / label / caption / primer (members)
    seed: int | None = None
    use_cache: bool = True
    # Decode through a torch.compile'd fixed-shape step (`decode_step_static`: gpt and music_transformer, the
    # relative bias included; image_gpt and text2image, their global and local steps compiled apart; other models
    # raise). Compiling takes seconds to a minute once per batch size and cache length (rounded up to
    # COMPILE_LENGTH_STEP positions; the cache then attends over that many masked slots). Greedy tokens equal the
    # default path's (tested), sampled ones up to floating-point rounding. On CPU it gained ~5% over the default for
    # a GPT whose tokens are dominated by the matrix products (benchmarks/gpt_cpu.md); it pays off where per-token
    # dispatch dominates: medians 1.4-1.7x at batch 1 for gpt-pydoc, music-transformer-bach and image-gpt-digits
    # (1.1x text2image-digits), 0.9-1.2x at batch 8 (shared 2-core CPU, wide spreads: decode_overhead_rounds-7.md).
    compile: bool = False
    # Speculative decoding (zoo/sampling/speculative.py): a cheap drafter proposes `draft_tokens` tokens, the
    # model checks them in one pass; greedy tokens equal plain decoding's, samples follow the same distribution.
    # "ngram" drafts by prompt lookup (the tokens that followed the last match of the context's tail); any
    # other value names a draft model with the same codec (what zoo.load accepts), which `zoo.load`'s
    # Pretrained loads into `draft_model` (zoo.sampling sits below zoo.hub and loads nothing itself).
    draft: str | None = None
    draft_tokens: int = 4  # tokens proposed per model pass (benchmarks/speculative.md chose it)
    draft_model: Any = None  # the loaded draft (a GenerativeModel); set by its loader, not one of OPTIONS
    stop_tokens: tuple[int, ...] = ()  # set by members (the codec's EOS); not one of OPTIONS

    def __post_init__(self) -> None:
        if self.guidance is not None:
            self.guidance = float(self.guidance)
            if self.guidance == 1.0:  # the one place where "1 means off" is decided
                self.guidance = None
        if isinstance(self.stop, str):  # one stop string given bare
            self.stop = (self.stop,)
        self.stop, self.stop_tokens = tuple(self.stop), tuple(self.stop_tokens)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {list(self.stop)!r}")
        if self.compile and not self.use_cache:
            raise ValueError("compile=True compiles the cached decode step; it needs use_cache=True")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        for name in ("top_p", "min_p"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] or None, got {v}")
        if self.draft_model is not None and self.draft is None:
            self.draft = "model"  # a loaded draft given directly (Python)
        if self.draft is not None:
            if not isinstance(self.draft, str) or not self.draft:
                raise ValueError(f"draft must be 'ngram' or a model name/folder/.ckpt with the same codec, "
                                 f"got {self.draft!r}")
            if self.compile or not self.use_cache:
                raise ValueError(f"draft={self.draft!r} (speculative decoding) runs its own cached passes; it "
                                 "needs compile=False and use_cache=True")
        if self.draft_tokens < 1:
            raise ValueError(f"draft_tokens must be >= 1 (tokens proposed per model pass), got {self.draft_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: SamplingConfig | None = None) -> SamplingConfig:
        """`base` (default: the defaults) with user options (command line, training config, Python keywords)
        applied. An unknown option is a ValueError naming it, the closest accepted name and all of them;
        a value of the wrong type names the option, the value and the expected type."""
        for name, value in options.items():
            if name not in OPTIONS:
                close = [RENAMED[name]] if name in RENAMED else difflib.get_close_matches(name, OPTIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown sampling option {name!r}{hint} Accepted: {', '.join(OPTIONS)}")
            hint = str(_HINTS[name])
            kind = (str, list, tuple) if name == "stop" else str if hint.startswith("str") else bool \
                if hint == "bool" else int if "float" not in hint else (int, float)
            if not (value is None and "None" in hint) and (not isinstance(value, kind) or
                                                            (kind is not bool and isinstance(value, bool))):
                raise ValueError(f"{name}={value!r} is not accepted: expected {hint.replace(' | None', ' or null')}")
        return replace(base or cls(), **options)


_HINTS = {f.name: f.type for f in fields(SamplingConfig)}
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(SamplingConfig) if f.name not in ("stop_tokens", "draft_model"))
RENAMED = {"guidance_scale": "guidance"}  # old name -> today's (saved configs may still hold the old one)
