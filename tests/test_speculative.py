"""Speculative decoding (zoo/sampling/speculative.py): greedy tokens equal plain decoding's, sampled sequences
follow the model's exact distribution (chi-square test that a broken acceptance rule fails), caches roll back."""

from __future__ import annotations

import itertools

import pytest
import torch

import zoo
from zoo.core.cache import KVCache
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
from zoo.sampling import SamplingConfig, apply_repetition_penalty, filter_logits, generate, speculative
from zoo.sampling.speculative import SpeculativeStats, generate_speculative


def peaked(model: GPT, seed: int, std: float) -> GPT:
    """Weights of std `std`: greedy decoding then has no near-ties that float rounding could flip."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model.eval()


def tiny(kind: str, seed: int, vocab: int = 13, n_layer: int = 2, std: float = 0.2) -> GPT:
    size = dict(vocab_size=vocab, block_size=64, n_layer=n_layer, n_head=2, n_embd=32, dropout=0.0)
    if kind == "music":  # relative attention, no absolute positions: the cache rollback must keep it exact
        return peaked(MusicTransformer(MusicTransformerConfig(**size)), seed, std)
    return peaked(GPT(GPTConfig(**size)), seed, std)


# ---- the cache ----------------------------------------------------------------------------------------

def test_truncated_cache_decodes_as_if_the_cut_tokens_were_never_fed():
    model = tiny("text", 0)
    cache = model.new_cache(1, 16)
    with torch.no_grad():
        model.prefill(torch.tensor([[1, 2, 3]]), cache=cache)
        model.decode_tokens(torch.tensor([[4, 5, 6]]), cache=cache)
        cache.truncate(4)  # keep 1 2 3 4
        got = model.decode_tokens(torch.tensor([[7, 8]]), cache=cache)[0]
        want = model(torch.tensor([[1, 2, 3, 4, 7, 8]]))[0, -2:]
    assert cache.pos == 6
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="0..6"):
        cache.truncate(7)
    rolling = KVCache(1, 1, 1, 64, 4, device="cpu", dtype=torch.float32, window=8)
    with pytest.raises(ValueError, match="rolling"):
        rolling.truncate(0)


# ---- greedy: the tokens of plain decoding ---------------------------------------------------------------

PROMPTS = [[1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [5, 6], [7, 8, 9, 7, 8]]  # repeats, so prompt lookup has matches


@pytest.mark.parametrize("kind", ["text", "music"])
@pytest.mark.parametrize("draft", ["ngram", "model"])
@pytest.mark.parametrize("options", [{}, {"repetition_penalty": 1.3, "draft_tokens": 3},
                                     {"stop_tokens": "the 6th of row 0", "draft_tokens": 6}])
def test_greedy_equals_plain_decoding(kind, draft, options):
    model = tiny(kind, 0)
    if "stop_tokens" in options:  # a token that row 0 generates: rows stop at it
        options = options | {"stop_tokens": (generate(model, PROMPTS[:1], temperature=0, max_new_tokens=6)[0][5],)}
    cfg = SamplingConfig(temperature=0, max_new_tokens=40, **options)
    plain = generate(model, PROMPTS, cfg)
    assert "stop_tokens" not in options or (len(plain[0]) <= 6 and plain[0][-1] in cfg.stop_tokens)
    extra = {"draft_model": tiny(kind, 1, n_layer=1)} if draft == "model" else {"draft": "ngram"}
    stats = SpeculativeStats()
    spec = generate_speculative(model, PROMPTS, SamplingConfig(**vars(cfg) | extra), stats=stats)
    assert spec == plain
    assert stats.accepted > 0 and stats.passes < stats.emitted  # drafts were proposed and some accepted
    assert generate(model, PROMPTS, cfg, **extra) == plain  # `generate` dispatches draft= here


def test_self_draft_accepts_everything_and_streams_like_plain_decoding():
    model = tiny("text", 0)
    plain_steps, spec_steps = [], []
    stop = lambda r, ids: len(ids) >= 3 and ids[-1] == ids[-3]  # noqa: E731
    plain = generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=30, should_stop=stop,
                     on_token=lambda s, t: plain_steps.append((s, t.tolist())))
    stats = SpeculativeStats()
    cfg = SamplingConfig(temperature=0, max_new_tokens=30, draft_model=model)
    spec = generate_speculative(model, [[1, 2, 3]], cfg, should_stop=stop, stats=stats,
                                on_token=lambda s, t: spec_steps.append((s, t.tolist())))
    assert spec == plain and spec_steps == plain_steps and len(plain[0]) < 30
    assert stats.accepted == stats.drafted > 0  # the model drafting for itself is always right


# ---- sampling: the model's distribution, exactly ----------------------------------------------------------

V, NEW = 4, 3
SAMPLING = dict(temperature=0.9, top_k=3, repetition_penalty=1.2)  # every processing step that p and q share


def exact_distribution(model: GPT, prompt: list[int]) -> dict[tuple[int, ...], float]:
    """P(x1 x2 x3 | prompt) of plain sampling, from full forward passes with plain decoding's processing."""
    cfg = SamplingConfig(**SAMPLING)
    probs = {}
    for seq in itertools.product(range(V), repeat=NEW):
        ctx, p = list(prompt), 1.0
        for x in seq:
            with torch.no_grad():
                logits = model(torch.tensor([ctx]))[:, -1]
            seen = torch.zeros(1, V, dtype=torch.bool)
            seen[0, ctx] = True
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
            p *= float(filter_logits(logits, cfg).softmax(-1)[0, x])
            ctx.append(x)
        probs[seq] = p
    return probs


def chi2_quantile(df: int, level: float) -> float:
    """x with P(chi2_df <= x) = level, by bisection on the regularised incomplete gamma function."""
    lo, hi = 0.0, 10.0 * df + 100.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = float(torch.special.gammainc(torch.tensor(df / 2, dtype=torch.float64),
                                           torch.tensor(mid / 2, dtype=torch.float64)))
        lo, hi = (mid, hi) if cdf < level else (lo, mid)
    return lo


def chi2_excess(draft: str, n: int) -> float:
    """Pearson's statistic of n speculative samples against the exact distribution, minus its 1 − 1e-4
    quantile: > 0 is a failure, which a correct sampler produces with probability about 1e-4 (asymptotic
    chi-square; cells with expected count < 5 are pooled). Outcomes of probability 0 must never appear."""
    model = peaked(GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16)), 0, 0.5)
    # "a b c a b": prompt lookup proposes "c a" at once; the c most probable after it, so drafts are often accepted
    with torch.no_grad():
        prompt = max(([a, b, c, a, b] for a, b, c in itertools.permutations(range(V), 3)),
                     key=lambda x: float(model(torch.tensor([x]))[0, -1].softmax(-1)[x[2]]))
    exact = exact_distribution(model, prompt)
    extra = {"draft": "ngram"} if draft == "ngram" else {
        "draft_model": peaked(GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16)), 7, 0.5)}
    cfg = SamplingConfig(**SAMPLING, max_new_tokens=NEW, seed=0, draft_tokens=2, **extra)
    stats = SpeculativeStats()
    rows = generate_speculative(model, [prompt] * n, cfg, stats=stats)
    assert stats.accepted > 0.2 * n and stats.drafted > stats.accepted  # acceptances and rejections both tested
    counts = {seq: 0 for seq in exact}
    for r in rows:
        counts[tuple(r)] += 1
    assert all(counts[s] == 0 for s, p in exact.items() if p == 0), "a token top-k removed was sampled"
    big = [s for s, p in exact.items() if p * n >= 5]
    small_p = sum(p for s, p in exact.items() if p * n < 5)
    cells = [(counts[s], exact[s] * n) for s in big] + [(sum(counts[s] for s in exact if s not in big), small_p * n)]
    cells = [(o, e) for o, e in cells if e > 0]
    stat = sum((o - e) ** 2 / e for o, e in cells)
    return stat - chi2_quantile(len(cells) - 1, 1 - 1e-4)


@pytest.mark.parametrize("draft", ["model", "ngram"])
def test_samples_follow_the_models_exact_distribution(draft):
    assert chi2_excess(draft, 1000) <= 0


@pytest.mark.parametrize("draft", ["model", "ngram"])
def test_the_distribution_test_catches_a_broken_acceptance_rule(draft, monkeypatch):
    monkeypatch.setattr(speculative, "accept_probability", lambda p_x, q_x: min(1.0, 2 * p_x / q_x))  # too lenient
    assert chi2_excess(draft, 500) > 0


# ---- errors and entry points -------------------------------------------------------------------------------

def test_draft_errors_name_the_problem():
    model = tiny("text", 0)
    with pytest.raises(ValueError, match="zoo.load"):
        generate(model, [[1]], draft="gpt-pydoc-draft", max_new_tokens=4)  # zoo.sampling loads no model
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, [[1]], draft_model=tiny("text", 1, vocab=17), max_new_tokens=4)
    with pytest.raises(ValueError, match="draft_tokens"):
        SamplingConfig(draft_tokens=0)
    with pytest.raises(ValueError, match="compile=False"):
        SamplingConfig(draft="ngram", compile=True)
    with pytest.raises(ValueError, match="draft"):
        SamplingConfig.from_options({"draft": 3})


def test_pretrained_loads_the_draft_and_refuses_another_codec():
    m = zoo.load("gpt-pydoc")
    plain = m.generate("The with statement", temperature=0, max_new_tokens=40)
    assert m.generate("The with statement", temperature=0, max_new_tokens=40, draft="gpt-pydoc-draft") == plain
    assert m.generate("The with statement", temperature=0, max_new_tokens=40, draft="ngram") == plain
    with pytest.raises(ValueError, match="codec"):
        m.generate("x", draft="music-transformer-bach")
    with pytest.raises(ValueError, match="text and music"):
        zoo.load("image-gpt-digits").generate(draft="ngram")


def test_training_samples_draft_by_prompt_lookup_only():
    from helpers import compose_train
    from omegaconf import OmegaConf

    from zoo.config import ConfigError
    from zoo.training.preflight import check_train_config

    def check(draft: str) -> None:
        cfg = compose_train([f"+samples.draft={draft}"])
        check_train_config(OmegaConf.to_container(cfg, resolve=True))

    check("ngram")
    with pytest.raises(ConfigError, match="samples.draft='gpt-pydoc-draft'"):
        check("gpt-pydoc-draft")
