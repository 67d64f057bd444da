"""zoo.sampling: filter semantics, repetition penalty, seeds, batching, stopping, guidance, streaming."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from zoo.core.attention import KVCache
from zoo.core.layers import lay_out_for_decoding, linear_weights_in_out, prefers_in_out
from zoo.core.quant import quantize_
from zoo.models.base import GenerativeModel
from zoo.models.gpt import GPT, GPTConfig
from zoo.sampling import SamplingConfig, apply_repetition_penalty, filter_logits, generate

VOCAB = 97


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A random GPT whose weights have std 0.2 (not GPT-2's 0.02), so that its logits are peaked: greedy
    decoding then gives varied sequences and no near-ties that float rounding could flip."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=2, n_embd=32) | overrides
    model = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model


class ClassConditionalGPT(GenerativeModel):
    """A GPT conditioned on a class id, which enters as a learned token prepended to the stream.

    Class c (0 .. n_classes - 1) is token `VOCAB + c`; `n_classes` is the "no condition" class used
    for classifier-free guidance. Only the VOCAB text tokens are ever predicted. The prepended token
    takes one position, so the cache holds one more than the text and the context is one shorter.
    """

    def __init__(self, n_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.gpt = tiny_gpt(seed, vocab_size=VOCAB + n_classes + 1)
        self.config = self.gpt.config

    @property
    def max_len(self) -> int:
        return self.config.block_size - 1

    def new_cache(self, batch: int, max_len: int | None = None, **kwargs) -> KVCache:
        return super().new_cache(batch, (max_len or self.max_len) + 1, **kwargs)

    def forward(self, idx: Tensor, *, cond: Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> Tensor:
        if cond is not None:  # (B,) class ids
            idx = torch.cat([(VOCAB + cond)[:, None], idx], dim=1)
        return self.gpt(idx, cache=cache, last_only=last_only)[..., :VOCAB]

    def null_condition(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return torch.full((batch,), self.n_classes, dtype=torch.long, device=device)

    def decode_step(self, idx: Tensor, *, cache: KVCache, cond: Tensor | None = None) -> Tensor:
        return self(idx, cache=cache, last_only=True)[:, -1]  # the class token entered the cache at prefill


def probs_logits(*probs: float) -> Tensor:
    return torch.tensor([probs]).log()  # (1, V)


def kept(logits: Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


# --- filters ------------------------------------------------------------------------------------------

def test_temperature_divides_logits() -> None:
    logits = torch.randn(3, 10)
    torch.testing.assert_close(filter_logits(logits, SamplingConfig(temperature=2.0)), logits / 2, atol=0, rtol=0)
    torch.testing.assert_close(filter_logits(logits, SamplingConfig(temperature=0.0)), logits, atol=0, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_top_k_keeps_exactly_k(k: int) -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(k))  # distinct values
    out = filter_logits(logits, SamplingConfig(top_k=k))
    assert (torch.isfinite(out).sum(-1) == k).all()
    top = logits.topk(k, dim=-1).indices
    assert torch.isfinite(out.gather(1, top)).all()
    torch.testing.assert_close(out.gather(1, top), logits.gather(1, top), atol=0, rtol=0)  # kept ones unchanged


def test_top_p_examples() -> None:
    logits = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.01))) == [0]  # the top token always stays
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.5))) == [0]
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.75))) == [0, 1]
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.9))) == [0, 1, 2]
    assert kept(filter_logits(logits, SamplingConfig(top_p=1.0))) == [0, 1, 2, 3]
    # temperature comes first: flattened by T=100 the four are near 0.25 each, so 0.6 needs three
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.6))) == [0, 1]
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.6, temperature=100.0))) == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.01, 0.99), vocab=st.integers(2, 40))
def test_top_p_keeps_smallest_prefix_reaching_p(seed: int, p: float, vocab: int) -> None:
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    out = filter_logits(logits, SamplingConfig(top_p=p))
    probs = logits.softmax(-1)[0]
    order = probs.argsort(descending=True)
    n = int(torch.isfinite(out).sum())
    assert set(kept(out)) == set(order[:n].tolist())  # the most probable tokens, the top one included
    assert probs[order[:n]].sum() >= p - 1e-12  # enough mass
    assert probs[order[:n - 1]].sum() < p + 1e-12  # and one fewer would not be


def test_min_p_is_relative_to_the_top_probability() -> None:
    logits = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert kept(filter_logits(logits, SamplingConfig(min_p=0.25))) == [0, 1, 2]  # threshold 0.125
    assert kept(filter_logits(logits, SamplingConfig(min_p=0.5))) == [0, 1]  # threshold 0.25
    assert kept(filter_logits(logits, SamplingConfig(min_p=0.7))) == [0]  # threshold 0.35
    # scaling every probability's odds the same way (a peakier top) moves the threshold with the top
    peaked = probs_logits(0.9, 0.06, 0.03, 0.01)
    assert kept(filter_logits(peaked, SamplingConfig(min_p=0.25))) == [0]


def test_filters_combine() -> None:
    logits = probs_logits(0.4, 0.3, 0.2, 0.06, 0.04)
    out = filter_logits(logits, SamplingConfig(top_k=3, top_p=0.65))
    assert kept(out) == [0, 1]


def test_repetition_penalty_math() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.0, -1.0]])
    seen = torch.tensor([[True, True, False, True, False]])
    expected = torch.tensor([[1.0, -4.0, 1.0, 0.0, -1.0]])  # positive / 2, negative * 2, unseen untouched
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, 2.0), expected, atol=0, rtol=0)
    assert apply_repetition_penalty(logits, seen, 1.0) is logits


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", -1.0, "temperature must be >= 0"), ("top_k", 0, "top_k must be >= 1"),
    ("top_p", 1.5, "top_p must be in"), ("min_p", 0.0, "min_p must be in"),
    ("repetition_penalty", 0.0, "repetition_penalty must be > 0"), ("max_new_tokens", -1, "max_new_tokens"),
])
def test_sampling_config_errors(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})


# --- the generation loop -------------------------------------------------------------------------------

def greedy_reference(model: GenerativeModel, prompt: list[int], n: int, penalty: float = 1.0) -> list[int]:
    """Greedy decoding written out: recompute the whole sequence, penalise what was seen, take argmax."""
    seq = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([seq]))[:, -1]
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[0, seq] = True
        seq.append(int(apply_repetition_penalty(logits, seen, penalty).argmax()))
    return seq[len(prompt):]


def test_greedy_equals_reference_and_cached_equals_uncached() -> None:
    model = tiny_gpt()
    prompt = [5, 17, 3, 88]
    expected = greedy_reference(model, prompt, 30)
    assert generate(model, [prompt], temperature=0, max_new_tokens=30) == [expected]
    assert generate(model, [prompt], temperature=0, max_new_tokens=30, use_cache=False) == [expected]
    penalised = greedy_reference(model, prompt, 30, penalty=1.5)
    assert penalised != expected  # the penalty changes the outcome, so the next line can fail
    assert generate(model, [prompt], temperature=0, max_new_tokens=30, repetition_penalty=1.5) == [penalised]


@pytest.mark.parametrize("options", [{}, {"temperature": 0.8, "top_k": 5}, {"top_p": 0.9}, {"min_p": 0.1}])
def test_pick_draws_what_multinomial_draws(options: dict) -> None:
    """The loop draws by argmax(p / Exp(1)) instead of calling torch.multinomial: the same tokens from the same
    generator state (what multinomial itself computes, without its checks), so seeded samples do not change."""
    from zoo.sampling.loop import _pick

    cfg = SamplingConfig(**options)
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(1)) * 2
    probs = filter_logits(logits, cfg).softmax(-1)
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    drawn = torch.stack([_pick(logits, cfg, ours) for _ in range(50)])  # (50, 6)
    expected = torch.stack([torch.multinomial(probs, 1, generator=theirs).squeeze(-1) for _ in range(50)])
    assert torch.equal(drawn, expected)
    assert len(set(drawn.flatten().tolist())) > 6  # real draws, not one token per row


def test_seed_determinism() -> None:
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4, 5, 6]]
    a = generate(model, prompts, temperature=1.0, max_new_tokens=20, seed=0)
    assert generate(model, prompts, temperature=1.0, max_new_tokens=20, seed=0) == a
    assert generate(model, prompts, temperature=1.0, max_new_tokens=20, seed=1) != a
    torch.manual_seed(123)  # a seeded run neither depends on nor disturbs the global RNG
    state = torch.get_rng_state()
    assert generate(model, prompts, temperature=1.0, max_new_tokens=20, seed=0) == a
    assert torch.equal(torch.get_rng_state(), state)


def test_sampling_filters_reach_the_loop() -> None:
    """top_k=1 (or a tiny top_p, or min_p=1) leaves only the argmax: sampling must equal greedy."""
    model = tiny_gpt()
    greedy = generate(model, [[7, 8, 9]], temperature=0, max_new_tokens=15)
    for f in (dict(top_k=1), dict(top_p=1e-6), dict(min_p=1.0)):
        assert generate(model, [[7, 8, 9]], temperature=1.5, max_new_tokens=15, seed=3, **f) == greedy, f
    assert generate(model, [[7, 8, 9]], temperature=1.5, max_new_tokens=15, seed=3) != greedy


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_batched_prompts_of_different_lengths_equal_each_alone(position: str) -> None:
    model = tiny_gpt(position=position)
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6, 5, 3], [5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2]]
    batched = generate(model, prompts, temperature=0, max_new_tokens=12)
    alone = [generate(model, [p], temperature=0, max_new_tokens=12)[0] for p in prompts]
    assert batched == alone
    assert [len(r) for r in batched] == [12, 12, 12]  # max_new_tokens per row, whatever its prompt length
    assert generate(model, prompts, temperature=0, max_new_tokens=12, use_cache=False) == alone
    assert generate(model, prompts, temperature=0, max_new_tokens=0) == [[], [], []]


def test_stop_tokens_stop_only_their_row() -> None:
    model = tiny_gpt()
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6], [2, 7]]
    full = generate(model, prompts, temperature=0, max_new_tokens=16)
    # a token that row 0 first produces at step k >= 2 and the other rows never produce
    candidates = [k for k in range(2, 12) if full[0][k] not in full[0][:k] + full[1] + full[2]]
    assert candidates, f"no usable stop token in {full}"
    k = candidates[0]
    out = generate(model, prompts, temperature=0, max_new_tokens=16, stop_tokens=(full[0][k],))
    assert out == [full[0][:k + 1], full[1], full[2]]  # the stop token is kept; the others continue


def test_should_stop_callback() -> None:
    model = tiny_gpt()
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6]]
    full = generate(model, prompts, temperature=0, max_new_tokens=16)
    calls: list[tuple[int, int]] = []

    def should_stop(row: int, out: list[int]) -> bool:
        calls.append((row, len(out)))
        return row == 1 and len(out) == 4

    out = generate(model, prompts, temperature=0, max_new_tokens=16, should_stop=should_stop)
    assert out == [full[0], full[1][:4]]
    assert sorted(calls) == sorted([(0, n) for n in range(1, 17)] + [(1, n) for n in range(1, 5)])


def test_on_token_streams_every_token() -> None:
    model = tiny_gpt()
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6]]
    seen: list[tuple[int, list[int]]] = []
    out = generate(model, prompts, temperature=0, max_new_tokens=10, on_token=lambda s, t: seen.append((s, t.tolist())))
    assert [s for s, _ in seen] == list(range(12))  # 2 steps reading row 1's prompt, then 10 new tokens
    assert [t[1] for _, t in seen[:2]] == [-1, -1]  # row 1 is still reading its prompt
    for r in range(2):
        assert [t[r] for _, t in seen if t[r] >= 0] == out[r]
    assert [t[0] for _, t in seen[10:]] == [-1, -1]  # row 0 finished its 10 tokens at step 9


def test_too_long_and_bad_requests_are_errors() -> None:
    model = tiny_gpt()  # block_size 64
    with pytest.raises(ValueError, match=r"prompt \+ max_new_tokens = 65 tokens exceeds the model's context of 64"):
        generate(model, [[1] * 10, [2] * 15], max_new_tokens=50)
    generate(model, [[1] * 14], max_new_tokens=50, temperature=0)  # exactly 64 is fine
    with pytest.raises(ValueError, match="at least one prompt"):
        generate(model, [])
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], max_new_tokens=3)
    with pytest.raises(ValueError, match=r"^guidance=2 needs a conditional model \(classes, styles or captions\); "
                                         r"GPT takes no condition: leave guidance out or set it to 1$"):
        generate(model, [[1]], guidance=2.0)
    with pytest.raises(ValueError, match="compile=True compiles the cached decode step; it needs use_cache=True"):
        generate(model, [[1]], compile=True, use_cache=False)
    with pytest.raises(ValueError, match="compile=True needs a model with a fixed-shape decode step .* "
                                         "ClassConditionalGPT has none: use compile=False"):
        generate(ClassConditionalGPT(), [[1]], max_new_tokens=2, compile=True, cond=torch.tensor([0]))


def test_linear_weights_in_out_same_outputs_then_restored() -> None:
    """The CPU decoding layout: (in, out) weight copies inside the block, the model untouched after it."""
    model = tiny_gpt()
    idx = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want = model(idx)
        with linear_weights_in_out(model):
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            preferred = [m for m in linears if prefers_in_out(m.weight)]
            assert preferred and len(preferred) < len(linears)  # the MLP's down-projection (in > out) stays
            assert all(("forward" in m.__dict__) == prefers_in_out(m.weight) for m in linears)
            got = model(idx)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied


def test_lay_out_for_decoding_changes_strides_only(tmp_path) -> None:
    """An inference model's weights re-laid out in place: same parameters (identity, tying, values, keys), same
    outputs, (in, out) storage where prefers_in_out; generate() does it for an eval model, not a training one."""
    model = tiny_gpt().eval()
    idx = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want = model(idx)
        assert lay_out_for_decoding(lay_out_for_decoding(model)) is model  # idempotent
        got = model(idx)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert dict(model.named_parameters()) == params and model.lm_head.weight is model.transformer.wte.weight
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert all(m.weight.t().is_contiguous() == prefers_in_out(m.weight) for m in linears)
    assert any(not prefers_in_out(m.weight) and m.weight.is_contiguous() for m in linears)
    from zoo.hub.export import save_weights  # an export after decoding writes the same bytes

    for name, net in (("laid_out", model), ("fresh", tiny_gpt().eval())):
        save_weights(net, tmp_path / f"{name}.safetensors", torch.float32)
    assert (tmp_path / "laid_out.safetensors").read_bytes() == (tmp_path / "fresh.safetensors").read_bytes()
    with torch.no_grad():  # quantising re-laid-out weights gives what quantising the originals gives
        torch.testing.assert_close(quantize_(model, "int8")(idx), quantize_(tiny_gpt().eval(), "int8")(idx),
                                   rtol=0, atol=1e-5)

    training = tiny_gpt().train()
    generate(training, [[1, 2]], max_new_tokens=3, temperature=0)
    assert training.training and all(p.is_contiguous() for p in training.parameters())  # copies for the call only
    fresh = tiny_gpt().eval()
    plain = generate(fresh, [[1, 2]], max_new_tokens=6, temperature=0)
    assert fresh.lm_head.weight.t().is_contiguous()
    assert generate(fresh, [[1, 2]], max_new_tokens=6, temperature=0) == plain


# --- classifier-free guidance -------------------------------------------------------------------------

def test_guidance_one_is_conditional_and_zero_is_unconditional() -> None:
    model = ClassConditionalGPT().eval()
    prompts = [[4, 2], [], [9]]  # an empty prompt is fine: the class token starts the stream
    cond, null = torch.tensor([0, 1, 2]), torch.tensor([3])
    kw = dict(temperature=0, max_new_tokens=12)
    conditional = generate(model, prompts, cond=cond, **kw)
    unconditional = generate(model, prompts, cond=null.expand(3), **kw)
    assert conditional != unconditional  # the condition matters, so the checks below can fail
    assert generate(model, prompts, cond=cond, guidance=1.0, **kw) == conditional
    assert generate(model, prompts, cond=cond, guidance=0.0, **kw) == unconditional
    strong = generate(model, prompts, cond=cond, guidance=3.0, **kw)
    assert strong == generate(model, prompts, cond=cond, guidance=3.0, use_cache=False, **kw)
    # with sampling, scale 1 also draws the very same tokens from the same seed
    sampled = generate(model, prompts, cond=cond, temperature=1.0, max_new_tokens=12, seed=5)
    assert generate(model, prompts, cond=cond, guidance=1.0, temperature=1.0,
                    max_new_tokens=12, seed=5) == sampled


@pytest.mark.parametrize("use_cache", [True, False])
def test_guidance_runs_the_model_once_per_step(monkeypatch, use_cache: bool) -> None:
    """Issue 25: guidance costs one pass, not two: conditional and unconditional rows go through the model together,
    one call per step on a doubled batch, as many calls as unguided decoding makes."""
    model = ClassConditionalGPT().eval()
    calls: list[tuple[str, int]] = []
    def counting(name: str):  # noqa: ANN202
        fn = getattr(model, name)

        def counted(idx: Tensor, **kw) -> Tensor:
            calls.append((name, idx.shape[0]))
            return fn(idx, **kw)
        return counted

    for name in ("prefill", "decode_step"):
        monkeypatch.setattr(model, name, counting(name))
    kw = dict(temperature=0, max_new_tokens=7, use_cache=use_cache)
    generate(model, [[4, 2], [9, 1]], cond=torch.tensor([0, 1]), **kw)
    unguided = list(calls)
    calls.clear()
    generate(model, [[4, 2], [9, 1]], cond=torch.tensor([0, 1]), guidance=3.0, **kw)
    assert len(calls) == len(unguided) == 7  # one call per generated token (the first from the prompt's pass)
    assert [n for n, _ in calls] == [n for n, _ in unguided] and {b for _, b in calls} == {4}  # 2 rows, doubled


def test_every_model_knows_its_null_condition() -> None:
    """The one place that decides about guidance: a model's `null_condition` (None: it takes none)."""
    from zoo.models.image_gpt import ImageGPT, ImageGPTConfig
    from zoo.models.text2image import Text2Image, Text2ImageConfig

    assert tiny_gpt().null_condition(2) is None
    styled = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8, num_classes=3))
    assert styled.null_condition(2).tolist() == [3, 3]
    img = dict(vocab_size=5, num_patches=4, patch_tokens=2, n_layer=1, n_head=1, n_embd=8, local_n_layer=0,
               local_n_head=1, local_n_embd=8)
    assert ImageGPT(ImageGPTConfig(**img)).null_condition(2) is None
    assert ImageGPT(ImageGPTConfig(**img, num_classes=4)).null_condition(1).tolist() == [4]
    captions = Text2Image(Text2ImageConfig(**img, text_vocab_size=7, text_len=3))
    assert captions.null_condition(2).tolist() == [[7, 7, 7]] * 2  # the empty caption: all padding
    with pytest.raises(ValueError, match=r"guidance=2 needs a conditional model .*; ImageGPT takes no condition"):
        generate(ImageGPT(ImageGPTConfig(**img)), [[]], guidance=2.0, max_new_tokens=8)
    # rows without a condition have nothing to guide: the unguided sample, on a batch that is not doubled
    assert generate(styled, [[1]], guidance=3.0, max_new_tokens=5, seed=0) == \
        generate(styled, [[1]], max_new_tokens=5, seed=0)


def test_guided_logits_formula() -> None:
    """One step checked by hand: u + s · (c − u) from the two branches' own next-token logits."""
    model = ClassConditionalGPT().eval()
    prompt, cond, null = [4, 2, 7], torch.tensor([1]), torch.tensor([3])
    with torch.no_grad():
        c = model(torch.tensor([prompt]), cond=cond)[:, -1]
        u = model(torch.tensor([prompt]), cond=null)[:, -1]
    guided = u + 2.5 * (c - u)
    assert int(guided.argmax()) not in (int(c.argmax()), int(u.argmax()))  # guidance picks a third token
    got = generate(model, [prompt], cond=cond, guidance=2.5, temperature=0, max_new_tokens=1)
    assert got == [[int(guided.argmax())]]


def test_model_modes_restored() -> None:
    model = tiny_gpt().train()
    generate(model, [[1, 2]], max_new_tokens=2)
    assert model.training
    nn.Module.eval(model)
    generate(model, [[1, 2]], max_new_tokens=2)
    assert not model.training

    def fail(row: int, out: list[int]) -> bool:
        raise RuntimeError("stop rule broke")

    model.train()
    with pytest.raises(RuntimeError, match="stop rule broke"):
        generate(model, [[1, 2]], max_new_tokens=2, should_stop=fail)
    assert model.training  # restored even when the loop raises


# --- one SamplingConfig: names, the "1 means off" rule, options checked by name --------------------------

def test_guidance_one_means_off_in_one_place() -> None:
    assert SamplingConfig(guidance=1).guidance is None and SamplingConfig(guidance=None).guidance is None
    assert SamplingConfig(guidance=2).guidance == 2.0
    assert replace(SamplingConfig(guidance=3.0), guidance=1.0).guidance is None  # every copy is normalised too


@pytest.mark.parametrize(("options", "message"), [
    ({"guidance_scale": 2.0}, "unknown sampling option 'guidance_scale'; did you mean 'guidance'"),
    ({"temprature": 1.0}, "did you mean 'temperature'"),
    ({"top_k": "ten"}, "top_k='ten' is not accepted: expected int or null"),
    ({"stop_tokens": [1]}, "unknown sampling option 'stop_tokens'"),  # set by members, not by users
    ({"stop": [""]}, "stop must be a list of non-empty strings"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
])
def test_from_options_names_the_bad_option(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig.from_options(options)


def test_from_options_applies_over_a_base() -> None:
    base = SamplingConfig(temperature=0.8, top_k=40)
    cfg = SamplingConfig.from_options({"top_k": None, "stop": "\n\n"}, base)
    assert (cfg.temperature, cfg.top_k, cfg.stop) == (0.8, None, ("\n\n",))


def test_every_member_rejects_what_it_does_not_honour_by_name() -> None:
    from zoo.members import member_for

    for codec, option, value in [("char", "guidance", 2.0), ("image_patch", "stop", ["x"]),
                                 ("text_image", "max_new_tokens", 10), ("midi_performance", "stop", ["x"]),
                                 ("midi_performance", "labels", [3])]:
        member = member_for(codec)
        with pytest.raises(ValueError, match=f"`{option}` does not apply to {member.name} models"):
            member.parse({option: value})
        member.parse({option: value}, explicit=set())  # a default of another member's: dropped, not an error
