"""Scale: activation checkpointing, FSDP2 sharding of every block, DDP/FSDP on 2 CPU processes (gloo)
against one process, sharded checkpoints (resume, export), torchrun, Hydra multirun with DDP, precision
and compile.

Tolerances. Two processes see the same global batch as one process (zoo's BatchStream slices it), so
losses differ only by float32 summation order (gradient all-reduce / reduce-scatter, per-rank loss
sums). Measured maximum relative differences over the 4 steps: 2.1e-7 (gpt, fsdp, resumed from a
sharded checkpoint), 1.2e-7 (music_transformer, fsdp), 8.4e-8 (image_gpt, ddp in a multirun). rel 1e-4
leaves a ~500x margin for other machines and thread counts, and is 10-100x below what a change to the
data a step sees does (one process on one rank's half of each batch instead of the whole: 1.3e-3 to
1e-2 relative over these 4 steps). text2image is looser, for a reason in the model (see its test).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ROOT, TINY_MODELS, compose_train, run_cli, tiny_model_overrides
from omegaconf import OmegaConf

from zoo.core.layers import Block
from zoo.training.builders import build_data, build_module, is_sharded_checkpoint, resolve_ckpt_path
from zoo.training.module import GenerativeModule

MODELS = sorted(TINY_MODELS)


def tiny_module(model: str, directory, overrides: tuple[str, ...] = ()) -> tuple[GenerativeModule, dict]:
    """(a tiny GenerativeModule with seeded weights, its first training batch)."""
    cfg = OmegaConf.to_container(compose_train([*tiny_model_overrides(model, directory), *overrides]), resolve=True)
    dm = build_data(cfg["data"])
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    module = build_module(cfg["model"], cfg["module"], codec=dm.codec)
    return module, next(iter(dm.train_dataloader()))


def loss_and_grads(module: GenerativeModule, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.train()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout / condition-dropout draws for every variant
    loss, _ = module.loss(batch)
    loss.backward()
    full = lambda g: g.full_tensor() if hasattr(g, "full_tensor") else g  # FSDP2 grads are DTensors
    return loss.detach(), {n: full(p.grad) for n, p in module.named_parameters() if p.grad is not None}


def saved_tensor_count(module: GenerativeModule, batch: dict) -> int:
    """Tensors autograd keeps for backward during one training forward (what checkpointing saves)."""
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.loss(batch)
    return count


@pytest.mark.parametrize("model", MODELS)
def test_activation_checkpointing_and_fsdp_keep_loss_gradients_and_keys(model, tmp_path):
    """Checkpointing each block (alone, then under FSDP2 on a 1-process gloo group) leaves the loss,
    every gradient and every state-dict key as they were, while autograd saves fewer tensors."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    overrides = ("model.dropout=0.1",)  # checkpointing must replay dropout masks exactly
    plain, batch = tiny_module(model, tmp_path, overrides)
    c = plain.model.config  # the image models have a global and a local stack: both are sharded
    blocks = plain.model.blocks()
    assert len(blocks) == c.n_layer + getattr(c, "local_n_layer", 0) == sum(isinstance(m, Block) for m in
                                                                             plain.model.modules())
    ref_loss, ref_grads = loss_and_grads(plain, batch)
    keys = list(plain.state_dict())

    ckpt, _ = tiny_module(model, tmp_path, (*overrides, "module.activation_checkpointing=true"))
    ckpt.configure_model()
    ckpt.configure_model()  # idempotent: Lightning may call it again
    assert list(ckpt.state_dict()) == keys
    loss, grads = loss_and_grads(ckpt, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:  # the recomputation repeats the same float ops: identical up to rounding
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert saved_tensor_count(ckpt, batch) < 0.6 * saved_tensor_count(plain, batch)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        sharded, _ = tiny_module(model, tmp_path, (*overrides, "module.activation_checkpointing=true"))
        sharded._device_mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        sharded.configure_model()
        assert all(isinstance(b, FSDPModule) for b in sharded.model.blocks()) and isinstance(sharded.model, FSDPModule)
        assert list(sharded.state_dict()) == keys
        loss, grads = loss_and_grads(sharded, batch)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    finally:
        dist.destroy_process_group()


def test_sharded_checkpoint_paths_are_recognised_and_bad_ones_named(tmp_path):
    from zoo.hub.export import consolidate_checkpoint

    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "last.ckpt").mkdir(parents=True)
    assert resolve_ckpt_path("last", ckpt_dir) is None  # an empty folder is no checkpoint: fresh start
    with pytest.raises(FileNotFoundError, match=r"is a folder but not a sharded checkpoint.*'last' or null"):
        resolve_ckpt_path(str(ckpt_dir / "last.ckpt"), ckpt_dir)
    with pytest.raises(ValueError, match="not a sharded checkpoint folder"):
        consolidate_checkpoint(ckpt_dir / "last.ckpt", tmp_path / "out.ckpt")
    (ckpt_dir / "last.ckpt" / ".metadata").write_bytes(b"")
    torch.save({"global_step": 3}, ckpt_dir / "last.ckpt" / "meta.pt")
    assert is_sharded_checkpoint(ckpt_dir / "last.ckpt")
    assert resolve_ckpt_path("last", ckpt_dir) == str(ckpt_dir / "last.ckpt")
    with pytest.raises(ValueError, match="not a zoo one"):
        consolidate_checkpoint(ckpt_dir / "last.ckpt", tmp_path / "out.ckpt")


# ---- 2 processes on CPU (gloo) against 1 process on the same global batch ------------------------------

def csv_losses(run_dir: Path, key: str) -> dict[int, float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines()))
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


def one_process(model: str, tmp_path: Path, run_dir: Path, extra: tuple[str, ...] = ()) -> dict:
    """The reference: one process with batch 8 (= 2 processes × 4), in this process."""
    from zoo.train import run

    cfg = compose_train([*tiny_model_overrides(model, tmp_path), "logger=csv", "data.batch_size=8", *extra,
                         f"run_dir={run_dir}"])
    return run(cfg)


def assert_same_curve(one: Path, two: Path | list[Path], *, rel: float = 1e-4) -> float:
    """Train and validation losses agree step for step; returns the largest relative difference seen."""
    worst = 0.0
    for key in ("train/loss", "val/loss"):
        ref = csv_losses(one, key)
        got = {}
        for d in two if isinstance(two, list) else [two]:
            got |= csv_losses(d, key)
        assert got.keys() == ref.keys() and len(ref) >= (2 if key == "train/loss" else 1), (key, ref, got)
        for step in ref:
            assert got[step] == pytest.approx(ref[step], rel=rel), (key, step, ref, got)
            worst = max(worst, abs(got[step] - ref[step]) / abs(ref[step]))
    return worst


# The package's own folder first, whichever checkout the editable install points at.
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def two_process_cli(model: str, strategy: str, tmp_path: Path, run_dir: Path, *extra: str,
                    launcher: list[str] | None = None) -> None:
    args = [*tiny_model_overrides(model, tmp_path), "logger=csv", f"strategy={strategy}", "trainer.devices=2",
            *extra, f"run_dir={run_dir}"]
    if launcher is None:
        r = run_cli(["zoo-train", *args], cwd=tmp_path, env=ENV)
    else:  # e.g. torchrun: the processes are started from outside, Lightning joins them
        r = subprocess.run([*launcher, "-m", "zoo.train", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **ENV})
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resumes_like_one_process_and_exports(tmp_path):
    """gpt under FSDP2 on 2 processes, activation checkpointing on, sharded checkpoints: 2 steps, then a
    second run resumes from the sharded folder for 2 more. Its loss curve is the 1-process curve, and the
    folder consolidates into one file whose weights are the 1-process run's and that samples."""
    from zoo.hub import load_export
    from zoo.hub.export import consolidate_checkpoint, export_checkpoint
    from zoo.sampling import generate
    from zoo.training.checkpoint import model_from_checkpoint, read_checkpoint

    one_process("gpt", tmp_path, tmp_path / "one")
    sharded = ["module.activation_checkpointing=true", "strategy.save_distributed_checkpoint=true"]
    two_process_cli("gpt", "fsdp", tmp_path, tmp_path / "first", *sharded, "trainer.max_steps=2")
    folder = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert is_sharded_checkpoint(folder) and resolve_ckpt_path("last", folder.parent) == str(folder)
    assert not list(folder.parent.glob(".*sharded-*"))  # written aside, swapped in whole, nothing left over
    two_process_cli("gpt", "fsdp", tmp_path, tmp_path / "resumed", *sharded, f"ckpt_path={folder}")
    worst = assert_same_curve(tmp_path / "one", [tmp_path / "first", tmp_path / "resumed"])
    print(f"fsdp resumed vs one process: max relative loss difference {worst:.2e}")

    single = consolidate_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt", tmp_path / "full.ckpt")
    ref = read_checkpoint(tmp_path / "one" / "checkpoints" / "last.ckpt")
    ckpt = read_checkpoint(single)
    assert ckpt["global_step"] == 4 and ckpt["zoo"] == {**ref["zoo"], "train_config": ckpt["zoo"]["train_config"]}
    assert ckpt["state_dict"].keys() == ref["state_dict"].keys()
    for k, v in ref["state_dict"].items():
        torch.testing.assert_close(ckpt["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    model, codec, meta = model_from_checkpoint(single)
    assert meta["model_type"] == "gpt" and len(generate(model, [codec.encode("a")], max_new_tokens=5, seed=0)[0]) == 5
    exported = load_export(export_checkpoint(folder, tmp_path / "export", dtype="float32", measure=False))
    assert exported.model_type == "gpt"


@pytest.mark.slow
def test_music_transformer_under_fsdp_matches_one_process(tmp_path):
    """The same global batch split over 2 processes gives the 1-process loss curve (train and val)."""
    one_process("music_transformer", tmp_path, tmp_path / "one")
    two_process_cli("music_transformer", "fsdp", tmp_path, tmp_path / "two")
    worst = assert_same_curve(tmp_path / "one", tmp_path / "two")
    print(f"music_transformer fsdp vs one process: max relative loss difference {worst:.2e}")


@pytest.mark.slow
def test_torchrun_launch_of_text2image_under_ddp_matches_one_process(tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m zoo.train strategy=ddp trainer.devices=2`: Lightning
    detects the torchelastic environment and joins the 2 processes torchrun started. Activation
    checkpointing is on (under DDP here; under FSDP in the sharded-checkpoint test).

    Tolerance rel 2e-3, not 1e-4: text2image weighs its text and image cross-entropies by their target
    counts *on each rank* (Text2Image._weight_gradients), which differ between a half batch and the
    whole, so its gradients differ by ~1e-2 relative and the loss by a few 1e-4 after 2 steps (measured
    3.9e-4). Its first step, before any update, agrees to rounding."""
    one_process("text2image", tmp_path, tmp_path / "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two_process_cli("text2image", "ddp", tmp_path, tmp_path / "two", "module.activation_checkpointing=true",
                    launcher=torchrun)
    first = min(csv_losses(tmp_path / "one", "train/loss"))
    assert csv_losses(tmp_path / "two", "train/loss")[first] == pytest.approx(
        csv_losses(tmp_path / "one", "train/loss")[first], rel=1e-5)
    worst = assert_same_curve(tmp_path / "one", tmp_path / "two", rel=2e-3)
    print(f"torchrun text2image ddp vs one process: max relative loss difference {worst:.2e}")


@pytest.mark.slow
def test_hydra_multirun_with_ddp_writes_each_job_to_its_own_folder(tmp_path):
    """`zoo-train -m strategy=ddp trainer.devices=2 model.n_layer=1,2`: Lightning re-launches rank 1 with the
    script's argv; each job's rank 1 must run that job (not the sweep again) and write into its folder."""
    args = [*tiny_model_overrides("image_gpt", tmp_path), "logger=csv", "trainer.max_steps=2",
            "strategy=ddp", "trainer.devices=2"]
    r = run_cli(["zoo-train", "-m", *[a for a in args if not a.startswith("model.n_layer=")], "model.n_layer=1,2"],
                cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(tmp_path.glob("multirun/*/*/*/checkpoints/last.ckpt"))
    assert [c.parents[1].name for c in jobs] == ["0", "1"], jobs
    assert not (tmp_path / "runs").exists()  # no child fell back to the single-run folder
    assert not list(tmp_path.glob("multirun/*/*/*/multirun")) and len(list(tmp_path.glob("multirun/*/*"))) == 1
    from zoo.training.checkpoint import model_from_checkpoint

    layers = [model_from_checkpoint(c)[0].config.n_layer for c in jobs]
    assert layers == [1, 2]
    one_process("image_gpt", tmp_path, tmp_path / "one", ("trainer.max_steps=2", "model.n_layer=1"))
    worst = assert_same_curve(tmp_path / "one", jobs[0].parents[1])
    print(f"multirun ddp job 0 vs one process: max relative loss difference {worst:.2e}")


# ---- precision and compile (one process) ----------------------------------------------------------------

class RecordLoss(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.param_dtypes: set[torch.dtype] = set()
        self.scaler = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.param_dtypes |= {p.dtype for p in pl_module.parameters()}
        self.scaler = getattr(trainer.precision_plugin, "scaler", None)


def train_losses(tmp_path: Path, name: str, *overrides: str) -> RecordLoss:
    from zoo.train import run

    rec = RecordLoss()
    run(compose_train([*tiny_model_overrides("gpt", tmp_path), "module.warmup_steps=1", *overrides,
                       f"run_dir={tmp_path / name}"]), extra_callbacks=[rec])
    return rec


def test_bf16_mixed_on_cpu_trains_like_fp32_and_bf16_true_runs(tmp_path):
    """12 steps at lr 2e-3 from ln(vocab) ~ 4.63: both fall by > 0.3 nats (measured 0.56), and bf16
    autocast, which rounds matmul inputs to 8 bits of mantissa, ends within 2e-3 relative of fp32
    (measured 2.5e-5: the rounding errors average out over the 32-wide dot products)."""
    steps = ("trainer.max_steps=12", "trainer.val_check_interval=12", "data.batch_size=8")
    fp32 = train_losses(tmp_path, "fp32", *steps)
    bf16 = train_losses(tmp_path, "bf16", *steps, "precision=bf16-mixed")
    print(f"fp32 {fp32.losses[0]:.4f} -> {fp32.losses[-1]:.4f}; "
          f"bf16-mixed {bf16.losses[0]:.4f} -> {bf16.losses[-1]:.4f}")
    assert bf16.losses[0] != fp32.losses[0]  # bf16 compute did happen
    assert fp32.losses[-1] < fp32.losses[0] - 0.3 and bf16.losses[-1] < bf16.losses[0] - 0.3
    assert bf16.losses[-1] == pytest.approx(fp32.losses[-1], rel=2e-3)
    assert bf16.param_dtypes == {torch.float32}  # mixed: float32 master weights, bf16 compute
    true = train_losses(tmp_path, "bf16_true", "trainer.max_steps=2", "precision=bf16-true")
    assert true.param_dtypes == {torch.bfloat16} and all(math.isfinite(x) for x in true.losses)


def test_float16_on_cpu_is_refused_naming_the_accepted_precisions(tmp_path):
    with pytest.raises(ValueError, match=r"16-mixed.*needs a CUDA GPU.*'32-true', 'bf16-mixed', 'bf16-true'"):
        train_losses(tmp_path, "fp16", "trainer.max_steps=1", "precision=16-mixed")


@pytest.mark.gpu
def test_16_mixed_trains_with_loss_scaling_on_gpu(tmp_path):
    rec = train_losses(tmp_path, "fp16", "trainer.max_steps=8", "precision=16-mixed", "trainer.accelerator=gpu")
    assert rec.scaler is not None and rec.losses[-1] < rec.losses[0] and all(map(math.isfinite, rec.losses))


def test_compile_in_place_keeps_checkpoint_keys(tmp_path, monkeypatch):
    """compile=true compiles the model in place: the checkpoint has the uncompiled model's keys (no
    `_orig_mod.`) and loads into an uncompiled model. Dynamo traces for real; the "eager" backend skips
    Inductor's C++ code generation (2+ minutes here), which has no bearing on module names."""
    from zoo.training.checkpoint import model_from_checkpoint, read_checkpoint

    compile_in_place = torch.nn.Module.compile
    compiled = []

    def eager_compile(self, *args, **kwargs):
        compiled.append(self)
        return compile_in_place(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    train_losses(tmp_path, "compiled", "trainer.max_steps=2", "compile=true", "samples.max_new_tokens=2")
    assert len(compiled) == 1 and compiled[0]._compiled_call_impl is not None
    plain, _ = tiny_module("gpt", tmp_path)
    ckpt = read_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")
    assert list(ckpt["state_dict"]) == list(plain.state_dict())
    model, _, _ = model_from_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")
    assert model._compiled_call_impl is None and model(torch.zeros(1, 4, dtype=torch.long)).isfinite().all()


# ---- launchers: SLURM through hydra-submitit-launcher, sbatch -------------------------------------------

def test_slurm_launcher_config_composes_from_the_trainer_settings():
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (in the [test] extra: missing fails, never skips)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2",
                                 "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min > 0


def test_sbatch_script_is_valid_bash_with_one_task_per_gpu():
    script = ROOT / "scripts" / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    directives = dict(line.split()[1].lstrip("-").split("=", 1) for line in script.read_text().splitlines()
                      if line.startswith("#SBATCH ") and "=" in line)
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]  # Lightning: tasks per node == devices
    assert "srun python -m zoo.train" in script.read_text()


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (in the [test] extra: missing fails, never skips)
    r = run_cli(["zoo-train", "-m", "hydra/launcher=submitit_local", *tiny_model_overrides("gpt", tmp_path),
                 "trainer.max_steps=2", "seed=1"], cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpts = sorted(tmp_path.glob("multirun/*/*/*/checkpoints/last.ckpt"))
    assert [c.parents[1].name for c in ckpts] == ["0"]
    assert list(tmp_path.glob("multirun/*/*/.submitit/*"))  # the jobs went through submitit
