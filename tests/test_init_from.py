"""zoo-train init_from=SOURCE refuses, before any work, every setting that cannot fit the source: one case per
`raise` of zoo.training.init_from (and the load failure of zoo.train.load_source), each message naming both
sides. In process, on a tiny GPT config: no training run (tests/test_finetune.py runs the accepted paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_train
from omegaconf import OmegaConf

from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text import CharCodec
from zoo.config import ConfigError
from zoo.models.base import build_model
from zoo.training import init_from

SOURCE = "runs/src/last.ckpt"  # the name a refusal quotes; nothing is read from it here
CONFIG = {"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16}


@pytest.fixture(scope="module")
def source() -> dict:
    """The tiny source model's full config (what `source_config` gives `model_section`)."""
    return init_from.source_config(build_model("gpt", dict(CONFIG)))


def data(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_train(list(overrides)).data, resolve=True)


def refuse_model(source: dict, override: str) -> None:
    """`model_section` as zoo-train calls it for a command line holding `override`: the composed model section."""
    from zoo.train import override_keys

    section = OmegaConf.to_container(compose_train([override]).model, resolve=True)
    init_from.model_section(SOURCE, "gpt", source, section, override_keys([override]))


MODEL_REFUSALS = {
    "another model type": ("model=music_transformer", rf"^model=music_transformer does not fit init_from={SOURCE}, "
                                                      r"a gpt model; leave `model=` out"),
    "not a setting of the source": ("+model.n_expert=4",
                                    rf"^model.n_expert is not a setting of init_from={SOURCE}, a gpt model; its "
                                    r"settings: \['activation', 'bias', 'block_size', "),
    "a value the model rejects": ("model.n_head=3",
                                  rf"^model.n_head=3 does not fit init_from={SOURCE} \(.*n_head"),
    "a weight shape": ("model.n_embd=32",
                       rf"^model.n_embd=32 changes the weight shapes of init_from={SOURCE}, whose n_embd is 16; "
                       r"fine-tuning keeps the source's architecture: leave model.n_embd out"),
    "a position bias with weights": ("model.bias=relative",
                                     rf"^model.bias='relative' adds weights to init_from={SOURCE}, whose bias is "
                                     r"'none' \(new: transformer.h.0.attn.er\); fine-tuning keeps the source's "
                                     r"architecture: leave model.bias out \(dropout and the attention kernel may be "
                                     r"changed\)$"),
    "a position bias without weights": ("model.bias=alibi",
                                        rf"^model.bias='alibi' changes what the weights compute of init_from={SOURCE}, "
                                        r"whose bias is 'none'; "),
    "positions without a table": ("model.position=rotary",
                                  rf"^model.position='rotary' removes weights of init_from={SOURCE}, whose position is "
                                  r"'learned' \(gone: transformer.wpe.weight\); "),
    "what the weights compute": ("model.activation=gelu_tanh",
                                 rf"^model.activation='gelu_tanh' changes what the weights compute of "
                                 rf"init_from={SOURCE}, whose activation is 'gelu'"),
    "how new weights start": ("model.zero_init_proj=true",
                              rf"^model.zero_init_proj=True only sets how a new model's weights start; "
                              rf"init_from={SOURCE} starts from the source's weights, so it would have no effect: "
                              r"leave model.zero_init_proj out$"),
}


@pytest.mark.parametrize("case", MODEL_REFUSALS)
def test_model_overrides_that_cannot_fit_the_source_are_refused(case, source):
    override, expected = MODEL_REFUSALS[case]
    with pytest.raises(ConfigError, match=expected):
        refuse_model(source, override)


def test_shape_keeping_overrides_are_taken(source):
    """The other side of the refusals: dropout and the attention kernel change nothing the weights hold."""
    for kernel in ("math", "chunked"):
        section = {"type": "gpt", **source, "dropout": 0.2, "kernel": kernel}
        out = init_from.model_section(SOURCE, "gpt", source, section, {"model.dropout", "model.kernel"})
        assert out == {"type": "gpt", **source, "dropout": 0.2, "kernel": kernel}


@pytest.mark.parametrize("key", ["data.codec", "data/codec", "data.vocab_size"])
def test_the_data_codec_cannot_be_set_with_init_from(key):
    with pytest.raises(ConfigError, match=rf"^{key} cannot be set with init_from={SOURCE}: the data is encoded with "
                                          r"the source's char codec \(3 tokens\)$"):
        init_from.data_section(SOURCE, CharCodec("abc"), data("data=pydoc"), {key})


def test_a_source_without_a_codec_is_refused():
    with pytest.raises(ConfigError, match=rf"^init_from={SOURCE} comes without a codec \(a GPT-2 folder needs "
                                          r"vocab.json and merges.txt\)"):
        init_from.data_section(SOURCE, None, data("data=pydoc"), set())


def test_data_of_another_modality_is_refused_naming_the_data_and_the_codec(tmp_path: Path):
    with pytest.raises(ConfigError, match=rf"^data=midi_folder cannot be encoded with init_from={SOURCE}'s char codec "
                                          r"\(3 tokens\): "):
        init_from.data_section(SOURCE, CharCodec("abc"), data("data=midi_folder", f"data.path={tmp_path}"), set())


def test_image_data_of_another_geometry_is_refused_naming_both_codecs():
    digits = ImagePatchCodec(height=8, width=8, levels=17, num_classes=10)
    other = ImagePatchCodec(height=28, width=28, levels=17, num_classes=10)
    with pytest.raises(ConfigError, match=rf"^data=mnist cannot be encoded with init_from={SOURCE}'s image_patch codec "
                                          r"\(\d+ tokens\): the data's image_patch codec \(\d+ tokens\) differs from "
                                          r"it \(height: 8 vs 28, width: 8 vs 28\)$"):
        init_from.check_codec(SOURCE, digits, "mnist", other)
    init_from.check_codec(SOURCE, digits, "digits", ImagePatchCodec(height=8, width=8, levels=17, num_classes=10))


def test_weights_of_another_model_are_refused_naming_the_keys():
    model = build_model("gpt", dict(CONFIG))
    other = build_model("gpt", {**CONFIG, "n_layer": 2})
    with pytest.raises(ConfigError, match=rf"^init_from={SOURCE}: weights do not match the run's model: missing \[\], "
                                          r"unexpected \['transformer.h.1."):
        init_from.copy_weights(model, other, SOURCE)


def test_a_source_that_does_not_load_names_the_init_from_key(tmp_path: Path):
    from zoo.train import load_source

    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(ConfigError, match=rf"^init_from={missing}: '{missing}' is neither a registered pretrained "
                                          r"model nor an existing file or folder"):
        load_source(compose_train([f"init_from={missing}"]), set())
