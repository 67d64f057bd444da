"""optim=adamw|muon (zoo/training/optim.py) and module.schedule=cosine|wsd: parameter groups on every model
type, the Newton–Schulz precision, exact resume, LoRA adapters, pre-flight errors, schedule values."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from helpers import compose_train, loss_recorder, tiny_model_overrides
from omegaconf import OmegaConf, open_dict

from zoo.config import ConfigError
from zoo.models.base import build_model
from zoo.train import run
from zoo.training import optim as optim_module
from zoo.training.checkpoint import read_checkpoint
from zoo.training.config import AdamWConfig, MuonConfig
from zoo.training.lora import LoRAConfig, apply_lora
from zoo.training.module import lr_lambda
from zoo.training.optim import Muon, MuonWithAdamW, build_optimizer, orthogonalise, parameter_groups
from zoo.training.preflight import check_train_config

TINY = {
    "gpt": dict(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False),
    "music_transformer": dict(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16),
    "image_gpt": dict(vocab_size=17, num_patches=16, num_classes=10, n_layer=1, n_head=2, n_embd=16,
                      local_n_layer=1, local_n_head=2, local_n_embd=8, patch_tokens=4),
    "text2image": dict(vocab_size=17, num_patches=16, text_len=6, text_vocab_size=30, n_layer=1, n_head=2,
                       n_embd=16, local_n_layer=1, local_n_head=2, local_n_embd=8, patch_tokens=4),
}


def _group_of(groups: dict) -> dict[str, str]:
    return {name: key for key, members in groups.items() for name, _ in members}


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_every_trainable_parameter_is_in_exactly_one_group(model_type):
    model = build_model(model_type, TINY[model_type])
    trainable = dict(model.named_parameters())
    for name in ("adamw", "muon"):
        groups = parameter_groups(model, name)
        names = [n for members in groups.values() for n, _ in members]
        assert sorted(names) == sorted(trainable) and len(set(names)) == len(names), name
        config = AdamWConfig() if name == "adamw" else MuonConfig()
        opt = build_optimizer(model, config, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        held = [p for g in opt.param_groups for p in g["params"]]
        assert len(held) == len(trainable) and {id(p) for p in held} == {id(p) for p in trainable.values()}
    group = _group_of(parameter_groups(model, "muon"))
    for name, p in trainable.items():  # Muon: exactly the 2-D Linear weights inside the transformer blocks
        in_block = ".h." in name and name.endswith(".weight") and p.dim() == 2
        expected = "muon" if in_block else "adamw_decay" if p.dim() >= 2 else "adamw_no_decay"
        assert group[name] == expected, name


def test_named_parameters_land_in_the_documented_groups():
    gpt = _group_of(parameter_groups(build_model("gpt", TINY["gpt"]), "muon"))
    assert gpt["transformer.h.0.attn.c_attn.weight"] == gpt["transformer.h.1.mlp.c_proj.weight"] == "muon"
    assert gpt["transformer.wte.weight"] == gpt["transformer.wpe.weight"] == gpt["lm_head.weight"] == "adamw_decay"
    assert gpt["transformer.ln_f.weight"] == gpt["transformer.h.0.attn.c_attn.bias"] == "adamw_no_decay"
    music = _group_of(parameter_groups(build_model("music_transformer", TINY["music_transformer"]), "muon"))
    assert music["transformer.h.0.attn.er"] == "adamw_decay"  # the relative position table, not a hidden matrix
    image = _group_of(parameter_groups(build_model("image_gpt", TINY["image_gpt"]), "muon"))
    for table in ("global_model.cls_emb.weight", "global_model.patch_emb.weight", "global_model.wpe.weight",
                  "local_model.wte.weight", "local_model.lm_head.weight"):
        assert image[table] == "adamw_decay", table
    assert image["local_model.h.0.mlp.c_fc.weight"] == "muon"


def test_lora_adapters_train_with_adamw_and_nothing_else_moves():
    model = apply_lora(build_model("gpt", TINY["gpt"]), LoRAConfig(rank=2))
    groups = parameter_groups(model, "muon")
    assert set(groups) == {"adamw_decay"} and all("lora_" in n for n, _ in groups["adamw_decay"])
    opt = build_optimizer(model, MuonConfig(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    assert isinstance(opt, MuonWithAdamW) and not any(g["muon"] for g in opt.param_groups)
    before = copy.deepcopy(model.state_dict())
    model(torch.randint(0, 20, (2, 8))).square().mean().backward()
    opt.step()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    # B starts at zero, so A's first gradient is zero: only B moves, by AdamW's first step (lr · sign(grad))
    assert moved == {k for k in before if "lora_B" in k}
    b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    assert 0.009 < b.abs().max() <= 1e-2 * (1 + 1e-6)  # Adam's first step is at most lr per entry


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_float32_orthogonalisation_gives_singular_values_near_one(shape):
    torch.manual_seed(0)
    k = min(shape)  # g = U S V^T with singular values over two decades (0.1 .. 10)
    u, v = (torch.linalg.qr(torch.randn(n, k, dtype=torch.float64))[0] for n in shape)
    g = u @ torch.diag(torch.logspace(-1, 1, k, dtype=torch.float64)) @ v.T
    o = orthogonalise(g.float(), (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    assert o.dtype == torch.float32 and o.shape == g.shape
    s = torch.linalg.svdvals(o.double())
    assert s.min() > 0.6 and s.max() < 1.25, s  # the quintic's band (~0.7..1.2), not exactly 1 (by design)
    cosine = (o.double() * (u @ v.T)).sum() / (o.double().norm() * (u @ v.T).norm())
    assert cosine > 0.97  # the same singular vectors: it is U S' V^T of g


def _muon_steps(opt_factory, steps: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(24, 8)), torch.nn.Parameter(torch.randn(8, 24))]
    opt = opt_factory(params)
    for i in range(steps):
        torch.manual_seed(100 + i)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach() for p in params]


def test_muon_step_equals_torch_muon_in_bf16_and_runs_in_the_dtype_asked_for():
    kwargs = dict(lr=0.02, momentum=0.95, weight_decay=0.01)
    torch_muon = _muon_steps(lambda ps: torch.optim.Muon(ps, **kwargs))
    bf16 = _muon_steps(lambda ps: Muon(ps, ns_dtype="bfloat16", **kwargs))
    fp32 = _muon_steps(lambda ps: Muon(ps, ns_dtype="float32", **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(bf16, torch_muon))  # torch's update, bit for bit
    assert not any(torch.equal(a, b) for a, b in zip(fp32, torch_muon))  # really another precision...
    for a, b in zip(fp32, torch_muon):  # ...of the same update
        torch.testing.assert_close(a, b, rtol=0, atol=0.02 * 3 * 0.05)


def test_auto_ns_dtype_follows_the_device(monkeypatch):
    assert optim_module.resolve_ns_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(optim_module, "cpu_has_fast_bf16", lambda: False)
    assert optim_module.resolve_ns_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(optim_module, "cpu_has_fast_bf16", lambda: True)
    assert optim_module.resolve_ns_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert optim_module.resolve_ns_dtype("float32", torch.device("cuda")) == torch.float32


def test_muon_with_adamw_state_dict_round_trips_into_a_fresh_optimizer():
    def make():
        torch.manual_seed(0)
        model = build_model("gpt", TINY["gpt"])
        return model, build_optimizer(model, MuonConfig(ns_dtype="float32"), lr=1e-2, betas=(0.9, 0.95),
                                      weight_decay=0.1)

    def step(model, opt, seed):
        torch.manual_seed(seed)
        model(torch.randint(0, 20, (2, 8))).square().mean().backward()
        opt.step()
        opt.zero_grad()

    a, opt_a = make()
    for seed in range(2):
        step(a, opt_a, seed)
    b, opt_b = make()
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    state = opt_b.state_dict()["state"]
    assert any("momentum_buffer" in s for s in state.values()) and any("exp_avg" in s for s in state.values())
    step(a, opt_a, 7)
    step(b, opt_b, 7)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


# ---------------------------------------------------------------------------------------------- schedules
def test_wsd_schedule_values_at_key_steps():
    lr = lambda step, **kw: lr_lambda(step, warmup_steps=10, max_steps=100, min_lr_ratio=0.1, **kw)
    wsd = dict(schedule="wsd", decay_fraction=0.2)
    assert lr(0, **wsd) == pytest.approx(0.1) and lr(9, **wsd) == pytest.approx(1.0)  # linear warmup
    assert lr(10, **wsd) == lr(50, **wsd) == lr(80, **wsd) == 1.0  # stable until the last 20 steps
    assert lr(90, **wsd) == pytest.approx(0.55) and lr(100, **wsd) == pytest.approx(0.1)  # linear decay
    assert lr(150, **wsd) == pytest.approx(0.1)
    assert lr(40, schedule="wsd", decay_fraction=1.0) == pytest.approx(1 - 0.9 * 0.4)
    # cosine (the default) as before: half way through the decay is the mean of 1 and min_lr_ratio
    assert lr(55) == pytest.approx(0.55) and lr(100) == pytest.approx(0.1) and lr(10) == 1.0
    assert lr(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 20 / 90)))


def test_wsd_rates_before_the_decay_do_not_depend_on_max_steps():
    for step in range(0, 80):
        rates = {lr_lambda(step, warmup_steps=10, max_steps=n, min_lr_ratio=0.0, schedule="wsd")
                 for n in (100, 200, 1000)}
        assert len(rates) == 1, step


class _Rates(L.Callback):
    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step + 1] = [g["lr"] for g in trainer.optimizers[0].param_groups]


def _muon_run(tmp_path, name, *extra):
    return compose_train([*tiny_model_overrides("gpt", tmp_path), "optim=muon", "optim.ns_dtype=float32",
                          "module.warmup_steps=2", "module.schedule=wsd", "trainer.max_steps=8",
                          "checkpoint.every_n_steps=4", "trainer.val_check_interval=4", f"run_dir={tmp_path / name}",
                          *extra])


def test_a_muon_run_resumes_bit_identically_and_a_wsd_run_extends(tmp_path):
    """Muon + wsd, crashed after its step-4 checkpoint: resumed, the losses, rates and final weights are
    the uninterrupted run's exactly. A second copy resumed with max_steps raised (8 -> 12) takes the rates
    of an uninterrupted 12-step run: its stable steps already taken are unchanged, its decay moved."""
    full, full_rates = loss_recorder(), _Rates()
    summary = run(_muon_run(tmp_path, "full"), extra_callbacks=[full, full_rates])
    for name in ("resumed", "extended"):
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(_muon_run(tmp_path, name), extra_callbacks=[loss_recorder(crash_at=6)])
    resumed, rates = loss_recorder(), _Rates()
    run(_muon_run(tmp_path, "resumed"), extra_callbacks=[resumed, rates])
    assert sorted(resumed.losses) == [5, 6, 7, 8]
    assert {s: resumed.losses[s] for s in resumed.losses} == {s: full.losses[s] for s in resumed.losses}
    assert {s: full_rates.lrs[s] for s in rates.lrs} == rates.lrs
    ref, got = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (tmp_path / "full", tmp_path / "resumed"))
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    assert all(torch.equal(v, got["state_dict"][k]) for k, v in ref["state_dict"].items())
    groups = ref["optimizer_states"][0]["param_groups"]
    assert [g["muon"] for g in groups] == [True, False, False] and groups[0]["lr"] < 0.02  # decayed
    assert any("momentum_buffer" in s for s in ref["optimizer_states"][0]["state"].values())

    long_rates, extended_rates = _Rates(), _Rates()
    run(_muon_run(tmp_path, "long", "trainer.max_steps=12"), extra_callbacks=[long_rates])
    run(_muon_run(tmp_path, "extended", "trainer.max_steps=12"), extra_callbacks=[extended_rates])
    assert {s: full_rates.lrs[s] for s in range(1, 5)} == {s: long_rates.lrs[s] for s in range(1, 5)}
    assert extended_rates.lrs == {s: long_rates.lrs[s] for s in range(5, 13)}
    assert extended_rates.lrs[8] == long_rates.lrs[4]  # still stable at step 8, where the 8-step run decayed

    # a LoRA fine-tune of this run's weights with optim=muon: the adapters alone, all with AdamW
    tuned = run(compose_train([*tiny_model_overrides("gpt", tmp_path), "optim=muon", "lora.rank=2",
                               f"init_from={summary['checkpoint']}", "trainer.max_steps=2",
                               f"run_dir={tmp_path / 'lora'}"]))
    groups = read_checkpoint(tuned["checkpoint"])["optimizer_states"][0]["param_groups"]
    assert [g["muon"] for g in groups] == [False] and len(groups[0]["params"]) == 2 * 4 * 2  # layers, Linears, A+B


# ---------------------------------------------------------------------------------------------- configs
def _checked(*overrides: str) -> None:
    check_train_config(OmegaConf.to_container(compose_train(list(overrides)), resolve=True))


@pytest.mark.parametrize(("override", "message"), [
    ("optim.name=sgd", "optim.name='sgd' is not accepted; choose one of ['adamw', 'muon']"),
    ("optim.ns_dtype=float16", "optim.ns_dtype='float16' is not accepted; choose one of ['auto', 'float32', "
                               "'bfloat16']"),
    ("module.schedule=linear", "module.schedule='linear' is not accepted; choose one of ['cosine', 'wsd']"),
    ("module.decay_fraction=0", "module.decay_fraction=0 must be in (0, 1]"),
    ("module.decay_fraction=1.5", "module.decay_fraction=1.5 must be in (0, 1]"),
    ("optim.ns_steps=0", "optim.ns_steps=0 must be in [1, 99]"),
])
def test_bad_optimizer_and_schedule_values_stop_the_run_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        _checked("optim=muon", override)
    assert message in str(e.value)


def test_configs_without_optim_or_schedule_keys_still_check_and_train_with_adamw(tmp_path):
    cfg = compose_train(tiny_model_overrides("gpt", tmp_path))
    assert cfg.optim.name == "adamw" and cfg.module.schedule == "cosine"
    with open_dict(cfg):  # a config saved before the keys existed
        del cfg["optim"], cfg.module["schedule"], cfg.module["decay_fraction"]
    check_train_config(OmegaConf.to_container(cfg, resolve=True))
    _checked("optim=muon", "module.schedule=wsd", "module.decay_fraction=1.0")


# ---------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_muon_on_two_processes_follows_the_one_process_curve(strategy, tmp_path):
    """gloo, 2 processes × batch 4 against 1 process × batch 8. ddp: every rank orthogonalises the same
    all-reduced gradient; fsdp: each 2-D shard (a DTensor) is gathered, orthogonalised whole, and each
    rank keeps its rows (zoo.training.optim.orthogonalise)."""
    from test_scale import assert_same_curve, one_process, two_process_cli

    muon = ("optim=muon", "optim.ns_dtype=float32", "trainer.max_steps=3")
    one_process("gpt", tmp_path, tmp_path / "one", muon)
    two_process_cli("gpt", strategy, tmp_path, tmp_path / "two", *muon)
    print(f"muon {strategy} vs one process: max relative loss difference "
          f"{assert_same_curve(tmp_path / 'one', tmp_path / 'two'):.2e}")


def test_logged_learning_rates_name_each_side_under_muon():
    """`lr` alone under optim=muon showed Muon's rate only; lr_muon and lr_adamw name both sides."""
    from zoo.training.optim import learning_rates

    w, b = torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4))
    both = MuonWithAdamW([{"params": [w]}], [{"params": [b]}], muon={"lr": 0.02}, adamw={"lr": 3e-3})
    assert learning_rates(both) == {"lr": 0.02, "lr_muon": 0.02, "lr_adamw": 3e-3}
    adamw_only = MuonWithAdamW([], [{"params": [b]}], muon={"lr": 0.02}, adamw={"lr": 3e-3})  # LoRA: adapters only
    assert learning_rates(adamw_only) == {"lr": 3e-3, "lr_adamw": 3e-3}
    assert learning_rates(torch.optim.AdamW([w], lr=1e-3)) == {"lr": 1e-3}  # optim=adamw: as before
