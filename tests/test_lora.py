"""LoRA (zoo.training.lora, via peft): adapters only train, merging keeps outputs and the base model's
keys, cached decoding equals recomputation, LoRA runs resume and distribute."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from helpers import compose_train, loss_recorder, tiny_model_overrides

from zoo.core.layers import linear_weights_in_out
from zoo.models.base import build_model
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
from zoo.train import run
from zoo.training.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from zoo.training.lora import (
    LoRAConfig,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    unload_lora,
)

pytest.importorskip("peft")


def tiny(model: str = "gpt") -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "music_transformer":  # relative attention: the position bias path
        config = MusicTransformerConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
        return MusicTransformer(config).eval()
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def trained_adapters(model: torch.nn.Module, rank: int = 4) -> torch.nn.Module:
    """`model` with LoRA adapters whose B is nonzero (a fresh B is zero: the adapter would add nothing)."""
    apply_lora(model, LoRAConfig(rank=rank))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return model.eval()


def test_rank_0_leaves_the_model_as_it_is():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_lora(model, LoRAConfig(rank=0)) is model
    assert model.state_dict().keys() == before.keys()
    assert all(p.requires_grad for p in model.parameters())
    idx = torch.randint(0, 40, (2, 8))
    torch.testing.assert_close(model(idx), tiny()(idx), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["gpt", "music_transformer"])
def test_only_the_adapters_train_and_a_fresh_adapter_changes_nothing(model_type):
    base, model = tiny(model_type), apply_lora(tiny(model_type), LoRAConfig(rank=4))
    idx = torch.randint(0, 40, (2, 8))
    torch.testing.assert_close(model(idx), base(idx), rtol=0, atol=0)  # B = 0 at the start
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # rank 4 on c_attn, attn.c_proj, c_fc, mlp.c_proj of 2 layers (n_embd 32, MLP 128)
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) == 2 * 4 * (
        (32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))


@pytest.mark.parametrize("model_type", ["gpt", "music_transformer"])
def test_merged_model_equals_the_adapted_one_with_the_base_keys(model_type):
    base_keys = list(tiny(model_type).state_dict())
    model = trained_adapters(tiny(model_type))
    idx = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        adapted = model(idx)
        assert not torch.allclose(adapted, tiny(model_type)(idx), atol=1e-3)  # the adapters do something
        merged = merge_lora(model)
        torch.testing.assert_close(merged(idx), adapted, rtol=1e-5, atol=1e-5)
    assert list(merged.state_dict()) == base_keys
    assert not any(type(m).__module__.startswith("peft") for m in merged.modules())


def test_adapter_state_dict_round_trips_and_unload_gives_the_base_back():
    model = trained_adapters(tiny())
    state = lora_state_dict(model)
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    other = apply_lora(tiny(), LoRAConfig(rank=4)).eval()
    load_lora_state_dict(other, state)
    idx = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(other(idx), model(idx), rtol=0, atol=0)
        torch.testing.assert_close(unload_lora(other)(idx), tiny()(idx), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["gpt", "music_transformer"])
@pytest.mark.parametrize("fast_path", [False, True])
def test_cached_decoding_with_lora_equals_full_recomputation(model_type, fast_path):
    """Token by token with the KV cache (and the CPU decode path's (in, out) weight copies) == one forward."""
    model = trained_adapters(tiny(model_type))
    idx = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = model.new_cache(2)
        with linear_weights_in_out(model) if fast_path else contextlib.nullcontext():
            steps = [model.decode_step(idx[:, t:t + 1], cache=cache) for t in range(idx.shape[1])]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-5)


def _lora_run(tmp_path, name, *extra):
    return [*tiny_model_overrides("gpt", tmp_path), "lora.rank=4", "lora.alpha=8", "trainer.max_steps=8",
            "checkpoint.every_n_steps=4", "trainer.val_check_interval=4", f"run_dir={tmp_path / name}", *extra]


def test_a_lora_run_resumes_on_its_uninterrupted_loss_curve_and_loads_merged(tmp_path):
    full = loss_recorder()
    summary = run(compose_train(_lora_run(tmp_path, "full")), extra_callbacks=[full])
    crashed = loss_recorder(crash_at=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_train(_lora_run(tmp_path, "resumed")), extra_callbacks=[crashed])
    resumed = loss_recorder()
    run(compose_train(_lora_run(tmp_path, "resumed")), extra_callbacks=[resumed])
    assert sorted(resumed.losses) == [5, 6, 7, 8]
    for step in resumed.losses:
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-5, abs=1e-6), step

    ckpt = read_checkpoint(summary["checkpoint"])
    assert ckpt["zoo"]["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                   "targets": ["c_attn", "q_proj", "kv_proj", "c_proj", "c_fc", "c_gate"]}
    assert any(".lora_A." in k for k in ckpt["state_dict"])
    # the optimizer holds the adapters only
    assert sum(len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"]) == 2 * 4 * 2
    merged, _, meta = model_from_checkpoint(summary["checkpoint"])
    wrapped, _, _ = model_from_checkpoint(summary["checkpoint"], keep_lora=True)
    assert list(merged.state_dict()) == list(build_model(meta["model_type"], meta["model_config"]).state_dict())
    assert lora_state_dict(wrapped)  # keep_lora: the adapters stay separate
    idx = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(merged(idx), wrapped(idx), rtol=1e-5, atol=1e-5)


def test_resuming_with_other_lora_settings_is_refused(tmp_path):
    run(compose_train(_lora_run(tmp_path, "r", "trainer.max_steps=4")))
    with pytest.raises(CheckpointError, match="trained with lora=.*'rank': 4.* this run has lora=None"):
        run(compose_train([*_lora_run(tmp_path, "r"), "lora.rank=0"]))


def test_lora_settings_are_checked_before_any_work(tmp_path):
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match="lora.rank"):
        run(compose_train([*_lora_run(tmp_path, "bad"), "lora.rank=-1"]))
    assert not (tmp_path / "bad").exists()


def test_targets_that_match_nothing_are_named():
    with pytest.raises(ValueError, match=r"matches no nn.Linear .* its nn.Linear names: \['c_attn'"):
        apply_lora(tiny(), LoRAConfig(rank=2, targets=["q", "v"]))


@pytest.mark.slow
def test_lora_under_ddp_matches_one_process(tmp_path):
    """2 CPU processes (gloo) with LoRA follow the one-process loss curve (tests/test_scale.py's pattern)."""
    from test_scale import assert_same_curve, one_process, two_process_cli

    extra = ("lora.rank=4",)
    one_process("gpt", tmp_path, tmp_path / "one", extra)
    two_process_cli("gpt", "ddp", tmp_path, tmp_path / "two", *extra)
    worst = assert_same_curve(tmp_path / "one", tmp_path / "two")
    print(f"LoRA ddp vs one process: max relative loss difference {worst:.2e}")


def test_export_merges_the_adapters_by_default_or_keeps_them_separate(tmp_path):
    from safetensors.torch import load_file

    from zoo.hub.export import export_checkpoint
    from zoo.hub.loading import load_export
    from zoo.hub.registry import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    summary = run(compose_train(_lora_run(tmp_path, "run")))
    merged_dir = export_checkpoint(summary["checkpoint"], tmp_path / "merged", dtype="float32", measure=False)
    separate_dir = export_checkpoint(summary["checkpoint"], tmp_path / "separate", dtype="float32", measure=False,
                                     adapters="separate")
    merged, _, meta = model_from_checkpoint(summary["checkpoint"])
    base_keys = set(build_model(meta["model_type"], meta["model_config"]).state_dict())
    assert not (merged_dir / ADAPTER_WEIGHTS).exists()
    assert set(load_file(str(separate_dir / "model.safetensors"))) <= base_keys  # plain keys (tied head left out)
    adapters = load_file(str(separate_dir / ADAPTER_WEIGHTS))
    assert adapters and all(".lora_A." in k or ".lora_B." in k for k in adapters)
    assert json.loads((separate_dir / ADAPTER_CONFIG).read_text())["r"] == 4
    idx = torch.randint(0, 20, (2, 16))
    assert all(k.startswith("base_model.model.") for k in adapters)  # peft's PeftModel layout (tests/test_flows.py)
    base = build_model(meta["model_type"], meta["model_config"])
    base.load_state_dict(load_file(str(separate_dir / "model.safetensors")), strict=False)  # tied head: shared
    with torch.no_grad():  # both exports load as the fine-tuned model (the separate one's adapters folded in at
        # load); the separate one's model.safetensors alone is the base, which differs from it
        torch.testing.assert_close(load_export(merged_dir).model(idx), merged(idx), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(load_export(separate_dir).model(idx), merged(idx), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(base.eval()(idx), merged(idx))
    with pytest.raises(ValueError, match="not a LoRA run"):
        export_checkpoint(run(compose_train([*_lora_run(tmp_path, "plain")[:-4], "lora.rank=0",
                                             f"run_dir={tmp_path / 'plain'}"]))["checkpoint"],
                          tmp_path / "x", measure=False, adapters="separate")
