"""One autoregressive loop for every zoo model.

`generate` drives any `GenerativeModel` through `prefill` / `decode_step` (KV cache) or, with
`use_cache=False`, by recomputing the whole prefix each step (the reference the tests compare with).

Prompts of different lengths share one batch without padding: all rows are prefilled with the
shortest prompt, then rows that still have prompt tokens are teacher-forced (their prompt token is
fed instead of a sample) until their prompt is used up. Positions stay aligned, so learned,
rotary and relative position schemes are all exact.

Logits are processed in this order: guidance, repetition penalty, temperature, then top-k, top-p
(nucleus, Holtzman et al. 2020: the smallest set of most probable tokens whose mass reaches p) and
min-p (keep tokens with p >= min_p · p_max), each filter seeing the previous one's output.

`sample_tokens` (images from class ids, or completions of a prefix) and `sample_images` (images from
captions) are the conditional calls of this loop that the members, the hub and `zoo.eval` share.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text_image import TextImageCodec
from zoo.core.layers import linear_weights_in_out
from zoo.models.base import GenerativeModel


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
    guidance: float | None = None  # classifier-free guidance; needs `cond` and `uncond`; None or 1 = off
    stop: tuple[str, ...] = ()  # stop strings (text members): a sample ends before the first one
    num_samples: int = 1  # samples per prompt / label / caption / primer (members)
    seed: int | None = None
    use_cache: bool = True
    # Decode through a torch.compile'd fixed-shape step (`GPT.decode_step_static`; GPT-family models;
    # other models raise). Compiling takes seconds to a minute once per batch size and cache length
    # (rounded up to COMPILE_LENGTH_STEP positions; the cache then attends over that many masked slots).
    # Greedy tokens equal the default path's (tested), sampled ones up to floating-point rounding. On CPU
    # it gained ~5% over the default for a small GPT (benchmarks/gpt_cpu.md: each token is dominated by
    # the matrix products); it pays off where per-token dispatch dominates.
    compile: bool = False
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
            kind = (str, list, tuple) if name == "stop" else bool if hint == "bool" else int if "float" not in hint \
                else (int, float)
            if not (value is None and "None" in hint) and (not isinstance(value, kind) or
                                                            (kind is not bool and isinstance(value, bool))):
                raise ValueError(f"{name}={value!r} is not accepted: expected {hint.replace(' | None', ' or null')}")
        return replace(base or cls(), **options)


_HINTS = {f.name: f.type for f in fields(SamplingConfig)}
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(SamplingConfig) if f.name != "stop_tokens")  # user options
RENAMED = {"guidance_scale": "guidance"}  # old name -> today's (saved configs may still hold the old one)

COMPILE_LENGTH_STEP = 128  # compiled decoding allocates the cache in multiples of this (fewer recompiles)


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Apply temperature, top-k, top-p and min-p to (B, V) logits; removed entries become -inf.

    top-k keeps the k largest (and any tied with the k-th); top-p always keeps the most probable token.
    """
    if cfg.temperature > 0:
        logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= cfg.top_p  # mass before this token already enough
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if cfg.min_p is not None:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < cfg.min_p * probs.max(-1, keepdim=True).values, float("-inf"))
    return logits


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """seen (B, V) bool: divide positive logits of seen tokens by `penalty`, multiply negative ones."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _pick(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    if cfg.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float(), cfg).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: GenerativeModel,
    prompts: Sequence[Sequence[int]] | Tensor,
    cfg: SamplingConfig | None = None,
    *,
    cond: Tensor | None = None,
    uncond: Tensor | None = None,
    on_token: Callable[[int, Tensor], None] | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    **overrides: object,
) -> list[list[int]]:
    """Sample continuations for a batch of prompts; return the generated ids per row (prompt excluded).

    prompts: B token lists (may be empty when the model supplies its own start, e.g. class token).
    cond / uncond: the model's condition for each row, and the "no condition" value used for
        classifier-free guidance: logits = u + scale · (c − u), computed on a doubled batch that
        shares one KV cache.
    on_token(step, tokens (B,)): called after every step (streaming); tokens[r] is row r's new token,
        or -1 where row r generated nothing this step (still reading its prompt, or finished).
    should_stop(row, generated ids): text-level stop rules (stop strings) checked after each token.
    A row stops at a stop token (which is kept in its output), after `max_new_tokens`, or when
    should_stop says so; the other rows go on.
    overrides: any SamplingConfig field, e.g. `generate(model, prompts, temperature=0, compile=True)`
        (compile: decode through a compiled fixed-shape step, GPT-family models; see SamplingConfig).
    """
    cfg = replace(cfg or SamplingConfig(), **overrides)
    rows = [list(map(int, p)) for p in (prompts.tolist() if isinstance(prompts, Tensor) else prompts)]
    if not rows:
        raise ValueError("generate needs at least one prompt, got an empty batch")
    b = len(rows)
    guided = cfg.guidance is not None
    if guided and (cond is None or uncond is None):
        raise ValueError("guidance needs both `cond` and `uncond`")
    if guided:
        cond = torch.cat([cond, uncond.expand_as(cond) if uncond.dim() == cond.dim() else uncond], dim=0)
    lens = [len(r) for r in rows]
    n0, n_max = min(lens), max(lens)
    total = n_max - n0 + cfg.max_new_tokens  # decoding steps: rest of the longest prompt, then new tokens
    if n0 + total > model.max_len:
        raise ValueError(f"prompt + max_new_tokens = {n0 + total} tokens exceeds the model's context "
                         f"of {model.max_len}; shorten the prompt or lower max_new_tokens")
    if cfg.max_new_tokens == 0:
        return [[] for _ in range(b)]
    was_training = model.training
    model.eval()
    # On CPU the one-row products of decoding run faster over (in, out) weight copies (see
    # linear_weights_in_out); the compiled step keeps its copies between calls (new ones would recompile).
    cpu = next(model.parameters()).device.type == "cpu"
    layout = linear_weights_in_out(model, keep=cfg.compile) if cpu else contextlib.nullcontext()
    try:
        with layout:
            return _decode(model, rows, cfg, cond, on_token, should_stop)
    finally:
        model.train(was_training)


def _decode(model: GenerativeModel, rows: list[list[int]], cfg: SamplingConfig, cond: Tensor | None,
            on_token: Callable[[int, Tensor], None] | None,
            should_stop: Callable[[int, list[int]], bool] | None) -> list[list[int]]:
    """`generate`'s loop, on validated arguments (`cond` already doubled for guidance)."""
    b, guided = len(rows), cfg.guidance is not None
    lens = [len(r) for r in rows]
    n0, n_max = min(lens), max(lens)
    total = n_max - n0 + cfg.max_new_tokens
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None
    prompt = torch.tensor([r + [0] * (n_max - len(r)) for r in rows], dtype=torch.long,
                          device=device).view(b, n_max)  # (B, n_max), right-padded
    lengths = torch.tensor(lens, device=device)  # (B,)
    keep_seq = not cfg.use_cache  # the whole sequence is only needed to recompute it
    seq = torch.empty(b, n0 + total if keep_seq else n0, dtype=torch.long, device=device)  # (B, fed so far)
    seq[:, :n0] = prompt[:, :n0]
    stop = torch.tensor(cfg.stop_tokens, dtype=torch.long, device=device) if cfg.stop_tokens else None
    vocab_seen = None
    # Row r reads its prompt up to position lens[r] - 1, then generates max_new_tokens: its budget ends
    # at a step known in advance, so running out of budget needs no per-step bookkeeping on the device.
    budget_ends: dict[int, list[int]] = {}
    for r, n in enumerate(lens):
        budget_ends.setdefault(n - n0 + cfg.max_new_tokens - 1, []).append(r)
    may_stop_early = stop is not None or should_stop is not None
    done = torch.zeros(b, dtype=torch.bool, device=device)
    some_done = False  # False while no row can be done: then every row generates and `done` is not consulted
    emitted_steps: list[Tensor] = []  # (B,) per step, -1 where nothing was generated
    out_so_far: list[list[int]] = [[] for _ in range(b)]  # only kept up to date for should_stop
    feed = torch.cat([seq[:, :n0], seq[:, :n0]]) if guided else seq[:, :n0]
    step_fn, cache_len = model.decode_step, n0 + total
    if cfg.compile:
        static_step = getattr(model, "decode_step_static", None)
        if static_step is None:
            raise ValueError(f"compile=True needs a model with a fixed-shape decode step (decode_step_static, "
                             f"the GPT family); {type(model).__name__} has none: use compile=False")
        step_fn = functools.partial(static_step, compile=True)
        # A few cache lengths only, so that prompts of other lengths reuse the compiled graph.
        cache_len = min(model.max_len, -(-cache_len // COMPILE_LENGTH_STEP) * COMPILE_LENGTH_STEP)
    cache = model.new_cache(feed.shape[0], cache_len) if cfg.use_cache else None
    logits = model.prefill(feed, cond=cond, cache=cache)  # (B or 2B, V)
    for step in range(total):
        if guided:
            c, u = logits[:b], logits[b:]
            logits = u + cfg.guidance * (c - u)
        if cfg.repetition_penalty != 1.0:
            if vocab_seen is None:
                vocab_seen = torch.zeros(b, logits.shape[-1], dtype=torch.bool, device=device)
                vocab_seen.scatter_(1, seq[:, :n0], True)
            logits = apply_repetition_penalty(logits, vocab_seen, cfg.repetition_penalty)
        tok = _pick(logits, cfg, generator)  # (B,)
        pos = n0 + step  # absolute position of this token
        if pos < n_max:  # teacher-force rows whose prompt is longer: they read, not generate
            reading = pos < lengths
            tok = torch.where(reading, prompt[:, pos], tok)
            generated: Tensor | None = ~(done | reading)
        else:
            generated = ~done if some_done else None  # None: every row generated
        if keep_seq:
            seq[:, pos] = tok
        if vocab_seen is not None:
            vocab_seen.scatter_(1, tok[:, None], True)
        emitted = tok if generated is None else torch.where(generated, tok, -1)
        emitted_steps.append(emitted)
        if stop is not None:
            hit = torch.isin(tok, stop)
            done |= hit if generated is None else generated & hit
            some_done = True
        if should_stop is not None:
            for r in (range(b) if generated is None else generated.nonzero().flatten().tolist()):
                out_so_far[r].append(int(tok[r]))
                if should_stop(r, out_so_far[r]):
                    done[r] = some_done = True
        if step in budget_ends:
            done[budget_ends[step]] = some_done = True
        if on_token is not None:
            on_token(step, emitted)
        if step == total - 1 or ((may_stop_early or step in budget_ends) and bool(done.all())):
            break
        if cache is not None:
            logits = step_fn(torch.cat([tok, tok])[:, None] if guided else tok[:, None], cache=cache)
        else:
            fed = seq[:, :pos + 1]
            logits = model.prefill(torch.cat([fed, fed]) if guided else fed, cond=cond)
    return [[t for t in row if t >= 0] for row in torch.stack(emitted_steps, 1).tolist()]


def generate_sliding(model: GenerativeModel, prompts: Sequence[Sequence[int]], cfg: SamplingConfig, *,
                     align: int = 1, on_token: Callable[[int, Tensor], None] | None = None) -> list[list[int]]:
    """Generate `cfg.max_new_tokens` ids after each prompt, sliding a window past the context.

    Used when prompt + max_new_tokens exceed `model.max_len` (music, long text): each window is an
    ordinary cached `generate` call.

    prompts: B framed sequences (from BOS on, so that `align` refers to BOS at index 0). A context
    holds at most half the model's length of the sequence so far (its tail, starting at a multiple
    of `align`), so each window generates at least half a context of new tokens (module docstring).
    With `cfg.seed` set, window w draws with seed `cfg.seed + w`. Returns the new ids per row; a row
    that produced one of `cfg.stop_tokens` ends there (the stop token included).
    """
    ctx = model.max_len
    keep = (ctx // 2) // align * align
    if keep < 1:
        raise ValueError(f"the model's context of {ctx} tokens is too short to slide windows of {align}-token "
                         "steps; it needs at least 2 steps")
    seqs = [list(map(int, p)) for p in prompts]
    if any(not s for s in seqs):
        raise ValueError("every prompt needs at least one token (start from the codec's BOS id)")
    new: list[list[int]] = [[] for _ in seqs]
    active = list(range(len(seqs)))
    stops = set(cfg.stop_tokens)
    window = 0
    while active:
        contexts = []
        for r in active:
            s = seqs[r]
            start = 0 if len(s) <= keep else -(-(len(s) - keep) // align) * align
            contexts.append(s[start:])
        remaining = cfg.max_new_tokens - len(new[active[0]])  # active rows have generated equally much
        n = min(remaining, ctx - max(len(c) for c in contexts))
        if n <= 0:
            break
        seed = None if cfg.seed is None else cfg.seed + window
        out = generate(model, contexts, cfg, max_new_tokens=n, seed=seed, on_token=on_token)
        still = []
        for r, ids in zip(active, out):
            seqs[r].extend(ids)
            new[r].extend(ids)
            if len(ids) == n and not (stops and ids and ids[-1] in stops) and len(new[r]) < cfg.max_new_tokens:
                still.append(r)
        active = still
        window += 1
        if active:
            logging.getLogger(__name__).debug("sliding window %d: %d rows continue", window, len(active))
    return new


# ---- whole images from classes or captions (members, hub and eval share these) ---------------------------
@torch.no_grad()
def sample_tokens(
    model: GenerativeModel,
    codec: ImagePatchCodec,
    labels: Tensor | Sequence[int] | None,
    *,
    num: int | None = None,
    prefix: Tensor | None = None,
    cfg: SamplingConfig | None = None,
    **overrides: Any,
) -> Tensor:
    """Sample whole images as tokens (B, T).

    labels: class ids (B,), checked against the codec (out of range -> ValueError naming the accepted
        ids); None samples `num` images without a condition (a conditional model then uses its
        "no condition" class).
    prefix: image tokens every row starts with, (n,) or (B, n); they are kept and the T − n others
        generated. `codec.prefix_length(rows)` tokens hold the top `rows` pixel rows.
    cfg / overrides: a `SamplingConfig` and field overrides (temperature, top_k, top_p, min_p, seed,
        guidance ...); `max_new_tokens` and `stop_tokens` are set here.
    """
    if labels is not None:
        labels = codec.check_class_ids(labels).reshape(-1)
        b = len(labels)
    elif num is None or num < 1:
        raise ValueError(f"sample_tokens without labels needs num >= 1 images, got num={num!r}")
    else:
        b = num
    device = next(model.parameters()).device
    cfg = replace(cfg or SamplingConfig(), **overrides)
    if prefix is None:
        prefix = torch.zeros(b, 0, dtype=torch.long)
    prefix = torch.as_tensor(prefix, dtype=torch.long)
    prefix = prefix.expand(b, -1) if prefix.dim() == 1 else prefix
    if prefix.shape[0] != b or prefix.shape[1] > codec.tokens_per_image:
        raise ValueError(f"prefix must be (n,) or ({b}, n) with n <= {codec.tokens_per_image}, "
                         f"got {tuple(prefix.shape)}")
    cond = uncond = None
    if codec.num_classes:
        null = torch.full((b,), codec.num_classes, dtype=torch.long, device=device)
        cond = labels.to(device) if labels is not None else null
        uncond = null
    if cfg.guidance is not None and labels is None:
        raise ValueError(f"guidance={cfg.guidance} needs class labels (and a class-conditional model)")
    new = codec.tokens_per_image - prefix.shape[1]
    cfg = replace(cfg, max_new_tokens=new, stop_tokens=())
    rows = generate(model, prefix, cfg, cond=cond, uncond=uncond) if new else [[] for _ in range(b)]
    return torch.cat([prefix, torch.tensor(rows, dtype=torch.long).view(b, new)], dim=1)


@torch.no_grad()
def sample_images(model: GenerativeModel, codec: TextImageCodec, captions: Sequence[str],
                  cfg: SamplingConfig | None = None, **overrides: Any) -> Tensor:
    """One image per caption -> tokens (B, T). "" is the unconditional prompt. `cfg` / overrides:
    temperature, top_k, top_p, min_p, repetition_penalty, seed, guidance (None or 1 = plain conditional
    sampling: SamplingConfig normalises 1 to None, so no doubled batch is computed)."""
    if not captions:
        raise ValueError("sample_images needs at least one caption")
    cfg = replace(cfg or SamplingConfig(), **overrides)
    device = next(model.parameters()).device
    cond = codec.caption_ids(captions).to(device)
    uncond = torch.full_like(cond, codec.pad_id)
    cfg = replace(cfg, max_new_tokens=codec.tokens_per_image, stop_tokens=())
    rows = generate(model, [[] for _ in captions], cfg, cond=cond, uncond=uncond)
    return torch.tensor(rows, dtype=torch.long).view(len(captions), codec.tokens_per_image)
