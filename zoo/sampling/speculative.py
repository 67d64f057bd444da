"""Speculative decoding: a cheap drafter proposes tokens, the model checks them all in one cached pass.

Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative Decoding", Algorithm 1) and
Chen et al. 2023 ("Accelerating LLM Decoding with Speculative Sampling", Algorithm 2). Each round:

1. the drafter proposes up to k tokens x_1 .. x_k with distributions q_1 .. q_k (`draft_tokens` = k);
2. the model reads the last token and x_1 .. x_k in ONE cached pass and gives p_1 .. p_{k+1}, each
   processed exactly as plain decoding processes its logits (repetition penalty, temperature, top-k,
   top-p, min-p: `zoo.sampling.loop`'s own functions);
3. x_i is accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection a token is drawn
   from norm(max(0, p_i − q_i)) and the round ends; when all k are accepted, a bonus token is drawn from
   p_{k+1}. Every emitted token then has exactly the model's distribution (the papers' theorem; tested
   on a tiny model by a chi-square test in tests/test_speculative.py). Greedy (temperature 0) keeps the
   drafts equal to the model's argmax and emits the model's argmax at the first mismatch: the tokens of
   plain greedy decoding (up to floating-point near-ties: a (k + 1)-token pass rounds differently from k + 1
   one-token passes);
4. both KV caches are cut back to the accepted tokens (`KVCache.truncate`).

Drafters: `NgramDrafter` ("prompt lookup": the tokens that followed the latest earlier occurrence of the
context's last n tokens; q is a point mass, so x is accepted with probability p(x)) and `ModelDrafter`
(a smaller model with the same vocabulary, sampled with the same processing as the model).

Rows are decoded one after another (each accepts a different number of tokens per round, so their
caches would drift apart); a batch is supported, it just gains nothing from batching. With a seed the
samples follow the model's distribution but are not the tokens plain decoding draws with that seed.
Written here rather than taken from a library: the papers' rule is a few lines, and it has to run on
zoo's own cache and logit processing to be exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.core.cache import KVCache
from zoo.core.layers import decoding_layout
from zoo.models.base import GenerativeModel
from zoo.sampling.config import SamplingConfig
from zoo.sampling.loop import apply_repetition_penalty, filter_logits

NGRAM_MAX = 3  # prompt lookup tries the last 3 tokens, then 2, then 1 (a common setting; not swept here)


@dataclass
class SpeculativeStats:
    """Counts over a `generate` call: model passes (verifications), tokens drafted, accepted, emitted."""

    passes: int = 0
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0

    @property
    def acceptance(self) -> float:
        """Share of drafted tokens the model accepted."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_pass(self) -> float:
        """Tokens emitted per model pass (plain decoding: 1)."""
        return self.emitted / self.passes if self.passes else 0.0


def accept_probability(p_x: float, q_x: float) -> float:
    """The papers' acceptance rule: min(1, p(x) / q(x)) for a draft token x drawn from q."""
    return min(1.0, p_x / q_x)


class NgramDrafter:
    """Prompt lookup: propose the tokens that followed the latest earlier occurrence of the context's last
    n tokens (n = NGRAM_MAX down to 1); nothing when no tail recurs. Needs no model: q is a point mass."""

    def propose(self, ctx: list[int], k: int) -> tuple[list[int], Tensor | None]:
        if k == 0:
            return [], None
        for n in range(min(NGRAM_MAX, len(ctx) - 1), 0, -1):
            tail = ctx[-n:]
            for i in range(len(ctx) - n - 1, -1, -1):  # latest match first; the tail itself excluded
                if ctx[i + n - 1] == tail[-1] and ctx[i:i + n] == tail:
                    return ctx[i + n:i + n + k], None
        return [], None

    def rollback(self, keep: int) -> None:
        """Nothing to roll back."""


class ModelDrafter:
    """A draft model with its own KV cache; proposals are drawn with the model's processing (`Processing`)."""

    def __init__(self, model: GenerativeModel, proc: Processing, cond: Tensor | None, max_len: int,
                 generator: torch.Generator | None) -> None:
        self.model, self.proc, self.generator = model, proc, generator
        self.cond = cond if cond is not None and model.null_condition(1) is not None else None
        self.cache = _new_cache(model, max_len, "draft")

    def propose(self, ctx: list[int], k: int) -> tuple[list[int], Tensor | None]:
        """Up to k tokens after `ctx` and their distributions q (k, V) (None when greedy)."""
        if k == 0:
            return [], None
        logits = self._read(ctx[self.cache.pos:])  # what the draft has not read yet

        toks: list[int] = []
        qs: list[Tensor] = []
        for i in range(k):
            lg = self.proc.penalise(logits, ctx + toks)
            if self.proc.greedy:
                tok = int(lg.argmax(-1))
            else:
                q = self.proc.probs(lg)  # (1, V)
                tok = int(torch.multinomial(q, 1, generator=self.generator))
                qs.append(q[0])
            toks.append(tok)
            if i < k - 1:
                logits = self._read([tok])
        return toks, torch.stack(qs) if qs else None

    def _read(self, tokens: list[int]) -> Tensor:
        """Feed tokens (prefill on an empty cache); the draft's next-token logits (1, V)."""
        idx = torch.tensor([tokens], device=self.cache.k[0].device)  # (1, T)
        if self.cache.pos == 0:
            return self.model.prefill(idx, cond=self.cond, cache=self.cache).float()
        if len(tokens) == 1:
            return self.model.decode_step(idx, cache=self.cache, cond=self.cond).float()
        return self.model.decode_tokens(idx, cache=self.cache, cond=self.cond)[:, -1].float()

    def rollback(self, keep: int) -> None:
        """Keep the first `keep` positions of the context (the accepted ones) in the draft's cache."""
        self.cache.truncate(min(self.cache.pos, keep))


class Processing:
    """Plain decoding's logit processing on rows (`zoo.sampling.loop`: repetition penalty, then for sampling
    temperature, top-k, top-p, min-p), so that p and q are the distributions `generate` samples from."""

    def __init__(self, cfg: SamplingConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.greedy = cfg.temperature == 0

    def penalise(self, logits: Tensor, seen: list[int], extra: Sequence[int] = ()) -> Tensor:
        """logits (R, V): row i penalised for the tokens of `seen` and of extra[:i] (repetition penalty)."""
        if self.cfg.repetition_penalty == 1.0:
            return logits
        mask = torch.zeros(logits.shape, dtype=torch.bool, device=self.device)  # (R, V)
        mask[:, seen] = True
        for i, tok in enumerate(extra):
            mask[i + 1:, tok] = True
        return apply_repetition_penalty(logits, mask, self.cfg.repetition_penalty)

    def probs(self, logits: Tensor) -> Tensor:
        return filter_logits(logits, self.cfg).softmax(-1)


def _new_cache(model: GenerativeModel, max_len: int, who: str) -> KVCache:
    if max_len > model.max_len:
        raise ValueError(f"speculative decoding needs {max_len} positions but the {who} model's context is "
                         f"{model.max_len}; shorten the prompt or lower max_new_tokens")
    cache = model.new_cache(1, max_len)
    if not isinstance(cache, KVCache) or cache.window is not None:
        raise ValueError(f"speculative decoding rolls a plain KV cache back; the {who} model "
                         f"{type(model).__name__} decodes with {type(cache).__name__}"
                         f"{' (a rolling window)' if isinstance(cache, KVCache) else ''}: use draft=null")
    return cache


@torch.no_grad()
def generate_speculative(model: GenerativeModel, rows: list[list[int]], cfg: SamplingConfig, *,
                         cond: Tensor | None = None, on_token: Callable[[int, Tensor], None] | None = None,
                         should_stop: Callable[[int, list[int]], bool] | None = None,
                         stats: SpeculativeStats | None = None) -> list[list[int]]:
    """`zoo.sampling.generate` with `cfg.draft` set (it calls this on validated arguments; guidance is refused
    there). Same contract: the generated ids per row, a stop token kept, on_token(step, (B,) tokens with -1
    for the other rows) after each emitted token. `stats` (optional) accumulates the counts."""
    if cfg.draft != "ngram" and cfg.draft_model is None:
        raise ValueError(f"draft={cfg.draft!r} names a draft model, which zoo.sampling does not load (it sits "
                         "below zoo.hub): sample through zoo.load(...).generate / zoo-sample, or pass the loaded "
                         "model as draft_model=; draft='ngram' needs no model")
    stats = stats if stats is not None else SpeculativeStats()
    device = next(model.parameters()).device
    draft = None if cfg.draft == "ngram" else cfg.draft_model
    if draft is not None:
        dev = next(draft.parameters()).device
        if dev != device:
            raise ValueError(f"the draft model is on {dev} and the model on {device}: move them to one device")
        draft.eval()
        vocabs = [getattr(getattr(x, "config", None), "vocab_size", None) for x in (model, draft)]
        if None not in vocabs and vocabs[0] != vocabs[1]:
            raise ValueError(f"the draft model's vocabulary ({vocabs[1]} tokens) differs from the model's "
                             f"({vocabs[0]}): a draft needs the same codec")
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None
    n0 = min(len(r) for r in rows)
    out = []
    training = model.training
    model.eval()
    with contextlib.ExitStack() as layout:  # generate's CPU layout (a no-op where generate has already applied it)
        layout.enter_context(decoding_layout(model, training=training))
        if draft is not None:
            layout.enter_context(decoding_layout(draft, training=False))  # a draft is an inference model
        for r, prompt in enumerate(rows):
            emit = None
            if on_token is not None:
                def emit(i: int, tok: int, r: int = r, skip: int = len(prompt) - n0) -> None:
                    tokens = torch.full((len(rows),), -1, dtype=torch.long, device=device)
                    tokens[r] = tok
                    on_token(skip + i, tokens)
            stop_row = None if should_stop is None else (lambda ids, r=r: should_stop(r, ids))
            row_cond = None if cond is None else cond[r:r + 1]
            out.append(_decode_row(model, draft, prompt, cfg, row_cond, generator, emit, stop_row, stats))
    return out


def _decode_row(model: GenerativeModel, draft: GenerativeModel | None, prompt: list[int], cfg: SamplingConfig,
                cond: Tensor | None, generator: torch.Generator | None, emit: Callable[[int, int], None] | None,
                should_stop: Callable[[list[int]], bool] | None, stats: SpeculativeStats) -> list[int]:
    """One row. After the prefill the model's cache holds the whole context and `pending` its next-token
    logits; after a round it holds all but the round's last token, which the next round's pass reads first."""
    if not prompt:
        raise ValueError("speculative decoding needs at least one prompt token (the codec's start token)")
    device = next(model.parameters()).device
    max_len = len(prompt) + cfg.max_new_tokens
    cache = _new_cache(model, max_len, "target")
    pending: Tensor | None = model.prefill(torch.tensor([prompt], device=device), cond=cond, cache=cache)  # (1, V)
    ctx, out = list(prompt), []
    proc = Processing(cfg, device)
    drafter = NgramDrafter() if draft is None else ModelDrafter(draft, proc, cond, max_len, generator)
    stops = set(cfg.stop_tokens)
    while True:
        k = min(cfg.draft_tokens, cfg.max_new_tokens - len(out) - 1)  # the round's last token may be a bonus
        drafts, q = drafter.propose(ctx, k)
        unfed = [] if pending is not None else ctx[-1:]
        start = cache.pos  # = len(ctx) - len(unfed)
        logits = pending if pending is not None else torch.empty(0, device=device)
        if unfed or drafts:
            feed = torch.tensor([unfed + drafts], device=device)  # (1, T)
            new = model.decode_tokens(feed, cache=cache, cond=cond)[0].float()  # (T, V)
            logits = new if pending is None else torch.cat([pending.float(), new])
        logits = proc.penalise(logits.float(), ctx, drafts)  # (m + 1, V): p_1 .. p_{m + 1}
        j, tok = _verify(logits, drafts, q, proc, generator)
        cache.truncate(start + len(unfed) + j)  # the context and the j accepted drafts stay; tok is unfed
        drafter.rollback(len(ctx) + j)
        pending = None
        stats.passes += 1
        stats.drafted += len(drafts)
        stats.accepted += j
        for t in [*drafts[:j], tok]:
            out.append(t)
            ctx.append(t)
            stats.emitted += 1
            if emit is not None:
                emit(len(out) - 1, t)
            if t in stops or len(out) == cfg.max_new_tokens or (should_stop is not None and should_stop(out)):
                return out


def _verify(logits: Tensor, drafts: list[int], q: Tensor | None, proc: Processing,
            generator: torch.Generator | None) -> tuple[int, int]:
    """(accepted drafts j, the token after them) from the model's penalised logits (m + 1, V)."""
    if proc.greedy:
        best = logits.argmax(-1).tolist()
        j = 0
        while j < len(drafts) and drafts[j] == best[j]:
            j += 1
        return j, best[j]
    p = proc.probs(logits)  # (m + 1, V)
    for j, x in enumerate(drafts):
        q_x = 1.0 if q is None else float(q[j, x])  # None: a point mass on x (prompt lookup)
        u = float(torch.rand((), generator=generator, device=p.device))
        if u < accept_probability(float(p[j, x]), q_x):
            continue
        q_j = q[j] if q is not None else torch.zeros_like(p[j]).index_fill_(0, torch.tensor([x], device=p.device), 1.0)
        residual = (p[j] - q_j).clamp_min(0)  # norm(max(0, p − q)): rejection happened, so its mass is > 0
        if float(residual.sum()) <= 0:  # p == q up to rounding: rejection had probability ~0
            residual = p[j]
        return j, int(torch.multinomial(residual, 1, generator=generator))
    return len(drafts), int(torch.multinomial(p[-1], 1, generator=generator))
