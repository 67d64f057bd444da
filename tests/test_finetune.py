"""zoo-train init_from=SOURCE: a run starts from a pretrained model's weights (fresh optimizer and step),
takes its model config and codec, refuses what cannot fit before any work, and resumes when rerun."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY_RUN, compose_train, jsb_fixture, run_cli, tiny_model_overrides

import zoo
from zoo.config import ConfigError
from zoo.hub.export import export
from zoo.train import run
from zoo.training.checkpoint import read_checkpoint

# A fine-tuning run on each member's tiny test data, without model.* keys (the model comes from the source).
DATA = {"gpt": ["data=pydoc", "data.max_val_windows=4"],
        "music_transformer": ["data=jsb_chorales", "data.max_val_windows=4"],
        "image_gpt": ["data=digits"],
        "text2image": ["data=captioned_digits", "data.num_eval=16"]}


class AtStart(L.Callback):
    """What the run holds when training starts: weights, step, optimizer state, learning rate."""

    def on_train_start(self, trainer, pl_module):
        self.weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.step = trainer.global_step
        self.optimizer_state = len(trainer.optimizers[0].state)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


class Steps(L.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def source_checkpoint(model: str, tmp_path: Path) -> Path:
    """A tiny trained run of `model` (4 steps): its last.ckpt."""
    run(compose_train([*tiny_model_overrides(model, tmp_path), f"run_dir={tmp_path / 'source'}"]))
    return tmp_path / "source" / "checkpoints" / "last.ckpt"


def finetune(model: str, tmp_path: Path, source: Path | str, *extra: str, name: str = "ft",
             callbacks: list[L.Callback] = ()) -> dict:
    overrides = [*DATA[model], *TINY_RUN, f"init_from={source}", f"run_dir={tmp_path / name}", *extra]
    if model == "music_transformer":
        overrides.append(f"data.path={jsb_fixture(tmp_path)}")
    return run(compose_train(overrides), extra_callbacks=list(callbacks), overrides=overrides)


@pytest.mark.parametrize("model", ["gpt", "music_transformer", "image_gpt", "text2image"])
@pytest.mark.parametrize("kind", ["ckpt", "export"])
def test_init_from_starts_from_the_source_weights_with_a_fresh_optimizer(model, kind, tmp_path):
    ckpt = source_checkpoint(model, tmp_path)
    source = ckpt if kind == "ckpt" else export(zoo.load(ckpt), tmp_path / "export", dtype="float32")
    expected = zoo.load(source)
    start = AtStart()
    summary = finetune(model, tmp_path, source, "model.dropout=0.1", callbacks=[start])
    assert start.step == 0 and start.optimizer_state == 0  # fresh optimizer and step
    assert start.lr < 2e-3  # the warmup's first step: a fresh schedule
    reference = expected.model.state_dict()
    assert start.weights.keys() == reference.keys()
    for k, v in reference.items():
        torch.testing.assert_close(start.weights[k], v, rtol=0, atol=0, msg=k)
    meta = read_checkpoint(summary["checkpoint"])["zoo"]
    source_config = {**expected.config["model_config"], "dropout": 0.1}  # a shape-keeping override is taken
    assert meta["model_type"] == expected.model_type and meta["model_config"] == source_config
    assert meta["codec"] == expected.codec.to_dict()  # the data was encoded with the source's codec
    assert meta["train_config"]["init_from"] == str(source) and summary["step"] == 4


def test_init_from_a_registry_name_takes_its_config_and_codec(tmp_path):
    start = AtStart()
    summary = finetune("gpt", tmp_path, "gpt-pydoc", "trainer.max_steps=2", callbacks=[start])
    pretrained = zoo.load("gpt-pydoc")
    torch.testing.assert_close(start.weights["transformer.wte.weight"],
                               pretrained.model.state_dict()["transformer.wte.weight"])
    # a trained model, not a fresh one: far below the unigram baseline at the first validation
    assert summary["metrics"]["val/loss"] < 2.0 < summary["baseline"]
    # zoo-export's card metric re-measures on the data encoded with the source's codec: the run's val/loss
    from zoo.hub.export import measure_loss

    assert measure_loss(zoo.load(summary["checkpoint"])) == pytest.approx(summary["metrics"]["val/loss"], rel=1e-4)


@pytest.mark.parametrize(("key", "value", "source_value"), [("n_layer", 1, 2), ("n_embd", 64, 32),
                                                              ("block_size", 64, 32)])
def test_an_override_that_changes_a_weight_shape_is_refused_before_any_work(key, value, source_value, tmp_path):
    ckpt = source_checkpoint("gpt", tmp_path)
    with pytest.raises(ConfigError) as e:
        finetune("gpt", tmp_path, ckpt, f"model.{key}={value}")
    message = str(e.value)
    assert f"model.{key}={value}" in message and f"{key} is {source_value}" in message and str(ckpt) in message
    assert not (tmp_path / "ft").exists()  # nothing was started


def test_a_model_of_another_type_is_refused(tmp_path):
    ckpt = source_checkpoint("gpt", tmp_path)
    with pytest.raises(ConfigError, match="model=music_transformer does not fit .* a gpt model"):
        finetune("gpt", tmp_path, ckpt, "model=music_transformer")


def test_data_the_source_codec_cannot_encode_is_refused_naming_both(tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("snowmen ☃ and euros € are not pydoc characters\n" * 50)
    ckpt = source_checkpoint("gpt", tmp_path)
    overrides = [*TINY_RUN, "data=text_files", f"data.path={text}", f"init_from={ckpt}", f"run_dir={tmp_path / 'ft'}"]
    with pytest.raises(ConfigError) as e:
        run(compose_train(overrides), overrides=overrides)
    assert "data=text_files" in str(e.value) and "char codec (" in str(e.value) and "☃" in str(e.value)
    # another modality: a char codec for MIDI files
    overrides = [*TINY_RUN, "data=midi_folder", f"data.path={tmp_path}", f"init_from={ckpt}",
                 f"run_dir={tmp_path / 'ft2'}"]
    with pytest.raises(ConfigError, match=r"data=midi_folder cannot be encoded with init_from=.*'s char codec"):
        run(compose_train(overrides), overrides=overrides)
    with pytest.raises(ConfigError, match="data.codec cannot be set with init_from"):
        finetune("gpt", tmp_path, ckpt, "data.codec=byte")


def test_rerunning_a_fine_tuning_run_resumes_it(tmp_path, caplog):
    ckpt = source_checkpoint("gpt", tmp_path)
    full = Steps()
    finetune("gpt", tmp_path, ckpt, "trainer.max_steps=6", "checkpoint.every_n_steps=3", name="full",
             callbacks=[full])
    finetune("gpt", tmp_path, ckpt, "trainer.max_steps=3", "checkpoint.every_n_steps=3")
    resumed = Steps()
    with caplog.at_level("INFO"):
        finetune("gpt", tmp_path, ckpt, "trainer.max_steps=6", "checkpoint.every_n_steps=3", callbacks=[resumed])
    assert "not applied, this run resumes" in caplog.text
    assert sorted(resumed.losses) == [4, 5, 6]
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(full.losses[step], rel=1e-5), step


def test_init_from_a_gpt2_folder_fine_tunes_with_its_bpe_codec(tmp_path):
    pytest.importorskip("transformers")
    from test_hub import _tiny_gpt2

    folder = _tiny_gpt2(tmp_path / "gpt2")
    text = tmp_path / "mine.txt"
    text.write_text("def f(x):\n    return x * 2  # double\nThe with statement wraps a block.\n" * 40)
    start = AtStart()
    overrides = [*TINY_RUN, "data=text_files", f"data.path={text}", "data.max_val_windows=4", f"init_from={folder}",
                 f"run_dir={tmp_path / 'ft'}", "lora.rank=2"]
    summary = run(compose_train(overrides), extra_callbacks=[start], overrides=overrides)
    meta = read_checkpoint(summary["checkpoint"])["zoo"]
    assert meta["codec"]["type"] == "bpe" and meta["lora"]["rank"] == 2 and summary["step"] == 4


def test_gpt2_finetune_experiment_composes_to_an_init_from_run():
    cfg = compose_train(["experiment=gpt2_finetune", "data.path=my.txt"])
    assert cfg.init_from == "gpt2" and cfg.data.name == "text_files" and cfg.lora.rank == 8
    assert cfg.model.dropout == 0.1 and cfg.trainer.max_steps > 0


def test_cli_refusal_names_both_values(tmp_path):
    r = run_cli(["zoo-train", *DATA["gpt"], *TINY_RUN, "init_from=gpt-pydoc", "model.n_head=8",
                 f"run_dir={tmp_path / 'ft'}"], cwd=tmp_path)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]  # "changes the weight shapes" (grouped-query c_attn) or similar
    assert line.startswith("zoo-train: invalid config: model.n_head=8 changes ") and \
        "of init_from=gpt-pydoc, whose n_head is 4" in line, line


def test_image_data_of_another_geometry_is_refused_naming_both(tmp_path):
    """Image data modules build their codec from the data (levels, patch size, geometry): it must be the source's."""
    with pytest.raises(ConfigError, match=r"data=mnist5k cannot be encoded with init_from=image-gpt-digits's "
                                          r"image_patch codec .*height: 8 vs 28"):
        run(compose_train(["data=mnist5k", *TINY_RUN, "init_from=image-gpt-digits", f"run_dir={tmp_path / 'r'}"]),
            overrides=["data=mnist5k", "init_from=image-gpt-digits"])


@pytest.mark.parametrize("unknown", ["skip", "replace"])
def test_text_outside_the_source_vocabulary_fine_tunes_with_data_unknown(unknown, tmp_path, caplog):
    """gpt-pydoc's char vocabulary has no '$': the default refuses naming data.unknown; skip drops the 30 '$'
    and replace writes '?' (U+FFFD is not in it), both counted, and training runs on the rest."""
    text = tmp_path / "prices.txt"
    text.write_text("The price is $5 and the total is $10 for each item in the list.\n" * 15)
    overrides = [*TINY_RUN, "data=text_files", f"data.path={text}", "init_from=gpt-pydoc", "trainer.max_steps=2",
                 f"run_dir={tmp_path / 'refused'}", f"data.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ConfigError, match=r"30 characters .* \('\$' x30\); set data.unknown=skip"):
        run(compose_train(overrides), overrides=overrides)
    overrides = [*overrides[:-2], f"data.unknown={unknown}", f"run_dir={tmp_path / unknown}",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    with caplog.at_level("WARNING"):
        summary = run(compose_train(overrides), overrides=overrides)
    verb = "dropped" if unknown == "skip" else "replaced with '?'"
    assert f"30 characters outside the model's vocabulary {verb} (data.unknown={unknown}): '$' x30" in caplog.text
    assert summary["metrics"]["val/loss"] < 3.0
    meta = next((tmp_path / "cache" / "tokens").glob("*/meta.json")).read_text()
    assert '"counts": {' in meta and '"$": 30' in meta and f'"data.unknown": "{unknown}"' in meta
    line = "The price is $5 and the total is $10 for each item in the list.\n"
    n = 15 * (len(line) - (2 if unknown == "skip" else 0))
    assert f'"n_chars": {n}' in meta
