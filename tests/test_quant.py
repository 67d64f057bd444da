"""Weight-only quantisation (zoo.core.quant, issue 25): quantised logits stay close to fp32 for every member, cached
decoding equals recomputation, and zoo.load / zoo-sample / zoo-serve take quantize=int8."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.core.quant import Int4Linear, Int8Linear, eager_int8, quantize_

# one shipped checkpoint per member (text, image, music with the relative bias, text-to-image)
MEMBERS = ["gpt-pydoc", "image-gpt-digits", "music-transformer-bach", "text2image-digits"]
# relative error of the logits, ||quantised - fp32|| / ||fp32||, on 2 x 24 tokens: measured 0.7-1.2 % (int8),
# 11-18 % (int4: these models are 64-256 wide, so an int4 group is a whole row) on these checkpoints; the bounds
# leave room, and a wrong scale, zero point or layout gives 50 % to 100 %+.
TOLERANCE = {"int8": 0.03, "int4": 0.3}
# int8 computes in fp32 (measured differences <= 2e-6 of the largest logit); int4's kernel takes bf16 activations,
# rounded differently for products of different row counts (measured <= 0.4 % of the largest logit).
CACHE_TOLERANCE = {"int8": {"atol": 2e-4, "rtol": 2e-4}, "int4": {"atol": 5e-2, "rtol": 1e-2}}


def _inputs(m: zoo.hub.Pretrained, t: int = 24) -> tuple[torch.Tensor, torch.Tensor | None]:
    vocab = m.model.lm_head.out_features if hasattr(m.model, "lm_head") else 64
    vocab = getattr(getattr(m.model, "config", None), "vocab_size", vocab)
    idx = torch.randint(0, vocab, (2, t), generator=torch.Generator().manual_seed(0))
    return idx, m.model.null_condition(2)


@pytest.fixture(scope="module")
def loaded():
    return {name: zoo.load(name) for name in MEMBERS}


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("name", MEMBERS)
def test_quantized_logits_are_close_to_fp32(loaded, name, scheme):
    m = loaded[name]
    idx, cond = _inputs(m)
    ref = m(idx, cond=cond)
    q = zoo.load(name, quantize=scheme)
    assert q.quantize == scheme and f"quantize={scheme!r}" in repr(q)
    assert not any(type(x) is nn.Linear for x in q.model.modules())  # every Linear was replaced
    assert any(isinstance(x, Int4Linear if scheme == "int4" else Int8Linear) for x in q.model.modules())
    got = q(idx, cond=cond)
    finite = ref.isfinite()  # text-to-image masks the logits of the other stream's tokens with -inf
    assert torch.equal(finite, got.isfinite())
    err = ((got - ref)[finite].norm() / ref[finite].norm()).item()
    assert 0 < err < TOLERANCE[scheme], err  # 0 would mean nothing was quantised


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("name", MEMBERS)
def test_cached_decoding_of_a_quantized_model_equals_its_full_forward(name, scheme):
    """One token at a time through the KV cache (int8: the fused kernel, two rows) against recomputing the whole
    prefix without a cache (prefixes of 9+ tokens, 18+ rows: int8's eager path): the same products, summed in
    another order."""
    m = zoo.load(name, quantize=scheme)
    idx, cond = _inputs(m, t=14)
    with torch.no_grad():
        cache = m.model.new_cache(2)
        m.model.prefill(idx[:, :9], cond=cond, cache=cache)
        for t in range(9, 14):
            step = m.model.decode_step(idx[:, t:t + 1], cache=cache, cond=cond)
            full = m.model.prefill(idx[:, :t + 1], cond=cond)  # (B, V): the next-token logits after t + 1 tokens
            torch.testing.assert_close(step, full, **CACHE_TOLERANCE[scheme], msg=f"{name} {scheme} position {t}")


def test_fused_int8_kernel_equals_the_eager_product():
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    q = Int8Linear(lin)
    x = torch.randn(3, 96)
    fused = q(x)
    with eager_int8(q):
        eager = q(x)
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager, x @ q.dequantized().T + lin.bias, atol=1e-5, rtol=1e-5)
    assert (q.dequantized() - lin.weight).abs().max() <= q.scale.max() / 2 + 1e-7  # rounding to the nearest step


def test_unknown_scheme_is_refused_naming_the_accepted_ones():
    with pytest.raises(ValueError, match=r"quantize='int3'.*'int8', 'int4'"):
        zoo.load("gpt-pydoc", quantize="int3")
    with pytest.raises(ValueError, match="accepted"):
        quantize_(nn.Sequential(nn.Linear(4, 4)), "fp8")


def test_int8_validation_loss_within_one_percent_of_the_card():
    """The shipped checkpoint's card metric is its fp32 validation loss (re-measured in test_hub.py)."""
    from zoo.hub.export import measure_loss

    name = "image-gpt-digits"
    card = zoo.hub.REGISTRY[name].card["metric_value"]
    loss = measure_loss(zoo.load(name, quantize="int8"))
    assert abs(loss / card - 1) < 0.01, (loss, card)


def test_zoo_sample_quantize_int8(monkeypatch, capsys):
    import sys

    from zoo.sample import main

    monkeypatch.setattr(sys, "argv", ["zoo-sample", "checkpoint=gpt-pydoc", "quantize=int8", "prompt=def ",
                                      "max_new_tokens=8", "seed=0", "stream=false"])
    main()
    out = capsys.readouterr().out
    assert "=== sample 0 (prompt 'def')" in out and len(out.split("\n", 1)[1].strip()) > len("def")


def test_zoo_serve_quantize_int8_shows_in_models():
    pytest.importorskip("fastapi", reason="zoo-serve needs the [serve] extra")
    from fastapi.testclient import TestClient

    from zoo.serve import ServeSettings, create_app, load_models

    models = load_models(["gpt-pydoc"], quantize="int8")
    with TestClient(create_app(models, ServeSettings(timeout_s=60))) as c:
        listed = c.get("/v1/models").json()["data"]  # OpenAI's list shape, zoo's fields in each entry
        assert [m["quantize"] for m in listed] == ["int8"]
        r = c.post("/v1/generate", json={"model": "gpt-pydoc", "prompt": "def ", "max_new_tokens": 6, "seed": 0})
        assert r.status_code == 200, r.text
