"""Position, bias and kernel are three settings (issue 24): what each value builds, `auto`'s choice, every kernel
equal to the math oracle for every bias, and the one upgrade step that loads configs saved in the older spellings
(`kernel: relative`, `position: alibi`, `bias: true/false`) into the same model with the same logits, from an
export folder (the shipped checkpoints included), a zoo-train `.ckpt` and the Python API alike."""

from __future__ import annotations

import json
import typing

import pytest
import torch
from helpers import compose_train
from omegaconf import OmegaConf

import zoo
from zoo.config import ConfigError
from zoo.core import kernels
from zoo.core.positions import AlibiPositionBias, RelativePositionBias, SumPositionBias
from zoo.hub.registry import HUB_DIR
from zoo.models.base import KernelName, build_model, upgrade_config
from zoo.models.gpt import GPT, GPTConfig
from zoo.training.preflight import check_train_config

F64 = torch.float64
TINY = dict(vocab_size=29, block_size=24, n_layer=2, n_head=2, n_embd=16)

# older spelling -> today's (the keys that change; every other key passes through)
UPGRADES = [
    (dict(kernel="relative", position="none"), dict(bias="relative", kernel="auto", position="none")),
    (dict(kernel="relative", position="rotary"), dict(bias="relative", kernel="auto", position="rotary")),
    (dict(kernel="sdpa", position="alibi"), dict(bias="alibi", kernel="sdpa", position="none")),
    (dict(kernel="relative", position="alibi"), dict(bias="relative+alibi", kernel="auto", position="none")),
    (dict(kernel="math", position="learned", bias=False), dict(kernel="math", position="learned", layer_bias=False)),
    (dict(kernel="relative", position="none", bias=True), dict(bias="relative", kernel="auto", position="none",
                                                                layer_bias=True)),
]


def seeded(model_type: str, config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_type, config).to(F64).eval()


def test_the_config_kernel_names_are_the_core_registry_and_auto():
    assert typing.get_args(KernelName) == kernels.KERNEL_NAMES == ("auto", *kernels.KERNELS)


@pytest.mark.parametrize(("old", "new"), UPGRADES)
def test_upgrade_rewrites_each_older_spelling_and_keeps_the_rest(old, new):
    saved = {**TINY, **old}
    assert upgrade_config(saved) == {**TINY, **new}
    assert saved == {**TINY, **old}  # the caller's dict is not changed
    assert upgrade_config(upgrade_config(saved)) == upgrade_config(saved)  # today's spelling passes unchanged


@pytest.mark.parametrize(("old", "new"), UPGRADES)
def test_an_old_config_builds_the_same_model_with_the_same_logits(old, new):
    """build_model (what every loader calls) on the old spelling == the model written in today's spelling: same
    state-dict keys and shapes, same logits for the same weights, same kernel function and position bias."""
    before, after = seeded("gpt", {**TINY, **old}), GPT(GPTConfig(**TINY, **new)).to(F64).eval()
    assert {k: v.shape for k, v in before.state_dict().items()} == {k: v.shape for k, v in after.state_dict().items()}
    after.load_state_dict(before.state_dict())
    a, b = before.transformer.h[0].attn, after.transformer.h[0].attn
    assert a.kernel is b.kernel and repr(a.position_bias) == repr(b.position_bias)
    idx = torch.randint(0, 29, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(before(idx), after(idx))


def test_image_models_upgrade_their_layer_bias():
    geometry = dict(vocab_size=5, num_patches=4, patch_tokens=3, n_layer=1, n_head=2, n_embd=16, local_n_layer=1,
                    local_n_head=2, local_n_embd=8)
    model = build_model("image_gpt", {**geometry, "bias": False, "kernel": "sdpa"})
    biases = [k for k in model.state_dict() if k.endswith(".bias")]
    assert model.config.layer_bias is False and biases == ["local_model.to_local.bias"]  # the local positions
    cfg = OmegaConf.to_container(compose_train(["model=image_gpt", "data=digits", "+model.bias=true"]), resolve=True)
    with pytest.raises(ConfigError, match=r"^model\.bias=True is an older spelling: the layers' bias vectors are "
                                          r"layer_bias=true/false"):
        check_train_config(cfg)  # zoo-train's pre-flight, before any work


@pytest.mark.parametrize(("field", "value", "hint"), [
    ("kernel", "relative", "relative attention is bias='relative'"),
    ("position", "alibi", "ALiBi is bias='alibi'"),
    ("bias", False, "the layers' bias vectors are layer_bias=true/false"),
])
def test_writing_an_old_spelling_today_names_the_new_one(field, value, hint):
    with pytest.raises(ConfigError, match=rf"^GPTConfig\.{field}={value!r} is an older spelling: {hint}"):
        GPTConfig(**{field: value})


@pytest.mark.parametrize(("bias", "kernel", "provider", "runs"), [
    ("none", "auto", type(None), kernels.sdpa_attention),
    ("relative", "auto", RelativePositionBias, kernels.chunked_attention),
    ("alibi", "auto", AlibiPositionBias, kernels.sdpa_attention),
    ("relative+alibi", "auto", SumPositionBias, kernels.chunked_attention),
    ("relative", "sdpa", RelativePositionBias, kernels.sdpa_attention),
    ("relative", "math", RelativePositionBias, kernels.math_attention),
    ("alibi", "chunked", AlibiPositionBias, kernels.chunked_attention),
    ("none", "chunked", type(None), kernels.chunked_attention),
])
def test_bias_builds_its_provider_and_auto_picks_the_best_kernel_for_it(bias, kernel, provider, runs):
    attn = GPT(GPTConfig(**TINY, position="none", bias=bias, kernel=kernel)).transformer.h[1].attn
    assert type(attn.position_bias) is provider and attn.kernel is runs
    assert ("er" in dict(attn.named_parameters())) == ("relative" in bias)  # the relative tables are weights
    assert "alibi_slopes" not in attn.state_dict()  # ALiBi learns nothing: no checkpoint key


@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("bias", ["none", "relative", "alibi", "relative+alibi"])
def test_every_kernel_computes_every_bias_as_the_math_kernel(position, bias):
    """The kernel says how, never what: sdpa, chunked and auto give the math kernel's logits and gradients."""
    idx = torch.randint(0, 29, (2, 20), generator=torch.Generator().manual_seed(2))

    def run(kernel):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**TINY, position=position, bias=bias, kernel=kernel)).to(F64)
        logits = model(idx)
        logits.square().mean().backward()
        return logits, model.transformer.wte.weight.grad

    want = run("math")
    for kernel in ("sdpa", "chunked", "auto"):
        for got, ref in zip(run(kernel), want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_a_training_checkpoint_saved_with_the_old_spelling_loads_with_the_same_logits(tmp_path):
    """A `.ckpt` whose zoo metadata says `kernel: relative`, `position: alibi`, `bias: true` (as zoo-train wrote it
    before issue 24) loads through the upgrade into today's config with the same logits."""
    old = {**TINY, "kernel": "relative", "position": "alibi", "bias": True, "max_relative_position": 8}
    ref = seeded("gpt", old)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()},
            "zoo": {"version": 1, "model_type": "gpt", "model_config": old, "codec": None, "train_config": {}}}
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = zoo.load(tmp_path / "old.ckpt").model.to(F64)
    c = loaded.config
    assert (c.position, c.bias, c.kernel, c.layer_bias) == ("none", "relative+alibi", "auto", True)
    idx = torch.randint(0, 29, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(idx), ref(idx))


@pytest.mark.parametrize("name", ["music-transformer-bach", "music-transformer-jsb", "music-transformer-styles",
                                  "gpt-pydoc", "image-gpt-digits", "text2image-digits"])
def test_shipped_configs_keep_their_old_spelling_on_disk_and_load_upgraded(name):
    """config.json stays as shipped (its sha256 is pinned); the model built from it has today's settings and runs the
    kernel it always ran. (The logits themselves are pinned by test_attention_core and test_hub.)"""
    on_disk = json.loads((HUB_DIR / name / "config.json").read_text())["model_config"]
    config = zoo.load(name).model.config
    if name != "music-transformer-bach":  # every other checkpoint was retrained since the
        assert "layer_bias" in on_disk and config.layer_bias is on_disk["layer_bias"]  # settings split (issue 23)
        if name.startswith("music"):
            assert (on_disk["bias"], on_disk["position"]) == (config.bias, config.position) == ("relative", "none")
        return
    assert isinstance(on_disk["bias"], bool)
    assert config.layer_bias is on_disk["bias"] and config.kernel in ("auto", "sdpa")
    if name.startswith("music"):
        assert on_disk["kernel"] == "relative" and (config.bias, config.position) == ("relative", "none")
        assert zoo.load(name).model.transformer.h[0].attn.kernel is kernels.chunked_attention


def test_export_of_an_old_spelling_writes_todays_and_loads_back_the_same(tmp_path):
    from zoo.hub.export import export

    m = zoo.load("music-transformer-bach")  # shipped before the settings split: config.json has the old spelling
    out = export(m, tmp_path / "export", dtype="float32")
    written = json.loads((out / "config.json").read_text())["model_config"]
    assert (written["position"], written["bias"], written["kernel"], written["layer_bias"]) == (
        "none", "relative", "auto", True)
    again = zoo.load(out)
    idx = torch.randint(0, 50, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(again.model.float()(idx), m.model.float()(idx))
