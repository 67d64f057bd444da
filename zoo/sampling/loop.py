"""The autoregressive loop: filters, `generate` (cache, ragged prompts, guidance), `generate_sliding`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from zoo.core.layers import decoding_layout
from zoo.models.base import GenerativeModel
from zoo.sampling.config import SamplingConfig

COMPILE_LENGTH_STEP = 128  # compiled decoding allocates the cache in multiples of this (fewer recompiles)


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Apply temperature, top-k, top-p and min-p to (B, V) logits; removed entries become -inf.

    top-k keeps the k largest (and any tied with the k-th); top-p always keeps the most probable token.
    """
    if cfg.temperature > 0 and cfg.temperature != 1.0:  # x / 1 == x: one pass (and a scalar wrap) less per token
        logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= cfg.top_p  # mass before this token already enough
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
    """One token per row (B,): the argmax when greedy, else a draw from the filtered distribution."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float(), cfg).softmax(-1)  # (B, V)
    # argmax(p / q), q ~ Exp(1), is a draw from p (the exponential race; the Gumbel-max trick after exp). It is
    # what torch.multinomial(probs, 1) computes itself, from the same generator, so the tokens are the same
    # (tests/test_sampling.py), without multinomial's argument checks: each ends in a device sync (.item()), two
    # per token, ~a third of a small model's sampling time on CPU. Our probs come from a softmax: finite, >= 0.
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(-1)


@torch.no_grad()
def generate(
    model: GenerativeModel,
    prompts: Sequence[Sequence[int]] | Tensor,
    cfg: SamplingConfig | None = None,
    *,
    cond: Tensor | None = None,
    on_token: Callable[[int, Tensor], None] | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    **overrides: object,
) -> list[list[int]]:
    """Sample continuations for a batch of prompts; return the generated ids per row (prompt excluded).

    prompts: B token lists (may be empty when the model supplies its own start, e.g. class token).
    cond: the model's condition for each row (class ids (B,), captions (B, L) ...; None = no condition),
        given to prefill and to every decode step. With `cfg.guidance` (classifier-free guidance) the
        unconditional rows are the model's own `null_condition`: logits = u + scale · (c − u), computed on
        a doubled batch that shares one KV cache. A model whose `null_condition` is None takes no guidance
        (ValueError); rows without a condition have nothing to guide (c = u) and are sampled unguided.
    on_token(step, tokens (B,)): called after every step (streaming); tokens[r] is row r's new token,
        or -1 where row r generated nothing this step (still reading its prompt, or finished).
    should_stop(row, generated ids): text-level stop rules (stop strings) checked after each token.
    A row stops at a stop token (which is kept in its output), after `max_new_tokens`, or when
    should_stop says so; the other rows go on.
    overrides: any SamplingConfig field, e.g. `generate(model, prompts, temperature=0, compile=True)`
        (compile: decode through a compiled fixed-shape step, GPT-family and image models; see SamplingConfig).
        draft="ngram" or draft_model=MODEL: speculative decoding (zoo.sampling.speculative), same tokens
        when greedy, same distribution when sampling.
    """
    cfg = replace(cfg or SamplingConfig(), **overrides)
    rows = [list(map(int, p)) for p in (prompts.tolist() if isinstance(prompts, Tensor) else prompts)]
    if not rows:
        raise ValueError("generate needs at least one prompt, got an empty batch")
    b = len(rows)
    guided = cfg.guidance is not None
    if guided:  # the one place that decides whether guidance applies: the model's null condition
        null = model.null_condition(b)
        if null is None:
            raise ValueError(f"guidance={cfg.guidance:g} needs a conditional model (classes, styles or captions); "
                             f"{type(model).__name__} takes no condition: leave guidance out or set it to 1")
        if cond is None:  # u + g · (u − u) = u: the unguided sample exactly, without the doubled batch
            guided = False
        else:
            cond = torch.cat([cond.to(null.device), null], dim=0)  # (2B, ...): conditional rows, then unconditional
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
    # On CPU the one-row products of decoding run faster over most weights stored (in, out) (prefers_in_out): an
    # inference model is re-laid out in place, once (lay_out_for_decoding: no copy, no memory; a compiled step
    # then sees the same parameters every call); a model that is training gets copies for this call only (kept
    # under compile=True: new ones would recompile).
    layout = decoding_layout(model, training=was_training, compile=cfg.compile)
    try:
        with layout:
            if cfg.draft is not None:
                if guided:
                    raise ValueError(f"draft={cfg.draft!r} (speculative decoding) does not combine with guidance: "
                                     "leave one of them out")
                from zoo.sampling.speculative import generate_speculative  # it imports this module's filters
                return generate_speculative(model, rows, cfg, cond=cond, on_token=on_token, should_stop=should_stop)
            return _decode(model, rows, cfg, cond, guided, on_token, should_stop)
    finally:
        model.train(was_training)


def _decode(model: GenerativeModel, rows: list[list[int]], cfg: SamplingConfig, cond: Tensor | None, guided: bool,
            on_token: Callable[[int, Tensor], None] | None,
            should_stop: Callable[[int, list[int]], bool] | None) -> list[list[int]]:
    """`generate`'s loop, on validated arguments (`cond` already doubled when `guided`)."""
    b = len(rows)
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
    with_cond = {} if cond is None else {"cond": cond}  # every decode step gets the rows' condition
    if cfg.compile:
        static_step = getattr(model, "decode_step_static", None)
        if static_step is None:
            raise ValueError(f"compile=True needs a model with a fixed-shape decode step (decode_step_static: the GPT "
                             f"family, ImageGPT, Text2Image); {type(model).__name__} has none: use compile=False")
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
            logits = step_fn(torch.cat([tok, tok])[:, None] if guided else tok[:, None], cache=cache, **with_cond)
        else:
            fed = seq[:, :pos + 1]
            logits = model.prefill(torch.cat([fed, fed]) if guided else fed, cond=cond)
    return [[t for t in row if t >= 0] for row in torch.stack(emitted_steps, 1).tolist()]


def generate_sliding(model: GenerativeModel, prompts: Sequence[Sequence[int]], cfg: SamplingConfig, *,
                     align: int = 1, on_token: Callable[[int, Tensor], None] | None = None,
                     cond: Tensor | None = None) -> list[list[int]]:
    """Generate `cfg.max_new_tokens` ids after each prompt, sliding a window past the context.

    Used when prompt + max_new_tokens exceed `model.max_len` (music, long text): each window is an
    ordinary cached `generate` call.

    prompts: B framed sequences (from BOS on, so that `align` refers to BOS at index 0). A context
    holds at most half the model's length of the sequence so far (its tail, starting at a multiple
    of `align`), so each window generates at least half a context of new tokens (module docstring).
    With `cfg.seed` set, window w draws with seed `cfg.seed + w`. Returns the new ids per row; a row
    that produced one of `cfg.stop_tokens` ends there (the stop token included). `cond` (B,): a
    class-conditional model's condition per row (guidance as `generate`); every window gets its rows'
    condition.
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
        rows = torch.tensor(active, dtype=torch.long)
        out = generate(model, contexts, cfg, max_new_tokens=n, seed=seed, on_token=on_token,
                       cond=None if cond is None else cond[rows.to(cond.device)])
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


