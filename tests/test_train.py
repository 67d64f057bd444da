"""The training stack end to end: configs compose, runs train, resume, distribute, and fail clearly."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import CONF, TINY, compose_train, jsb_fixture, loss_recorder, run_cli
from omegaconf import OmegaConf

from zoo.sampling import generate
from zoo.train import run
from zoo.training.builders import build_data, build_module, build_strategy, instantiate
from zoo.training.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from zoo.training.tracking import build_logger

GROUPS = ["model", "data", "precision", "strategy", "logger", "trainer"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def experiments() -> list[str]:
    return options("experiment")


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world, this is a tiny corpus for tests. " * 200)
    return corpus


MODEL_DATA = {"gpt": "pydoc", "image_gpt": "digits", "music_transformer": "jsb_chorales",
              "text2image": "captioned_digits"}  # a data option each


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_option_composes_and_instantiates(group, tmp_path):
    assert set(options("model")) == set(MODEL_DATA), "add the new model to MODEL_DATA"
    for option in options(group):
        overrides = [f"{group}={option}", f"run_dir={tmp_path / option}"]
        if group == "data" and option == "text_files":
            overrides.append(f"data.path={_corpus(tmp_path)}")
        if group == "model":
            overrides.append(f"data={MODEL_DATA[option]}")
            if MODEL_DATA[option] == "jsb_chorales":
                overrides.append(f"data.path={jsb_fixture(tmp_path)}")
        cfg = compose_train(overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if group == "data":
            dm = build_data(resolved["data"])
            assert isinstance(dm, L.LightningDataModule)
        elif group == "model":
            dm = build_data(resolved["data"])
            dm.prepare_data()
            dm.setup("fit")
            module = build_module(resolved["model"], resolved["module"], codec=dm.codec)
            assert module.model.model_type == resolved["model"]["type"]
            batch = next(iter(dm.train_dataloader()))
            assert torch.isfinite(module.loss(batch)[0])
        elif group == "strategy":
            from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

            strategy = build_strategy(resolved["strategy"])
            expected = {"auto": str, "ddp": DDPStrategy, "fsdp": ModelParallelStrategy}[option]
            assert isinstance(strategy, expected) and (option != "auto" or strategy == "auto"), (option, strategy)
        elif group == "logger":
            build_logger(resolved["logger"], run_dir=tmp_path / option, name="t")
        elif group in ("trainer", "precision"):
            trainer_cfg = {k: v for k, v in resolved["trainer"].items() if k != "accelerator"}
            L.Trainer(**trainer_cfg, accelerator="cpu", logger=False, enable_checkpointing=False)


class _FakeCodec:
    vocab_size = 50
    type_name = "char"

    def to_dict(self):
        return {"type": "char"}


def tiny_overrides(base: list[str], tmp_path: Path) -> list[str]:
    """TINY's overrides that exist in this composition (models differ), plus offline data paths."""
    cfg = compose_train(base)
    missing = object()
    keep = [o for o in TINY if OmegaConf.select(cfg, o.split("=")[0], default=missing) is not missing]
    if cfg.data.name == "jsb_chorales":
        keep.append(f"data.path={jsb_fixture(tmp_path)}")
    if cfg.data.name == "bach_chorales":
        keep.append("data.max_files=6")
    if cfg.data.name == "music21_styles":  # the full corpus converts for ~10 minutes; two quick styles suffice
        keep += ["data.styles=[palestrina,bach]", "data.max_pieces=4", "data.val_fraction=0.25", "data.test_fraction=0"]
    if cfg.get("init_from") == "gpt2":  # experiment=gpt2_finetune downloads GPT-2: a tiny GPT-2 folder stands in
        pytest.importorskip("transformers")
        from test_hub import _tiny_gpt2

        keep += [f"init_from={_tiny_gpt2(tmp_path / 'gpt2')}", f"data.path={_corpus(tmp_path)}", "data.block_size=32"]
    return keep


@pytest.mark.parametrize("experiment", experiments())
def test_fast_dev_run_for_every_experiment(experiment, tmp_path):
    base = [f"experiment={experiment}", "trainer=debug", f"run_dir={tmp_path}"]
    cfg = compose_train([*base, *tiny_overrides(base, tmp_path)])
    summary = run(cfg)
    assert math.isfinite(summary["metrics"]["train/loss"])


def test_default_job_trains_resumes_and_samples(tmp_path):
    """A short run, interrupted by a crash after its step-4 checkpoint, resumes from last.ckpt and
    then follows the uninterrupted run's loss curve step for step (model, optimizer, schedule, data)."""
    base = [*TINY, "trainer.max_steps=8", "checkpoint.every_n_steps=4", "trainer.val_check_interval=4"]

    full = loss_recorder()
    run(compose_train([*base, f"run_dir={tmp_path / 'full'}"]), extra_callbacks=[full])

    crashed = loss_recorder(crash_at=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_train([*base, f"run_dir={tmp_path / 'resumed'}"]), extra_callbacks=[crashed])
    ckpt = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4

    resumed = loss_recorder()
    summary = run(compose_train([*base, f"run_dir={tmp_path / 'resumed'}"]), extra_callbacks=[resumed])
    assert sorted(resumed.losses) == [5, 6, 7, 8]  # continued at the right step
    for step in resumed.losses:
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-5, abs=1e-6), step
    assert summary["samples"].texts and all(isinstance(t, str) for _, t in summary["samples"].texts)

    model, codec, meta = model_from_checkpoint(summary["checkpoint"])
    assert meta["model_type"] == "gpt" and codec.type_name == "char"
    out = generate(model, [codec.encode("The ")], max_new_tokens=10, seed=0)
    assert len(out[0]) == 10


def test_csv_logger_records_loss_lr_and_throughput(tmp_path):
    run(compose_train([*TINY, "logger=csv", f"run_dir={tmp_path}"]))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").read_text().splitlines()))
    keys = {k for r in rows for k, v in r.items() if v}
    assert {"train/loss", "val/loss", "val/ppl", "lr", "tokens_per_s"} <= keys


def test_wandb_without_login_runs_offline_and_writes_the_run(tmp_path, caplog):
    run(compose_train([*TINY, "logger=wandb", f"run_dir={tmp_path}"]))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run folder written"
    assert any("offline" in r.message for r in caplog.records)
    assert (tmp_path / "wandb_run_id").read_text().strip()


def test_unknown_data_key_is_rejected_naming_it():
    with pytest.raises(ValueError, match=r"unknown key 'data.blok_size'. Did you mean 'data.block_size'\? "
                                         r"Accepted keys under 'data': .*batch_size"):
        instantiate({"_target_": "zoo.data.text.PydocDataModule", "blok_size": 3}, section="data")


def test_unknown_model_key_is_rejected_naming_it():
    cfg = compose_train([*TINY, "+model.n_layerz=3"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with pytest.raises(ValueError, match=r"n_layerz.*accepted"):
        build_module(resolved["model"], resolved["module"], codec=_FakeCodec())


def test_checkpoint_of_another_model_type_is_rejected(tmp_path):
    run(compose_train([*TINY, "trainer.max_steps=2", f"run_dir={tmp_path}"]))
    with pytest.raises(CheckpointError, match="holds a 'gpt' model, expected 'music_transformer'"):
        model_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", expect_type="music_transformer")


def test_bad_checkpoints_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="not a zoo one"):
        read_checkpoint(tmp_path / "plain.ckpt")
    run(compose_train([*TINY, "trainer.max_steps=2", f"run_dir={tmp_path / 'r'}"]))
    good = (tmp_path / "r" / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "trunc.ckpt")


# ---- command line: errors before any work, sampling, distributed ---------------------------------

def test_cli_unknown_key_and_group_option_fail_before_work(tmp_path):
    r = run_cli(["zoo-train", "model.n_layerz=2"], cwd=tmp_path)
    assert r.returncode != 0 and "unknown config key 'model.n_layerz'" in r.stderr
    assert "Did you mean 'model.n_layer'?" in r.stderr and "Accepted keys under 'model'" in r.stderr
    r = run_cli(["zoo-train", "model=gtp"], cwd=tmp_path)
    assert r.returncode != 0 and "gtp" in r.stderr and "gpt" in r.stderr  # names the accepted options
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_cli_print_config(tmp_path):
    r = run_cli(["zoo-train", "--cfg", "job", "model.n_layer=3"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "n_layer: 3" in r.stdout and "_target_: zoo.data.text.PydocDataModule" in r.stdout


def test_cli_text_files_errors(tmp_path):
    r = run_cli(["zoo-train", "data=text_files", f"data.path={tmp_path / 'nope'}", *TINY], cwd=tmp_path)
    assert r.returncode != 0 and "nope" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_cli(["zoo-train", "data=text_files", f"data.path={tmp_path / 'empty'}", *TINY], cwd=tmp_path)
    assert r.returncode != 0 and "empty" in r.stderr.lower()


@pytest.mark.slow
def test_cli_train_then_sample(tmp_path):
    r = run_cli(["zoo-train", *TINY, "trainer.max_steps=6"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "runs" / "gpt_pydoc" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and "validation loss" in r.stdout
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "prompt=The cl", "max_new_tokens=20", "seed=1",
                 "top_k=10", "top_p=0.95", "min_p=0.01", "repetition_penalty=1.1", "temperature=0.8"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("The cl") and len(r.stdout.rstrip("\n")) == len("The cl") + 20
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "prompt='\u4e2d\u6587'", "max_new_tokens=5"], cwd=tmp_path)
    assert r.returncode != 0 and "\u4e2d" in r.stderr and "vocabulary" in r.stderr
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "prompts=[a,'The cl']", "num_samples=2", "seed=0",
                 "max_new_tokens=12"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("=== sample") == 4


# DDP / FSDP against one process, sharded checkpoints, torchrun and multirun with DDP: tests/test_scale.py


@pytest.mark.slow
def test_cli_multirun_writes_each_job_to_its_own_folder(tmp_path):
    r = run_cli(["zoo-train", "-m", *TINY, "trainer.max_steps=2", "model.n_layer=1,2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpts = sorted(tmp_path.glob("multirun/gpt_pydoc/*/*/checkpoints/last.ckpt"))
    assert [c.parents[1].name for c in ckpts] == ["0", "1"]
    layers = [model_from_checkpoint(c)[2]["model_config"]["n_layer"] for c in ckpts]
    assert layers == [1, 2]


def test_nonfinite_loss_stops_with_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from zoo.training.module import NonFiniteLossError

    class Poison(L.Callback):  # corrupt the weights before step 3's forward (step 2's checkpoint is written)
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    pl_module.model.transformer.wte.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss nan at step 2 \(batch 2"):
        run(compose_train([*TINY, f"run_dir={tmp_path}"]), extra_callbacks=[Poison()])
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert torch.isfinite(ckpt["state_dict"]["model.transformer.wte.weight"]).all()


def test_nonfinite_weights_are_never_written_over_a_good_checkpoint(tmp_path):
    from zoo.training.module import NonFiniteLossError

    class Poison(L.Callback):  # the step-4 update "diverges": weights turn NaN before step 4's checkpoint
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:
                with torch.no_grad():
                    pl_module.model.lm_head.weight.fill_(float("inf"))

    with pytest.raises(NonFiniteLossError, match=r"non-finite weights at step 4.*not saved"):
        run(compose_train([*TINY, f"run_dir={tmp_path}"]), extra_callbacks=[Poison()])
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2 and torch.isfinite(ckpt["state_dict"]["model.lm_head.weight"]).all()


def test_resuming_refuses_a_newer_or_other_model_checkpoint_before_loading_weights(tmp_path):
    run(compose_train([*TINY, "trainer.max_steps=2", f"run_dir={tmp_path}"]))
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["zoo"]["version"] = 99
    torch.save(ckpt, last)
    with pytest.raises(CheckpointError, match=r"newer zoo \(checkpoint format version 99\).*Upgrade zoo"):
        run(compose_train([*TINY, "trainer.max_steps=4", f"run_dir={tmp_path}"]))
    ckpt["zoo"]["version"], ckpt["zoo"]["model_type"] = 1, "music_transformer"
    torch.save(ckpt, last)
    with pytest.raises(CheckpointError, match="holds a 'music_transformer' model but this run trains a 'gpt'"):
        run(compose_train([*TINY, "trainer.max_steps=4", f"run_dir={tmp_path}"]))
