"""Tracking: media per member in W&B (offline run folders), the same scalars in TensorBoard and CSV,
gradient norm, model summary, W&B resume and checkpoint artifacts, and the progress bar's text."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import compose_train, jsb_fixture
from omegaconf import OmegaConf

from zoo.members import SampleSet
from zoo.train import run
from zoo.training.callbacks import grad_norm
from zoo.training.progress import ProgressBar, human_count
from zoo.training.tracking import build_logger, log_media

SMALL = [  # the tiniest run of each member that still validates and samples (every 2 steps)
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "samples.every_n_steps=2", "samples.max_new_tokens=8",
    "checkpoint.every_n_steps=2", "threads=1", "data.batch_size=4",
]
MEMBERS = {  # experiment -> its extra overrides (data kept offline and small)
    "gpt_pydoc": ["model.block_size=32", "data.max_val_windows=4"],
    "image_gpt_digits": ["model.local_n_layer=1", "model.local_n_head=2", "model.local_n_embd=16"],
    "music_transformer_jsb": ["model.block_size=32"],
    "text2image_digits": ["model.local_n_layer=1", "model.local_n_head=2", "model.local_n_embd=16",
                          "data.num_eval=8"],
}


def member_cfg(experiment: str, run_dir: Path, *extra: str):
    data = [f"data.path={jsb_fixture(run_dir.parent, steps=32)}"] if experiment.endswith("jsb") else []
    return compose_train([f"experiment={experiment}", *SMALL, *MEMBERS[experiment], *data, f"run_dir={run_dir}",
                          *extra])


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.name)


def media(run: Path, kind: str, suffix: str) -> list[Path]:
    return sorted((run / "files" / "media" / kind).rglob(f"*{suffix}"))


# ---- W&B: every member's media land in the offline run folder --------------------------------------------

@pytest.mark.parametrize("experiment", ["image_gpt_digits", "music_transformer_jsb", "text2image_digits"])
def test_wandb_offline_run_holds_the_members_media_and_config(experiment, tmp_path):
    run_dir = tmp_path / "run"
    summary = run(member_cfg(experiment, run_dir, "logger=wandb"))
    (wb,) = offline_runs(run_dir)
    config = run_config(wb)
    assert config["model"]["type"] == summary_type(experiment) and config["name"] == experiment
    assert config["params/total"] == config["params/trainable"] == sum(p.numel() for p in model_params(summary))
    samples: SampleSet = summary["samples"]
    files = [*samples.images, *samples.audio, *(path for path, _ in samples.labelled)]
    assert all(p.is_relative_to(run_dir / "samples") and p.is_file() for p in files)  # whatever the logger
    pngs = media(wb, "images", ".png")
    assert len(pngs) == len(samples.images) + len(samples.labelled) and pngs  # sampled once: step 2 == the end
    history = history_rows(wb)
    images = next(r["samples/images"] for r in history if "samples/images" in r)
    assert images["captions"] == [samples.caption(p) for p in samples.images] and all(images["captions"])
    if experiment == "music_transformer_jsb":
        wavs = media(wb, "audio", ".wav")
        assert len(wavs) == len(samples.audio) == 2
        audio = next(r["samples/audio"] for r in history if "samples/audio" in r)
        assert [c.split(": ")[0] for c in audio["captions"]] == ["step 2 [scratch]", "step 2 [continue_val0]"]
        assert {p.suffix for p in (run_dir / "samples").iterdir()} == {".mid", ".wav", ".png"}
        assert any(c.endswith("piano roll") for c in images["captions"])
    else:
        labelled = next(r["samples/labelled"] for r in history if "samples/labelled" in r)
        assert labelled["captions"] == [c for _, c in samples.labelled]
        if experiment == "image_gpt_digits":
            assert labelled["captions"][:3] == ["class 0", "class 1", "class 2"] and len(labelled["captions"]) == 10
        else:  # text2image: each strip is captioned with the caption it was sampled from
            assert all(c.startswith("a ") for c in labelled["captions"]), labelled["captions"]
            listed = (run_dir / "samples" / "step_000002.txt").read_text().splitlines()
            assert [line.split(": ", 1)[1] for line in listed] == [repr(c) for c in labelled["captions"]]


def summary_type(experiment: str) -> str:
    return {"gpt_pydoc": "gpt", "image_gpt_digits": "image_gpt", "music_transformer_jsb": "music_transformer",
            "text2image_digits": "text2image"}[experiment]


def model_params(summary: dict) -> list[torch.Tensor]:
    from zoo.training.checkpoint import model_from_checkpoint

    return list(model_from_checkpoint(summary["checkpoint"])[0].parameters())


def wandb_records(wb: Path, timeout: float = 60.0) -> list:
    """The records of a finished offline run's `.wandb` transaction log. wandb-core writes the log in the
    background, after `run.finish()` returns: wait for the run's exit record."""
    deadline = time.monotonic() + timeout
    while True:
        records = _read_wandb_log(wb)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _read_wandb_log(wb: Path) -> list:
    """A LevelDB-style log of protobuf records: a 7-byte file header, then 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full record, 2/3/4 its first/middle/last chunk)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = wb.glob("*.wandb")
    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, chunks, pos = [], [], 7
    while pos + 7 <= len(data):
        left = block - pos % block
        kind = data[pos + 6] if left >= 7 else 0
        if kind == 0:  # the zero padding at the end of a block
            pos += left
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def _nested(items) -> dict:
    out: dict = {}
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


def history_rows(wb: Path) -> list[dict]:
    """The rows logged to an offline run (media values as their JSON descriptions)."""
    return [_nested(r.history.item) for r in wandb_records(wb) if r.WhichOneof("record_type") == "history"]


def run_config(wb: Path) -> dict:
    """The run's config: the run record's (given to wandb.init) updated by later config records. (wandb 0.31 writes
    no files/config.yaml for an offline run: the .wandb log holds the config until `wandb sync`.)"""
    config = {}
    for r in wandb_records(wb):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            config.update(_nested((r.run.config if kind == "run" else r.config).update))
    return config


def test_wandb_text_table_model_summary_artifacts_and_resume(tmp_path):
    """GPT: a text table per sampling step, parameter counts and the model tree; every checkpoint as an
    artifact (log_model=all, offline); a second run in the same folder resumes the same W&B run id."""
    run_dir = tmp_path / "run"
    run(member_cfg("gpt_pydoc", run_dir, "logger=wandb", "logger.log_model=all"))
    (first,) = offline_runs(run_dir)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert first.name.endswith(f"-{run_id}")
    (table,) = media(first, "table", ".table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["step", "prompt", "sample"] and content["data"][0][0] == 2
    summary = media(first, "html", ".html")[0].read_text()
    total = run_config(first)["params/total"]
    assert f"total {total:,} parameters" in summary and "FLOPs" not in summary  # no column of zeros
    rows = history_rows(first)
    assert [r["trainer/global_step"] for r in rows if "grad_norm" in r] == [0, 1], rows
    assert run_config(first)["params/total"] == run_config(first)["params/trainable"] > 0
    artifacts = artifact_names(first)
    assert artifacts and all(a == f"model-{run_id}" for a in artifacts)

    time.sleep(1)  # offline run folders are named by the second they start: keep the two apart
    resumed = run(member_cfg("gpt_pydoc", run_dir, "logger=wandb", "trainer.max_steps=4"))
    assert resumed["metrics"]["train/loss"] > 0
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)
    steps = [r["trainer/global_step"] for r in history_rows(runs[1]) if "train/loss" in r]
    assert steps and min(steps) >= 2  # the resumed run continues the step axis


def artifact_names(wb: Path, kind: str = "model") -> list[str]:
    return [r.artifact.name for r in wandb_records(wb)
            if r.WhichOneof("record_type") == "artifact" and r.artifact.type == kind]


def test_wandb_log_model_accepts_false_true_all_and_rejects_the_rest(tmp_path):
    assert OmegaConf.to_container(compose_train(["logger=wandb", "logger.log_model=all"]).logger)["log_model"] == "all"
    for value in (False, True, "all"):
        logger = build_logger({"kind": "wandb", "mode": "offline", "log_model": value}, run_dir=tmp_path, name="t")
        assert logger._log_model == value
    for bad in ("best", 1):
        with pytest.raises(ValueError, match=r"logger.log_model=.*; accepted: false .* true .* all"):
            build_logger({"kind": "wandb", "mode": "offline", "log_model": bad}, run_dir=tmp_path, name="t")


# ---- TensorBoard and CSV: the same scalars; media in the run folder ---------------------------------------

def test_tensorboard_and_csv_log_the_same_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["trainer.max_steps=4"]
    run(member_cfg("image_gpt_digits", tmp_path / "csv", "logger=csv", *overrides))
    run(member_cfg("image_gpt_digits", tmp_path / "tb", "logger=tensorboard", *overrides))
    with open(tmp_path / "csv" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    csv_names = {k for row in rows for k, v in row.items() if v} - {"step"}
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tb_names = set(events.Tags()["scalars"])
    expected = {"grad_norm", "lr", "train/loss", "val/loss", "val/ppl", "tokens_per_s", "params_total",
                "params_trainable", "epoch"}
    assert csv_names == tb_names == expected
    grad_steps = [int(r["step"]) for r in rows if r.get("grad_norm")]
    assert grad_steps == [0, 1, 2, 3] and all(math.isfinite(float(r["grad_norm"])) for r in rows if r["grad_norm"])
    assert [e.step for e in events.Scalars("grad_norm")] == grad_steps
    # media: the sample files in the run folder whatever the logger; TensorBoard also shows them
    for kind in ("csv", "tb"):
        files = sorted(p.relative_to(tmp_path / kind / "samples") for p in (tmp_path / kind / "samples").rglob("*.png"))
        assert Path("step_000002.png") in files and Path("step_000004_completion.png") in files
        assert Path("step_000004/class_9.png") in files and (tmp_path / kind / "model_summary.txt").is_file()
    image_tags = events.Tags()["images"]
    assert {"samples/image_0", "samples/image_1"} <= set(image_tags)
    assert [e.step for e in events.Images("samples/image_0")] == [2, 4]
    hparams = yaml.safe_load((tmp_path / "csv" / "csv" / "hparams.yaml").read_text())
    assert hparams["params/total"] == float(rows[0]["params_total"]) > 0


def test_tensorboard_gets_text_images_and_audio(tmp_path):
    import soundfile
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    png, wav = tmp_path / "grid.png", tmp_path / "clip.wav"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png)
    soundfile.write(str(wav), 0.5 * np.sin(np.linspace(0, 200, 800)).astype(np.float32), 8000)
    samples = SampleSet(texts=[("a|b", "line\nnext")], images=[png], audio=[wav], captions={str(png): "a grid"})
    logger = build_logger({"kind": "tensorboard"}, run_dir=tmp_path, name="t")
    log_media(logger, samples, step=7)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "audio": 0}).Reload()
    (image,) = events.Images("samples/image_0")
    assert (image.step, image.width, image.height) == (7, 8, 6)
    (audio,) = events.Audio("samples/audio_0")
    assert audio.step == 7 and audio.sample_rate == 8000 and audio.length_frames == 800
    text = events.Tensors("samples/text/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "a\\|b" in text and "line<br>next" in text
    assert events.Tensors("samples/image_0_caption/text_summary")[0].tensor_proto.string_val[0].decode() == "a grid"


# ---- gradient norm ----------------------------------------------------------------------------------------

def test_grad_norm_is_the_total_l2_norm_before_clipping():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    net[1].bias.requires_grad_(False)  # no gradient: skipped
    net(torch.randn(5, 4)).pow(2).sum().backward()
    expected = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]).norm()
    assert grad_norm(net.parameters()).item() == pytest.approx(expected.item(), rel=1e-6)
    assert grad_norm(net.parameters()).item() == pytest.approx(
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=1e-3).item(), rel=1e-6)  # norm before clipping
    assert grad_norm([torch.nn.Parameter(torch.ones(2))]) is None


def test_grad_norm_of_fsdp2_sharded_gradients(tmp_path):
    """FSDP2 gradients are DTensors: their norm is reduced over the mesh (one process, gloo)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
        reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
        reference.load_state_dict(net.state_dict())
        fully_shard(net, mesh=init_device_mesh("cpu", (1,)))
        x = torch.randn(5, 4)
        net(x).pow(2).sum().backward()
        reference(x).pow(2).sum().backward()
        assert all(isinstance(p.grad, DTensor) for p in net.parameters())
        assert grad_norm(net.parameters()).item() == pytest.approx(grad_norm(reference.parameters()).item(), rel=1e-6)
    finally:
        dist.destroy_process_group()


# ---- progress bar -----------------------------------------------------------------------------------------

def test_progress_bar_metrics_show_tokens_per_second_and_eta():
    shown = ProgressBar.format_metrics({"train/loss": 2.5, "v_num": 0, "tokens_per_s": 12345.6}, eta_s=3725.4)
    assert shown == {"train/loss": 2.5, "tok/s": "12.3k", "eta": "1:02:05"}
    assert list(shown)[-1] == "eta" and ProgressBar.format_metrics({}, eta_s=None) == {"eta": "-:--:--"}
    assert [human_count(x) for x in (12.34, 999.4, 1234.5, 123456, 2.5e6)] == ["12.3", "999", "1.23k", "123k", "2.5M"]


def test_progress_bar_counts_optimizer_steps_from_the_resumed_step():
    from types import SimpleNamespace

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_steps=1000, global_step=400)
    assert bar.total_train_batches == 1000
    assert bar._get_train_description(0).strip() == "train"
    assert bar.eta_seconds(400, 1000) is None  # nothing measured yet
    bar._clock = (400, 100.0)  # resumed at step 400: earlier steps do not count towards the pace
    assert bar.eta_seconds(400, 1000, now=110.0) is None
    assert bar.eta_seconds(410, 1000, now=110.0) == pytest.approx(590.0)  # 1 step/s, 590 steps left
    assert bar.eta_seconds(1000, 1000, now=200.0) == 0
    assert bar.eta_seconds(410, -1, now=110.0) is None  # no step budget (epoch-based training)


def test_progress_bar_of_a_resumed_run_starts_at_the_resumed_step(tmp_path, monkeypatch):
    import zoo.training.progress
    import zoo.training.run

    seen = []

    class Recording(zoo.training.progress.ProgressBar):
        def on_train_batch_end(self, trainer, *args) -> None:
            super().on_train_batch_end(trainer, *args)
            (task,) = [t for t in self.progress.tasks if t.id == self.train_progress_bar_id]
            seen.append((int(task.completed), task.total, self.get_metrics(trainer, trainer.lightning_module)))

    monkeypatch.delenv("ZOO_PLAIN_PROGRESS", raising=False)  # zoo-train adds its rich bar
    monkeypatch.setattr(zoo.training.run, "ProgressBar", Recording)  # the name the run builds its bar from
    run(member_cfg("gpt_pydoc", tmp_path / "run", "logger=none", "samples.every_n_steps=0"))
    assert [(c, t) for c, t, _ in seen] == [(1, 2), (2, 2)]
    seen.clear()
    run(member_cfg("gpt_pydoc", tmp_path / "run", "logger=none", "samples.every_n_steps=0", "trainer.max_steps=5"))
    assert [(c, t) for c, t, _ in seen] == [(3, 5), (4, 5), (5, 5)]  # optimizer steps of the whole run
    first, last = seen[0][2], seen[-1][2]
    assert "tok/s" not in first and last["tok/s"][0].isdigit()  # throughput needs two steps of this process
    assert last["eta"] == "0:00:00" and re.fullmatch(r"\d+:\d\d:\d\d", first["eta"]) and "v_num" not in last


def test_sample_callback_asks_the_member_and_rejects_what_it_does_not_take(tmp_path):
    from types import SimpleNamespace

    from zoo.codecs.text import CharCodec
    from zoo.training.callbacks import SampleCallback

    module = SimpleNamespace(codec=CharCodec.fit("abc"), model=SimpleNamespace(model_type="gpt"))
    cb = SampleCallback(tmp_path, every_n_steps=0, max_new_tokens=8, temperature=0.8, guidance=None, stop=[])
    cb.setup(None, module, "fit")
    assert cb.member.name == "text" and cb.sampling.max_new_tokens == 8
    with pytest.raises(ValueError, match="`guidance` does not apply to text models"):
        SampleCallback(tmp_path, guidance=2.0).setup(None, module, "fit")
    with pytest.raises(ValueError, match="did you mean 'guidance'"):
        SampleCallback(tmp_path, guidance_scale=2.0)
