"""Issue 17's attention axes: grouped-query / multi-query attention (`n_kv_head`), sliding-window attention with
a rolling KV cache (`window`), ALiBi (`bias="alibi"`). The oracle style of test_attention_core.py: float64,
every kernel × position scheme × axis equals the math kernel (forward and gradients), cached == recomputed,
causality; then the model level: rolling-cache generation far past the window with flat memory, configs,
FSDP, export → load."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import compose_train, kernel_variants, tiny_model_overrides
from omegaconf import OmegaConf

from zoo.core.attention import MultiHeadAttention
from zoo.core.cache import KVCache
from zoo.core.positions import AlibiPositionBias, RelativePositionBias, RotaryEmbedding, SumPositionBias, alibi_slopes
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.music_transformer import MusicTransformerConfig
from zoo.sampling import generate

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)

KERNELS = kernel_variants()
POSITIONS = ["none", "rotary", "relative", "alibi", "relative+alibi"]
AXES = {"gqa": dict(n_kv_head=2), "mqa+window": dict(n_kv_head=1, window=5), "window": dict(window=5)}
ROTARY = RotaryEmbedding(8, 64)


def supported(kernel: str, position: str) -> bool:
    return kernel != "chunked-matmul-path" or "relative" in position  # the fused path needs a BlockwiseBias


def provider(position: str):
    return {"relative": RelativePositionBias(6), "alibi": AlibiPositionBias(),
            "relative+alibi": SumPositionBias(RelativePositionBias(6), AlibiPositionBias())}.get(position)


def build(kernel: str, position: str, axes: dict, seed: int = 0) -> tuple[MultiHeadAttention, RotaryEmbedding | None]:
    torch.manual_seed(seed)
    m = MultiHeadAttention(32, 4, kernel=KERNELS[kernel], position_bias=provider(position), **axes).to(F64).eval()
    return m, (ROTARY if position == "rotary" else None)


CASES = [(k, p, a) for k in KERNELS for p in POSITIONS for a in AXES if supported(k, p)]


@pytest.mark.parametrize(("kernel", "position", "axes"), CASES)
def test_every_kernel_equals_math_forward_and_gradients(kernel, position, axes):
    m, rot = build(kernel, position, AXES[axes])
    oracle, _ = build("math", position, AXES[axes])
    oracle.load_state_dict(m.state_dict())
    x = torch.randn(2, 13, 32, dtype=F64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    got, want = m(x, rotary=rot), oracle(x, rotary=rot)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, [x, *m.parameters()], g)
    want_grads = torch.autograd.grad(want, [x, *oracle.parameters()], g)
    for name, a, b in zip(["x"] + [n for n, _ in m.named_parameters()], got_grads, want_grads):
        torch.testing.assert_close(a, b, **TOL, msg=lambda msg, name=name: f"d{name}: {msg}")


def reference(m: MultiHeadAttention, x: torch.Tensor, rot) -> torch.Tensor:
    """The definition, written out: per-query softmax over keys in [p - window + 1, p] plus the position
    bias, full heads (k, v repeated per group), from the module's own projections. For the window and GQA
    axes this does not go through the code under test (except the position providers' bias_at)."""
    b, t, c = x.shape
    h, hkv, d = m.n_head, m.n_kv_head, m.head_dim
    q, k, v = m.c_attn(x).split([c, hkv * d, hkv * d], dim=2)
    q, k, v = (z.view(b, t, -1, d).transpose(1, 2) for z in (q, k, v))
    if rot is not None:
        q, k = rot(q, 0), rot(k, 0)
    k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)  # (B, H, T, D)
    logits = q @ k.transpose(-2, -1) / math.sqrt(d)
    if m.position_bias is not None:
        logits = logits + m.position_bias.bias_at(m, q, torch.arange(t), t)
    dist = torch.arange(t).unsqueeze(1) - torch.arange(t)
    allowed = (dist >= 0) & (dist < (m.window or t + 1))
    y = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v  # (B, H, T, D)
    return m.c_proj(y.transpose(1, 2).reshape(b, t, c))


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("axes", list(AXES))
def test_math_kernel_is_the_definition(position, axes):
    m, rot = build("math", position, AXES[axes])
    x = torch.randn(2, 13, 32, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(m(x, rotary=rot), reference(m, x, rot), **TOL)


@pytest.mark.parametrize(("kernel", "position", "axes"), CASES)
def test_cached_and_static_decoding_equal_full_recomputation(kernel, position, axes):
    """Prefill, single steps, chunks, then the static cache: the same outputs as one full pass. The cache
    holds n_kv_head heads."""
    m, rot = build(kernel, position, AXES[axes], seed=2)
    x = torch.randn(2, 20, 32, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = m(x, rotary=rot)
        cache = KVCache(1, 2, m.n_kv_head, 24, 8, device="cpu", dtype=F64)  # 24 <= 2 · window: not rolling
        parts, start = [], 0
        steps = [(5, False), (1, False), (1, False), (3, False), (1, True), (2, True), (1, True), (6, True)]
        for size, static in steps:
            if static:
                cache.make_static()
            parts.append(m(x[:, start:start + size], cache=cache, rotary=rot))
            cache.advance(size)
            start += size
    assert cache.k[0].shape[1] == m.n_kv_head
    torch.testing.assert_close(torch.cat(parts, 1), full, **TOL)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("kernel", ["math", "sdpa", "chunked"])
def test_rolling_cache_equals_windowed_recomputation_with_constant_memory(kernel, position):
    """window 4, 70 positions (> 10 windows) through every way the rolling cache stores: appends, shifts to
    the front, a chunk longer than its buffer. Same outputs as the full windowed pass; the buffers are never
    reallocated."""
    m, rot = build(kernel, position, dict(n_kv_head=2, window=4), seed=5)
    rot = RotaryEmbedding(8, 16) if position == "rotary" else None  # a table shorter than the sequence
    x = torch.randn(1, 70, 32, dtype=F64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = m(x, rotary=rot)
        cache = KVCache(1, 1, 2, 10_000, 8, device="cpu", dtype=F64, window=4)
        assert cache.window == 4 and cache.k[0].shape[2] == 8  # 2 · window, however long max_len
        pointers, nbytes = [b.data_ptr() for b in cache.k + cache.v], cache.nbytes
        parts, start = [], 0
        for size in [3, 1, 1, 2, 11, 1, 5, *[1] * 30, 7, *[1] * 9]:
            parts.append(m(x[:, start:start + size], cache=cache, rotary=rot))
            cache.advance(size)
            start += size
            assert cache.nbytes == nbytes and [b.data_ptr() for b in cache.k + cache.v] == pointers
    assert start == 70
    torch.testing.assert_close(torch.cat(parts, 1), full, **TOL)


@pytest.mark.parametrize(("kernel", "position", "axes"), CASES[::3])
def test_future_inputs_do_not_change_past_outputs(kernel, position, axes):
    m, rot = build(kernel, position, AXES[axes], seed=4)
    x = torch.randn(1, 16, 32, dtype=F64, generator=torch.Generator().manual_seed(5))
    x2 = x.clone()
    x2[:, 9:] += 1.0
    with torch.no_grad():
        y, y2 = m(x, rotary=rot), m(x2, rotary=rot)
    torch.testing.assert_close(y[:, :9], y2[:, :9], rtol=0, atol=1e-13)
    assert (y[:, 9:] - y2[:, 9:]).abs().amax() > 1e-3


def test_window_hides_keys_beyond_it():
    m, _ = build("sdpa", "none", dict(window=3))
    x = torch.randn(1, 12, 32, dtype=F64, generator=torch.Generator().manual_seed(7))
    x2 = x.clone()
    x2[:, 4] += 1.0  # position 4 is visible to queries 4, 5, 6 only
    with torch.no_grad():
        d = (m(x) - m(x2)).abs().amax(-1)[0]
    assert (d[:4] == 0).all() and (d[4:7] > 1e-3).all() and (d[7:] == 0).all()


def test_alibi_slopes_are_press_et_al():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)], dtype=F64))
    # non-power-of-2: the 4-head slopes, then every other slope of 8 heads (the paper's reference code)
    want = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(want, dtype=F64))
    m = MultiHeadAttention(32, 4, position_bias=AlibiPositionBias())
    assert "alibi_slopes" not in m.state_dict()  # nothing learned, no checkpoint key


def tiny_gpt(**fields) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=29, block_size=16, n_layer=2, n_head=4, n_embd=32) | fields
    return GPT(GPTConfig(**cfg)).to(F64).eval()


@pytest.mark.parametrize("fields", [dict(position="rotary"), dict(position="none", bias="alibi"),
                                    dict(position="none", bias="relative", max_relative_position=8),
                                    dict(position="none", bias="relative+alibi", n_kv_head=1)])
def test_generation_runs_10x_the_window_with_flat_cache_memory(fields, monkeypatch):
    """window 6, 80 new tokens after a 3-token prompt: the logits of every decoded step equal the full
    windowed recomputation of the whole sequence, the cache's buffers stay the same 2 · window positions,
    and `generate` with the cache picks the same tokens as `generate` recomputing every step."""
    fields = dict(fields)
    model = tiny_gpt(window=6, n_kv_head=fields.pop("n_kv_head", 2), **fields)
    assert model.max_len > 10**9  # no context limit
    torch.manual_seed(1)
    seq = torch.randint(0, 29, (2, 83))
    with torch.no_grad():
        full = model(seq)  # (B, 83, V), one pass far past block_size: the window bounds every query
        cache = model.new_cache(2, 10**6)
        nbytes = cache.nbytes
        steps = [model.prefill(seq[:, :3], cache=cache)]
        for i in range(3, 83):
            steps.append(model.decode_step(seq[:, i:i + 1], cache=cache))
            assert cache.nbytes == nbytes
    assert nbytes == 2 * 2 * 2 * model.config.n_kv_head * 12 * 8 * 8  # layers · (k, v) · B · Hkv · 2W · D · bytes
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], rtol=1e-9, atol=1e-9)

    sizes = []
    new_cache = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda *a, **k: sizes.append(new_cache(*a, **k)) or sizes[-1])
    cached = generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=60,
                      on_token=lambda step, tok: sizes.append(sizes[0].nbytes))
    assert len(set(sizes[1:])) == 1 and sizes[1] == sizes[0].nbytes
    assert cached == generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=60, use_cache=False)


def test_gqa_cache_is_smaller_and_default_layout_unchanged():
    full, mqa, gqa = tiny_gpt(), tiny_gpt(n_kv_head=1), tiny_gpt(n_kv_head=2)
    assert full.new_cache(1).nbytes == 4 * mqa.new_cache(1).nbytes == 2 * gqa.new_cache(1).nbytes
    assert full.transformer.h[0].attn.c_attn.weight.shape == (96, 32)  # 3C, as before
    assert gqa.transformer.h[0].attn.c_attn.weight.shape == (32 + 2 * 2 * 8, 32)
    assert list(full.state_dict()) == list(gqa.state_dict())  # same keys; only c_attn's shape differs
    assert GPTConfig().n_kv_head == GPTConfig().n_head and GPTConfig().window is None


def test_config_errors_say_what_is_wrong_and_what_to_use():
    with pytest.raises(ValueError, match=r"n_kv_head=3 must divide n_head=4; accepted: \[1, 2, 4\]"):
        GPTConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match=r"window=8 with position='learned'.*past block_size.*'rotary', or 'none' "
                                         r"with a bias"):
        GPTConfig(window=8)
    with pytest.raises(ValueError, match=r"window must be a positive integer, got 0"):
        GPTConfig(window=0, position="rotary")
    with pytest.raises(ValueError, match=r"compile=True.*window"):
        tiny_gpt(window=4, position="none", bias="alibi").decode_step_static(torch.zeros(1, 1, dtype=torch.long),
                                                                cache=KVCache(2, 1, 4, 8, 8, "cpu", F64))


@pytest.mark.parametrize("model", ["gpt", "music_transformer"])
def test_hydra_composes_the_keys_and_export_load_round_trips(model, tmp_path):
    """`model.n_kv_head=1 model.window=8` with ALiBi (gpt: `model.position=none model.bias=alibi`; music_transformer:
    `model.bias=relative+alibi`) composes, trains 2 steps, exports and loads back with the same logits."""
    import zoo
    from zoo.hub.export import export
    from zoo.train import run

    bias = "alibi" if model == "gpt" else "relative+alibi"
    keys = ["model.n_kv_head=1", "model.window=8", "model.position=none", f"model.bias={bias}"]
    cfg = compose_train([*tiny_model_overrides(model, tmp_path), *keys, "trainer.max_steps=2",
                         f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}"])
    assert OmegaConf.to_container(cfg.model)["n_kv_head"] == 1
    run(cfg)
    ref = zoo.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    c = ref.model.config
    assert (c.n_kv_head, c.window, c.position, c.bias) == (1, 8, "none", bias)
    assert isinstance(c, MusicTransformerConfig) == (model == "music_transformer")
    loaded = zoo.load(export(ref, tmp_path / "export", dtype="float32"))
    x = torch.randint(0, ref.codec.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))  # 40 > block
    assert torch.equal(loaded(x), ref(x))
    assert loaded.model.transformer.h[0].attn.c_attn.weight.shape[0] == 32 + 2 * 16


def test_gqa_under_fsdp_keeps_loss_gradients_and_keys(tmp_path):
    """n_kv_head=1 under FSDP2 on a 1-process gloo group: the loss and every gradient of the unsharded model."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    from zoo.training.builders import build_data, build_module

    def tiny(overrides):
        cfg = OmegaConf.to_container(compose_train([*tiny_model_overrides("gpt", tmp_path), *overrides]),
                                     resolve=True)
        dm = build_data(cfg["data"])
        dm.prepare_data()
        dm.setup("fit")
        torch.manual_seed(0)
        return build_module(cfg["model"], cfg["module"], codec=dm.codec), next(iter(dm.train_dataloader()))

    def loss_and_grads(module, batch):
        module.zero_grad(set_to_none=True)
        loss, _ = module.loss(batch)
        loss.backward()
        full = lambda g: g.full_tensor() if hasattr(g, "full_tensor") else g  # noqa: E731 - FSDP2 grads are DTensors
        return loss.detach(), {n: full(p.grad) for n, p in module.named_parameters() if p.grad is not None}

    keys = ("model.n_kv_head=1", "model.window=8", "model.position=rotary")
    plain, batch = tiny(keys)
    ref_loss, ref_grads = loss_and_grads(plain.train(), batch)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        sharded, _ = tiny(keys)
        sharded._device_mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        sharded.configure_model()
        assert isinstance(sharded.model, FSDPModule) and list(sharded.state_dict()) == list(plain.state_dict())
        loss, grads = loss_and_grads(sharded.train(), batch)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    finally:
        dist.destroy_process_group()
