"""GPT acceptance tests: parity with Hugging Face GPT-2, causality, cached decoding, learning, configs.

Tolerances: float32 throughout; logits are compared with `atol=1e-5, rtol=1e-4` (the two
implementations sum in different orders: fused vs split projections, Conv1D vs Linear), cached vs
full recomputation with the same tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.models.base import build_model
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.gpt2_weights import gpt_config_from_hf, load_hf_state_dict
from zoo.sampling import generate

transformers = pytest.importorskip("transformers")

ATOL, RTOL = 1e-5, 1e-4
HF_TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=97)


def tiny_gpt(seed: int = 0, std: float | None = None, **overrides) -> GPT:
    """A small random GPT in eval mode. `std` rescales every weight to that std so that greedy decoding
    is not degenerate (with GPT-2's 0.02 init the logits are nearly flat and greedy repeats one token)."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, block_size=96, n_layer=2, n_head=2, n_embd=32) | overrides
    model = GPT(GPTConfig(**cfg)).eval()
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:  # matrices, embeddings and the relative table; not norms or biases
                    p.normal_(0.0, std)
    return model


def hf_gpt2(activation: str = "gelu_new", seed: int = 0):
    """Tiny random `GPT2LMHeadModel`, dropout off. initializer_range 0.3 (GPT-2 uses 0.02) makes the
    logits peaked enough that 20 greedy tokens are a varied sequence, not one token repeated."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**HF_TINY, activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, initializer_range=0.3, bos_token_id=None, eos_token_id=None,
                                  pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def zoo_from_hf(hf, sd=None, **overrides) -> GPT:
    model = GPT(gpt_config_from_hf(hf.config.to_dict(), **overrides)).eval()
    load_hf_state_dict(model, hf.state_dict() if sd is None else sd)
    return model


# --- parity with Hugging Face GPT-2 -----------------------------------------------------------------

@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh", "gelu"])
def test_logits_match_hf_gpt2(activation: str) -> None:
    hf = hf_gpt2(activation)
    model = zoo_from_hf(hf)
    idx = torch.randint(0, 97, (3, 64), generator=torch.Generator().manual_seed(1))  # the full context
    with torch.no_grad():
        expected, got = hf(idx).logits, model(idx)
    assert got.shape == (3, 64, 97)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_greedy_tokens_match_hf_generate() -> None:
    hf = hf_gpt2()
    model = zoo_from_hf(hf)
    prompts = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                               max_new_tokens=20, min_new_tokens=20)[:, 7:].tolist()
    got = generate(model, prompts, temperature=0, max_new_tokens=20)
    assert got == expected
    assert all(len(set(row)) > 3 for row in got), "degenerate reference: the test would not discriminate"
    # and without the cache (full recomputation each step)
    assert generate(model, prompts, temperature=0, max_new_tokens=20, use_cache=False) == expected


def test_gpt2model_state_dict_without_prefix() -> None:
    """`GPT2Model` keys lack `transformer.` and it has no lm_head: the head is tied to wte."""
    hf = hf_gpt2()
    sd = hf.transformer.state_dict()
    assert not any(k.startswith("transformer.") for k in sd) and "lm_head.weight" not in sd
    for tie in (True, False):
        model = zoo_from_hf(hf, sd, tie_weights=tie)
        idx = torch.randint(0, 97, (2, 33))
        with torch.no_grad():
            torch.testing.assert_close(model(idx), hf(idx).logits, atol=ATOL, rtol=RTOL)


def test_mismatched_state_dict_errors() -> None:
    hf = hf_gpt2()
    model = GPT(gpt_config_from_hf(hf.config.to_dict()))
    sd = dict(hf.state_dict())
    missing = {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.bias"}
    with pytest.raises(ValueError, match=r"missing \['transformer\.h\.1\.mlp\.c_fc\.bias'\]"):
        load_hf_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"unexpected \['transformer\.h\.2\.ln_1\.weight'\]"):
        load_hf_state_dict(model, sd | {"transformer.h.2.ln_1.weight": torch.ones(32)})
    wider = transformers.GPT2LMHeadModel(transformers.GPT2Config(**(HF_TINY | {"n_embd": 48})))
    with pytest.raises(ValueError, match=r"transformer\.wte\.weight: GPT-2 tensor has shape \(97, 48\) .*"
                                         r"this model expects \(97, 32\)"):
        load_hf_state_dict(model, wider.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"ties lm_head to wte.*tie_weights=False"):
        load_hf_state_dict(model, sd | {"lm_head.weight": torch.zeros(97, 32)})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded
    rotary = GPT(gpt_config_from_hf(hf.config.to_dict(), position="rotary"))
    with pytest.raises(ValueError, match=r"unexpected \['transformer\.wpe\.weight'\]"):
        load_hf_state_dict(rotary, sd)


def test_untied_hf_model_imports_untied() -> None:
    hf = hf_gpt2()
    hf_cfg = hf.config.to_dict() | {"tie_word_embeddings": False}
    untied = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_cfg)).eval()
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    model = zoo_from_hf(untied)
    assert not model.config.tie_weights
    idx = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), untied(idx).logits, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("key", "value"), [("activation_function", "relu"), ("n_inner", 64),
                                            ("layer_norm_epsilon", 1e-6), ("scale_attn_weights", False),
                                            ("scale_attn_by_inverse_layer_idx", True),
                                            ("add_cross_attention", True)])
def test_unsupported_hf_config_is_rejected(key: str, value) -> None:
    """A GPT-2 config zoo would silently compute differently must fail, naming the key."""
    hf_cfg = transformers.GPT2Config(**HF_TINY).to_dict() | {key: value}
    with pytest.raises(ValueError, match=key):
        gpt_config_from_hf(hf_cfg)


# --- causality ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("kernel", ["math", "sdpa"])
def test_future_tokens_do_not_change_past_logits(position: str, kernel: str) -> None:
    model = tiny_gpt(position=position, kernel=kernel, std=0.2)
    idx = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(3))
    changed = idx.clone()
    changed[:, 15] = (idx[:, 15] + 1) % 97
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15], atol=1e-6, rtol=0)
    assert (a[:, 15:] - b[:, 15:]).abs().amax(-1).min() > 1e-3  # every later position does see the change


# --- cached decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("kernel,bias", [("math", "none"), ("sdpa", "none"), ("auto", "relative"),
                                         ("sdpa", "relative"), ("chunked", "alibi")])
def test_cached_decoding_equals_full_recomputation(position: str, kernel: str, bias: str) -> None:
    model = tiny_gpt(position=position, kernel=kernel, bias=bias, std=0.2)
    prompt_len, steps = 16, 64
    idx = torch.randint(0, 97, (2, prompt_len + steps), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = model.new_cache(2, prompt_len + steps)
        got = [model.prefill(idx[:, :prompt_len], cache=cache)]
        for t in range(prompt_len, prompt_len + steps):  # 64 decode steps
            got.append(model.decode_step(idx[:, t:t + 1], cache=cache))
    assert cache.pos == prompt_len + steps
    torch.testing.assert_close(torch.stack(got, 1), full[:, prompt_len - 1:], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("kernel,bias", [("math", "none"), ("sdpa", "none"), ("auto", "relative"),
                                         ("chunked", "alibi")])
def test_static_decode_step_equals_full_recomputation(position: str, kernel: str, bias: str) -> None:
    """decode_step_static (the fixed-shape step that compile=True compiles), run eagerly here, over a cache
    longer than the sequence (its tail stays masked): same logits as recomputing the whole prefix."""
    model = tiny_gpt(position=position, kernel=kernel, bias=bias, std=0.2)
    prompt_len, steps = 9, 30
    idx = torch.randint(0, 97, (2, prompt_len + steps), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 64)
        got = [model.prefill(idx[:, :prompt_len], cache=cache)]
        for t in range(prompt_len, prompt_len + steps):
            got.append(model.decode_step_static(idx[:, t:t + 1], cache=cache))
    assert cache.static and cache.pos == int(cache.position) == prompt_len + steps
    torch.testing.assert_close(torch.stack(got, 1), full[:, prompt_len - 1:], atol=ATOL, rtol=RTOL)


def test_static_decode_step_past_the_cache_is_an_error() -> None:
    model = tiny_gpt()
    cache = model.new_cache(1, 4)
    with torch.no_grad():
        model.prefill(torch.zeros(1, 4, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="sequence of 5 tokens exceeds block_size=96 or the cache's 4"):
            model.decode_step_static(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.slow
def test_compiled_generate_gives_the_same_greedy_tokens() -> None:
    """generate(compile=True): the torch.compile'd fixed-shape step, batch 2, prompts of two lengths, and a
    second call with another prompt length reusing the compiled step (same bucketed cache length)."""
    model = tiny_gpt(std=0.2, n_layer=1, position="rotary")
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    for extra in (0, 2):
        rows = [p + [1] * extra for p in prompts]
        want = generate(model, rows, temperature=0, max_new_tokens=20)
        assert generate(model, rows, temperature=0, max_new_tokens=20, compile=True) == want


@pytest.mark.parametrize("kernel", ["math", "sdpa"])
@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_chunked_prefill_equals_full_forward(kernel: str, position: str) -> None:
    model = tiny_gpt(kernel=kernel, position=position, std=0.2)
    idx = torch.randint(0, 97, (3, 80), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(3, 80)
        parts, start = [], 0
        for size in (16, 1, 30, 33):  # uneven chunks, one of them a single token
            parts.append(model(idx[:, start:start + size], cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=ATOL, rtol=RTOL)


def test_last_only_returns_last_position() -> None:
    model = tiny_gpt()
    idx = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:], atol=1e-6, rtol=0)


# --- learning -----------------------------------------------------------------------------------------

def test_initial_loss_is_log_vocab() -> None:
    torch.manual_seed(0)
    vocab = 512
    model = GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=4, n_embd=64))
    idx = torch.randint(0, vocab, (8, 65))
    with torch.no_grad():
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    assert abs(loss.item() - math.log(vocab)) < 0.1, (loss.item(), math.log(vocab))


def test_one_batch_overfits() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=64))
    idx = torch.randint(0, 64, (4, 33))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(200):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.1:
            break
    assert losses[-1] < 0.1, f"loss after {len(losses)} steps: {losses[-1]:.3f} (start {losses[0]:.3f})"


# --- configuration ------------------------------------------------------------------------------------

def test_config_errors_name_the_key_and_accepted_values() -> None:
    with pytest.raises(ValueError, match=r"n_embd=30 must be divisible by n_head=4"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match=r"GPTConfig\.norm='batchnorm'.*\['layernorm', 'rmsnorm'\]"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match=r"GPTConfig\.position='sinusoidal'.*\['learned', 'rotary', 'none'\]"):
        GPTConfig(position="sinusoidal")
    with pytest.raises(ValueError, match=r"GPTConfig\.n_layer must be a positive integer, got 0"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match=r"unknown gpt config key\(s\) \['n_layers'\].*'n_layer'"):
        build_model("gpt", {"n_layers": 2})


def test_sequence_longer_than_block_size_is_an_error() -> None:
    model = tiny_gpt(block_size=16)
    with pytest.raises(ValueError, match=r"sequence of 17 tokens exceeds block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache(1, 16)
    with torch.no_grad():
        model.prefill(torch.zeros(1, 16, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match=r"sequence of 17 tokens exceeds block_size=16"):
            model.decode_step(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"at least one token"):
        tiny_gpt()(torch.zeros(2, 0, dtype=torch.long))


def test_weight_tying_shares_storage() -> None:
    tied, untied = tiny_gpt(), tiny_gpt(tie_weights=False)
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert tied.num_params() == untied.num_params() - 97 * 32
    # tying survives a weight import and a state-dict round trip
    hf = hf_gpt2()
    imported = zoo_from_hf(hf)
    assert imported.lm_head.weight.data_ptr() == imported.transformer.wte.weight.data_ptr()
    fresh = GPT(imported.config)
    fresh.load_state_dict(imported.state_dict())
    assert fresh.lm_head.weight.data_ptr() == fresh.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(fresh.lm_head.weight, hf.lm_head.weight, atol=0, rtol=0)


@pytest.mark.parametrize("overrides", [
    dict(activation="swiglu"),
    dict(norm="rmsnorm"),
    dict(position="rotary"),
    dict(position="none", layer_bias=False),
    dict(activation="swiglu", norm="rmsnorm", position="rotary", layer_bias=False, tie_weights=False, dropout=0.1),
    dict(kernel="math"),
    dict(bias="relative", position="none", max_relative_position=8),
    dict(bias="relative+alibi", kernel="chunked", position="learned", max_relative_position=8),
])
def test_variants_run_forward_and_backward(overrides: dict) -> None:
    model = tiny_gpt(**overrides).train()
    idx = torch.randint(0, 97, (2, 20))
    logits = model(idx)
    assert logits.shape == (2, 20, 97)
    F.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
