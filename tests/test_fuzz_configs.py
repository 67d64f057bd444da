"""Fuzzed zoo-train overrides: every bad one is rejected before any work, with a message naming the key.

The strategies below write override strings as a user would type them (unknown keys, wrong types,
zero/negative sizes, n_embd not divisible by n_head, a data block longer than the model's position
table, values outside a choice). Each composed config must fail `check_train_config` (the
pre-flight check `zoo.train.run` runs first, zoo.training.preflight) with a `ConfigError` naming the
key; valid overrides drawn the same way must pass. Two real runs check the same through the CLI:
exit status, a one-line message on stderr, no traceback, no run folder.
"""

from __future__ import annotations

import functools
import keyword
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import zoo.train
import zoo.training.run
from tests.helpers import ROOT, TINY, compose_train, run_cli
from zoo.config import ConfigError
from zoo.models.gpt import GPTConfig
from zoo.training.config import CheckpointConfig, ModuleConfig
from zoo.training.preflight import check_train_config

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

MODEL_INTS = ["n_layer", "n_head", "n_embd", "block_size"]
DATA_INTS = ["batch_size", "max_val_windows"]
CHOICES = {  # key -> accepted values (the model config's / module's / data module's Literal)
    "model.kernel": ["auto", "math", "sdpa", "chunked"],
    "model.bias": ["none", "relative", "alibi", "relative+alibi"],
    "model.norm": ["layernorm", "rmsnorm"],
    "model.activation": ["gelu", "gelu_tanh", "swiglu"],
    "model.position": ["learned", "rotary", "none"],
    "module.on_nonfinite": ["raise", "skip"],
    "data.codec": ["char", "byte", "bpe"],
}
WORD = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
    lambda w: w[0] != "_" and not keyword.iskeyword(w) and w not in ("true", "false", "null", "nan", "inf"))
NOT_AN_INT = st.sampled_from(["abc", "1.5", "2.0", "true", "'7'", "[1,2]", "{a:1}", "1e3"])
NOT_A_NUMBER = st.sampled_from(["abc", "true", "[0.1]", "'0.1'", "{a:1}"])


def check(overrides: list[str]) -> None:
    check_train_config(OmegaConf.to_container(compose_train(overrides), resolve=True))


def rejected(overrides: list[str], key: str) -> str:
    with pytest.raises(ConfigError) as e:
        check(overrides)
    assert key in str(e.value), f"{overrides}: the message does not name {key}: {e.value}"
    return str(e.value)


@functools.cache
def _known_keys(section: str) -> frozenset[str]:
    return frozenset(compose_train([])[section])


@st.composite
def bad_overrides(draw) -> tuple[list[str], str]:
    """(override strings, the key the error must name)."""
    kind = draw(st.sampled_from(["type", "size", "divisible", "block", "choice", "unknown", "float"]))
    if kind == "type":
        section, key = draw(st.sampled_from([("model", k) for k in MODEL_INTS] + [("data", k) for k in DATA_INTS]))
        return [f"{section}.{key}={draw(NOT_AN_INT)}"], f"{section}.{key}"
    if kind == "size":
        section, key = draw(st.sampled_from([("model", k) for k in MODEL_INTS] + [("data", "batch_size")]))
        return [f"{section}.{key}={draw(st.integers(-1000, 0))}"], f"{section}.{key}"
    if kind == "divisible":
        n_head = draw(st.integers(2, 8))
        n_embd = n_head * draw(st.integers(1, 16)) + draw(st.integers(1, n_head - 1))
        return [f"model.n_head={n_head}", f"model.n_embd={n_embd}"], "model.n_embd"
    if kind == "block":
        model_block = draw(st.integers(1, 256))
        return ([f"model.block_size={model_block}", f"data.block_size={model_block + draw(st.integers(1, 1000))}"],
                "data.block_size")
    if kind == "choice":
        key = draw(st.sampled_from(sorted(CHOICES)))
        value = draw(WORD.filter(lambda w: w not in CHOICES[key]))
        return [f"{key}={value}"], key
    if kind == "unknown":
        section = draw(st.sampled_from(["model", "data", "module", "trainer"]))
        known = _known_keys(section)
        leaf = draw(WORD.filter(lambda w: w not in known))
        return [f"+{section}.{leaf}=1"], f"{section}.{leaf}"
    key = draw(st.sampled_from(["model.dropout", "module.lr", "module.weight_decay", "samples.temperature"]))
    return [f"{key}={draw(NOT_A_NUMBER)}"], key


@FUZZ
@given(bad_overrides())
def test_fuzzed_bad_overrides_are_rejected_naming_the_key(case):
    overrides, key = case
    rejected(overrides, key)


@st.composite
def good_overrides(draw) -> list[str]:
    n_head = draw(st.integers(1, 4))
    block = draw(st.integers(8, 64))
    return [f"model.n_layer={draw(st.integers(1, 3))}", f"model.n_head={n_head}",
            f"model.n_embd={n_head * 2 * draw(st.integers(1, 8))}", f"model.block_size={block}",
            f"data.block_size={draw(st.integers(1, block))}", f"data.batch_size={draw(st.integers(1, 64))}",
            *(f"{k}={draw(st.sampled_from(v))}" for k, v in CHOICES.items() if k != "data.codec"),
            f"model.dropout={draw(st.floats(0, 0.9))}", f"module.lr={draw(st.floats(1e-6, 1.0))}"]


@settings(FUZZ, max_examples=10)
@given(good_overrides())
def test_fuzzed_valid_overrides_pass_the_check(overrides):
    if not any(o.startswith("model.bias=relative") for o in overrides):
        overrides = [*overrides, "model.max_relative_position=null"]
    check(overrides)


# ---------------------------------------------------------------- one case per kind, exact messages
@pytest.mark.parametrize(("overrides", "message"), [
    (["model.n_layer=abc"], "model.n_layer='abc' is not accepted; expected an integer"),
    (["data.batch_size=1.5"], "data.batch_size=1.5 is not accepted; expected an integer"),
    (["model.n_embd=100", "model.n_head=3"], "model.n_head, model.n_embd: n_embd=100 must be divisible by n_head=3"),
    (["model.block_size=32", "data.block_size=64"], "data.block_size=64 is longer than model.block_size=32"),
    (["model.kernel=flash"], "model.kernel='flash' is not accepted; choose one of ['auto', 'math', 'sdpa', 'chunked']"),
    (["model.kernel=relative"], "model.kernel='relative' is an older spelling: relative attention is bias='relative'"),
    (["model.position=alibi"], "model.position='alibi' is an older spelling: ALiBi is bias='alibi'"),
    (["data.batch_size=0"], "data.batch_size=0 must be >= 1"),
    (["model.n_layer=-2"], "model.n_layer: GPTConfig.n_layer must be a positive integer, got -2"),
    (["+model.n_layerz=2"], "unknown key 'model.n_layerz'. Did you mean 'model.n_layer'?"),
    (["+data.blok_size=2"], "unknown key 'data.blok_size'. Did you mean 'data.block_size'?"),
    (["trainer.max_steps=many"], "trainer.max_steps='many' is not accepted; expected an integer"),
    (["trainer.precision=fp8"], "trainer.precision='fp8' is not accepted; choose one of"),
    (["module.lr=0"], "module.lr=0 must be > 0"),
    (["samples.top_k=0"], "samples.top_k: top_k must be >= 1 or None, got 0"),
    (["data.codec=bpe"], "data.vocab_size: vocab_size is required for codec 'bpe'"),
    (["model=image_gpt", "data=digits", "data.patch_size=3"], "data.patch_size: patch_size=3 must divide"),
    (["model=image_gpt", "data=digits", "model.local_n_embd=33"], "model.local_n_embd"),
    (["model=music_transformer", "data=jsb_chorales", "model.block_size=30"],
     "data.block_size: jsb_chorales: block_size must be a multiple of 4"),
    (["model=music_transformer", "data=midi_folder", "data.path=x", "data.codec.steps_per_second=abc"],
     "data.codec.steps_per_second: steps_per_second must be an integer >= 1, got 'abc'"),
    (["model=music_transformer", "data=midi_folder", "data.path=x", "data.on_error=ignore"],
     "data.on_error='ignore' is not accepted; choose one of ['skip', 'raise']"),
    (["model=music_transformer", "model.bias=none"], "model.position, model.bias: MusicTransformerConfig: "
                                                       "bias='none' with position='none'"),
    (["strategy.name=horovod"], "strategy.name='horovod' is not accepted"),
    (["seed=abc"], "seed='abc' is not accepted; expected an integer"),
])
def test_each_kind_of_bad_value_gets_a_message_naming_the_key(overrides, message):
    assert message in rejected(overrides, message.split("=")[0].split(":")[0].split(",")[0].split(" ")[-1])


@pytest.mark.parametrize(("config_cls", "section", "override"), [
    (GPTConfig, "model", "n_layer=abc"), (GPTConfig, "model", "kernel=flash"), (GPTConfig, "model", "dropout=[1]"),
    (ModuleConfig, "module", "lr=0"), (ModuleConfig, "module", "on_nonfinite=maybe"),
    (ModuleConfig, "module", "betas=[0.9]"), (CheckpointConfig, "checkpoint", "every_n_steps=-1"),
])
def test_python_and_the_command_line_get_the_same_message(config_cls, section, override):
    """One checker: a config dataclass built from Python and the same value as an override say the same."""
    key, _, text = override.partition("=")
    value = OmegaConf.to_container(OmegaConf.from_dotlist([override]))[key]
    with pytest.raises(ConfigError) as python:
        config_cls(**{key: value})
    expected = str(python.value).replace(f"{config_cls.__name__}.", f"{section}.", 1)
    assert expected.startswith(f"{section}.{key}=") and rejected([f"{section}.{override}"], key) == expected


def test_dataclass_fields_and_constructor_signatures_are_read_the_same_way():
    """builders.instantiate and the pre-flight check read a data module's signature with the function that
    reads a config dataclass's fields: (name, type hint, required), following **kwargs up the classes."""
    from zoo.config import Param, parameters
    from zoo.data.text import PydocDataModule

    assert parameters(GPTConfig)["n_layer"] == Param(int, False)
    assert parameters(ModuleConfig)["on_nonfinite"].hint == typing.Literal["raise", "skip"]
    data = parameters(PydocDataModule)
    assert data is not None and data["block_size"] == Param(int, True) and "self" not in data


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(__file__).parents[1] / "conf/experiment")
                                                .glob("*.yaml")))
def test_every_shipped_experiment_passes_the_check(experiment):
    check([f"experiment={experiment}"])


@pytest.mark.parametrize(("data", "extra"), [("pydoc", []), ("text_files", ["data.path=x"]), ("digits", []),
                                             ("image_folder", ["data.root=x"]), ("midi_folder", ["data.path=x"]),
                                             ("captioned_shapes", []), ("image_text_folder", ["data.root=x"])])
def test_shipped_data_presets_pass_the_check(data, extra):
    model = {"digits": "image_gpt", "image_folder": "image_gpt", "midi_folder": "music_transformer",
             "captioned_shapes": "text2image", "image_text_folder": "text2image"}.get(data, "gpt")
    check([f"model={model}", f"data={data}", *extra])


# ---------------------------------------------------------------- before any work
def test_zoo_train_run_stops_in_the_preflight_check_before_data_or_model(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("training work started despite a bad config")

    monkeypatch.setattr(zoo.training.run, "build_data", no_work)
    monkeypatch.setattr(zoo.training.run, "build_module", no_work)
    cfg = compose_train([*TINY, f"run_dir={tmp_path / 'run'}", "model.n_embd=30", "model.n_head=4"])
    with pytest.raises(ConfigError, match=r"^model.n_head, model.n_embd: n_embd=30"):
        zoo.train.run(cfg)  # a Python caller gets the error; the zoo-train command prints it (below)
    assert not (tmp_path / "run").exists()  # not even the run folder


def test_cli_rejects_a_bad_value_with_one_line_and_no_traceback(tmp_path):
    r = run_cli(["zoo-train", "model.block_size=16", "data.block_size=32", f"run_dir={tmp_path / 'run'}"],
                cwd=tmp_path, timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr
    assert "zoo-train: invalid config: data.block_size=32 is longer than model.block_size=16" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- model config dataclasses, used directly
@FUZZ
@given(data=st.data())
def test_model_configs_reject_wrongly_typed_fields_naming_them(data):
    import dataclasses
    import typing

    from zoo.models.base import MODELS

    model_type = data.draw(st.sampled_from(sorted(MODELS)))
    config_cls = MODELS[model_type][0]
    hints = typing.get_type_hints(config_cls)
    plain = [f.name for f in dataclasses.fields(config_cls) if hints[f.name] in (int, float, bool)]
    name = data.draw(st.sampled_from(plain))
    bad = data.draw(st.sampled_from(["abc", [1], {"a": 1}] + ([2.5] if hints[name] is int else [])))
    base = {"vocab_size": 8, "num_patches": 4, "patch_tokens": 2, "text_vocab_size": 5, "text_len": 3}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    with pytest.raises(ConfigError, match=rf"^{config_cls.__name__}\.{name}=.* is not accepted; expected"):
        config_cls(**{k: v for k, v in base.items() if k in fields} | {name: bad})
