"""Export: turn a zoo-train `.ckpt` into a self-contained folder that `zoo.load(DIR)` reads safely.

    zoo-export checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt out=exports/gpt-pydoc
    zoo-export checkpoint=... out=... dtype=bfloat16 name=my-model measure=false
    zoo-export checkpoint=runs/NAME/checkpoints/last.ckpt out=NAME-full.ckpt   # sharded folder -> one file

The folder holds `model.safetensors` (weights, no pickle; tied tensors stored once), `config.json`
(format marker, model type and config, the resolved training config with absolute paths removed,
the model card), `codec.json` (+ the codec's own files), `generation_config.json` (sampling defaults)
and `README.md` (the model card: Hugging Face metadata in YAML front matter, which
`huggingface_hub.ModelCard` parses, then a human-readable table). Nothing in it refers to the machine
it came from. `zoo-export ... push_to=ORG/NAME` uploads the folder (zoo.hub.hf_hub.push).

`checkpoint` may also be a sharded checkpoint folder (strategy=fsdp with
strategy.save_distributed_checkpoint=true): it is consolidated into full tensors first, without any
process group. With `out=FILE.ckpt` the consolidated single-file zoo checkpoint is all that is
written; `zoo-sample checkpoint=FILE.ckpt` and `zoo.checkpoints.model_from_checkpoint` read it.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCardData
from safetensors.torch import save_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from zoo.checkpoints.lora import lora_state_dict, peft_adapter_config, unload_lora
from zoo.checkpoints.reading import model_from_checkpoint, read_checkpoint
from zoo.hub.adapters import write_adapters
from zoo.hub.loading import _SAMPLING_KEYS, Pretrained, generation_defaults, load_checkpoint, load_export
from zoo.hub.registry import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    GENERATION_FILE,
    WEIGHTS_FILE,
)
from zoo.models.base import upgrade_config
from zoo.training.builders import build_data, is_sharded_checkpoint
from zoo.training.init_from import data_section

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DATA_LICENSES = {  # data.name -> what the training data may be used under
    "pydoc": "Python Software Foundation License 2.0 (Python's documentation, module pydoc_data.topics)",
    "digits": "CC BY 4.0 (UCI ML hand-written digits, as shipped by scikit-learn)",
    "bach_chorales": "public domain compositions; encodings from the music21 corpus (BSD-3-Clause)",
    "jsb_chorales": "public domain compositions; JSB Chorales dataset (Boulanger-Lewandowski et al. 2012)",
}


def sanitize(value: Any, where: str = "config", *, report: bool = True) -> Any:
    """A copy of `value` with absolute filesystem paths replaced by None (they mean nothing elsewhere), each
    named in one log line when `report`."""
    if isinstance(value, dict):
        return {k: sanitize(v, f"{where}.{k}", report=report) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v, f"{where}[{i}]", report=report) for i, v in enumerate(value)]
    if isinstance(value, str) and (value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] == ":\\")):
        if report:
            log.info("export: dropping the absolute path %s=%r", where, value)
        return None
    return value


def validation_data(train_config: dict[str, Any], codec: Any = None, *, cache_dir: str | Path | None = None,
                    data: dict[str, Any] | None = None) -> Any:
    """The validation split of a run's training data: its data module rebuilt from `train_config["data"]`,
    prepared and set up.

    A fine-tuned run (`init_from`) encoded its data with the source's codec, so `codec` (the model's) is
    used again rather than a new one fitted to the data. `cache_dir` and `data` override data options.
    A file or folder the run read that is gone raises the data module's FileNotFoundError.
    """
    data_cfg = dict(train_config.get("data") or {})
    if not data_cfg:
        raise ValueError("this model has no training data config to measure on")
    if train_config.get("init_from") and codec is not None:  # fine-tuned: the data was encoded with the source's
        # codec: handed to a text module, its keys (patch size, levels, colour clusters) to an image module
        data_cfg = data_section(str(train_config["init_from"]), codec, data_cfg, ())
    if cache_dir is not None:
        data_cfg["cache_dir"] = str(cache_dir)
    data_cfg.update(data or {})
    dm = build_data(data_cfg)
    dm.prepare_data()
    dm.setup("validate")
    return dm


def measure_loss(m: Pretrained, *, max_batches: int | None = None, cache_dir: str | Path | None = None,
                 data: dict[str, Any] | None = None, datamodule: Any = None) -> float:
    """Mean next-token cross-entropy (nats/token) on the validation split of the model's training data.

    The data module is rebuilt from the training config (`validation_data`), so this is the run's
    `val/loss` recomputed. `max_batches` limits the work (None = the whole split). `data` overrides data
    options, e.g. {"path": "Jsb16thSeparated.json"} for data an export keeps no path to; `datamodule`
    replaces the rebuilt one (e.g. one holding a frozen copy of the validation pieces).
    """
    if datamodule is None:
        dm = validation_data(m.config.get("train_config") or {}, m.codec, cache_dir=cache_dir, data=data)
    else:
        dm = datamodule
        dm.setup("validate")
    device = next(m.model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(dm.val_dataloader()):
            if max_batches is not None and i >= max_batches:
                break
            cond = batch.get("cond")
            logits = m.model(batch["idx"].to(device), cond=None if cond is None else cond.to(device))
            targets = batch["targets"].to(device)
            total += float(torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    return total / count


def save_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype) -> None:
    """Floating tensors cast to `dtype`; a tensor shared by several names (tied weights) stored once."""
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ptr in seen:
            continue
        seen.add(ptr)
        state[k] = (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
    save_file(state, str(path), metadata={"format": EXPORT_FORMAT})
    path.chmod(0o644)  # safetensors writes 0600; package data must be readable by every user


# A member's Hub pipeline tag (how the Hub lists and searches the model); members without one get none.
PIPELINE_TAGS = {"text": "text-generation", "image": "unconditional-image-generation", "text2image": "text-to-image"}


def card_metadata(name: str, config: dict[str, Any], member: str | None = None) -> ModelCardData:
    """The model card's Hugging Face metadata: licence, library, tags, data set and the measured metric.

    `license` is the card's `license` field (a Hub licence id: mit, apache-2.0, cc-by-4.0, ...), else
    "other": the weights' terms are the exporter's to state, within the training data's licence."""
    card = config["card"]
    data = card.get("data")
    evals = None
    if card.get("metric_value") is not None and data:
        evals = [EvalResult(task_type=PIPELINE_TAGS.get(member or "", "other"), dataset_type=data, dataset_name=data,
                            dataset_split="validation", metric_type="loss", metric_value=card["metric_value"],
                            metric_name=card.get("metric") or "val loss")]
    tags = ["zoo", config["model_type"]] + ([member] if member and member != config["model_type"] else [])
    return ModelCardData(model_name=name, library_name="zoo", license=card.get("license") or "other",
                         tags=tags, datasets=[data] if data else None, pipeline_tag=PIPELINE_TAGS.get(member or ""),
                         eval_results=evals)


def model_card(name: str, config: dict[str, Any], member: str | None = None) -> str:
    """README.md: YAML front matter (`card_metadata`), then the card as a table and the model config."""
    card, mc = config["card"], config["model_config"]
    params = card.get("parameters")
    load_as = f"hf:{card['hub_repo']}" if card.get("hub_repo") else name
    lines = ["---", card_metadata(name, config, member).to_yaml().strip(), "---", "", f"# {name}", "",
             f"A zoo `{config['model_type']}` model ({params:,} parameters, weights in {config['dtype']}).", "",
             "```python", "import zoo", f"m = zoo.load({load_as!r})  # or zoo.load(THIS_FOLDER)", "```", "",
             "| | |", "|---|---|"]
    for key in ("data", "data_license", "license", "steps", "hardware", "train_command", "metric", "metric_value",
                "metric_command", "scoring", "sample"):
        if card.get(key) is not None:
            lines.append(f"| {key.replace('_', ' ')} | {card[key]} |")
    lines += sample_stats_section(card.get("sample_stats"))
    lines += ["", "Model config:", "", "```json", json.dumps(mc, indent=2), "```", ""]
    return "\n".join(lines)


def sample_stats_section(stats: dict[str, Any] | None) -> list[str]:
    """README lines for the card's `sample_stats`: {"about", "command", "header": [...], "rows": [[...], ...]}
    (for music: zoo.eval.music_stats.card_table, written by benchmarks/music_stats.py --card); none without."""
    if not stats:
        return []
    lines = ["", "## Sample statistics", "", f"{stats['about']}. Measured with `{stats['command']}`.", "",
             "| " + " | ".join(stats["header"]) + " |", "|" + "---|" * len(stats["header"])]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in stats["rows"]]


def export(m: Pretrained, out: str | Path, *, dtype: str = "float16", name: str | None = None,
           card: dict[str, Any] | None = None, report: bool = True) -> Path:
    """Write `m` as an exported folder at `out` (created; existing files of the same names replaced); `report`:
    log each absolute path the written config drops (once per export: a rewrite passes False)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not accepted; choose one of {sorted(DTYPES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = name or out.name
    train_config = sanitize(m.config.get("train_config") or {}, "train_config", report=report)
    config = {
        "format": EXPORT_FORMAT, "version": 1, "name": name, "model_type": m.model_type,
        "model_config": upgrade_config(m.config["model_config"]), "dtype": dtype, "train_config": train_config,
        "card": {"parameters": sum(p.numel() for p in m.model.parameters()), **(card or {})},
    }
    save_weights(m.model, out / WEIGHTS_FILE, DTYPES[dtype])
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    if m.codec is not None:
        m.codec.save(out)
    (out / GENERATION_FILE).write_text(json.dumps(m.generation or generation_defaults(train_config), indent=2))
    (out / "README.md").write_text(model_card(name, config, _member_name(m)))
    return out


def _member_name(m: Pretrained) -> str | None:
    try:
        return m.member.name
    except ValueError:  # no member serves it (a plug-in's model without its package): no pipeline tag
        return None


# What a consolidated checkpoint keeps of a sharded one besides the weights. The optimizer state is
# dropped: it is keyed by parameter name there (a sharded run resumes from the folder itself).
_CONSOLIDATED_KEYS = ("zoo", "global_step", "epoch", "pytorch-lightning_version")


def consolidate_checkpoint(folder: str | Path, out: str | Path) -> Path:
    """Write the sharded checkpoint `folder` as one zoo `.ckpt` file `out` (full tensors on CPU).

    The file holds `state_dict` (keys `model.…`, as a single-process run writes them), the zoo
    metadata `zoo`, `global_step` and `epoch`; not the optimizer state. Runs in one process, no
    process group needed, whatever number of ranks wrote the folder.
    """
    folder, out = Path(folder), Path(out)
    if not is_sharded_checkpoint(folder):
        raise ValueError(f"{folder} is not a sharded checkpoint folder (expected .metadata and meta.pt in it, "
                         "as strategy=fsdp with strategy.save_distributed_checkpoint=true writes)")
    meta = torch.load(folder / "meta.pt", map_location="cpu", weights_only=True)
    if "zoo" not in meta:
        raise ValueError(f"{folder} is a sharded Lightning checkpoint but not a zoo one (no 'zoo' metadata)")
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(folder, Path(tmp) / "full.pt")
        full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    state = dict(full["state_dict"])
    ckpt = {"state_dict": state, **{k: meta[k] for k in _CONSOLIDATED_KEYS if k in meta}}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    log.info("consolidated %s (%d tensors, step %s) into %s", folder, len(state), meta.get("global_step"), out)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, dtype: str = "float16", name: str | None = None,
                      measure: bool | str = "auto", hardware: str | None = None, max_batches: int | None = None,
                      card: dict[str, Any] | None = None, adapters: str = "merge",
                      generation: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> Path:
    """Export a zoo-train `.ckpt`; with `measure`, the card's metric is the exported weights' val loss.

    The loss is measured on the run's own validation data, rebuilt from its data config as it trained
    (absolute paths included: only the written config drops them; `data` overrides its options, e.g.
    {"path": "corpus/"} for data that moved) before anything is written. Data that cannot be rebuilt (moved,
    deleted, a relative path or glob read from another folder) does not stop the export: with
    measure="auto" (default) the card has no metric and one warning says why and how to add it; measure=True
    insists (the error names the data and the way out); measure=False skips measuring.

    `generation` overrides sampling defaults the run's `samples` section left (generation_config.json), e.g.
    {"guidance": 4.0} when the best guidance was found after training.

    `card` adds or overrides model-card fields (e.g. train_command, hardware details). A LoRA run's
    adapters are merged into plain weights (`adapters="merge"`: the export loads anywhere, no peft), or,
    with `adapters="separate"`, written beside the base weights as peft's `adapter_model.safetensors` +
    `adapter_config.json` (model.safetensors then holds the base model as it was before fine-tuning;
    `zoo.load(out)` folds the adapters in, `peft.PeftModel.from_pretrained(base, out)` applies them)."""
    if adapters not in ("merge", "separate"):
        raise ValueError(f"adapters={adapters!r} is not accepted; choose one of ['merge', 'separate']")
    if measure not in (True, False, "auto"):
        raise ValueError(f"measure={measure!r} is not accepted; choose one of [auto, true, false]")
    if is_sharded_checkpoint(checkpoint):
        with tempfile.TemporaryDirectory() as tmp:
            single = consolidate_checkpoint(checkpoint, Path(tmp) / "consolidated.ckpt")
            return export_checkpoint(single, out, dtype=dtype, name=name, measure=measure, hardware=hardware,
                                     max_batches=max_batches, card=card, adapters=adapters, generation=generation,
                                     data=data)
    ckpt = read_checkpoint(checkpoint)
    m = load_checkpoint(checkpoint)
    if generation:
        unknown = sorted(set(generation) - set(_SAMPLING_KEYS))
        if unknown:
            raise ValueError(f"generation: unknown sampling option(s) {unknown}; accepted: {sorted(_SAMPLING_KEYS)}")
        m.generation = {**(m.generation or generation_defaults(m.config.get("train_config") or {})), **generation}
    adapter_files: dict[str, Any] = {}
    if adapters == "separate":
        if not (ckpt.get("zoo") or {}).get("lora"):
            raise ValueError(f"adapters=separate: {checkpoint} is not a LoRA run (lora.rank was 0)")
        wrapped, _, _ = model_from_checkpoint(checkpoint, keep_lora=True)
        adapter_files = {"state": lora_state_dict(wrapped), "config": peft_adapter_config(wrapped)}
        m.model = unload_lora(wrapped)  # the base weights, under the base keys
    train_config = m.config.get("train_config") or {}
    run_data = train_config.get("data") or {}
    val_data = None
    if measure:  # the run's own data config, absolute paths intact (the written config drops them: issue 22);
        # built before anything is written, so that data that is gone stops the export with nothing half-made
        try:
            val_data = validation_data(train_config, m.codec, data=data)
        except (FileNotFoundError, ValueError) as e:
            if measure is True:
                raise type(e)(
                    f"cannot measure the card's val loss (measure=true) on the run's validation data: {e}. Put the "
                    "data back where the run read it (or give +data.path=...), or export with measure=false "
                    "(the card then has no metric)") from e
            log.warning("export: the card gets no val loss: the run's validation data cannot be read (%s); to add "
                        "it, export again from the folder the run started in or with +data.path=WHERE_IT_IS_NOW", e)
    extra, card = card or {}, {
        "data": run_data.get("name"), "data_license": DATA_LICENSES.get(run_data.get("name"), "see the data module"),
        "steps": int(ckpt.get("global_step", 0)),
        "hardware": hardware or f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
    }
    card |= extra
    if adapter_files:
        card["adapters"] = "LoRA adapters kept separate: adapter_model.safetensors + adapter_config.json (peft)"
    path = export(m, out, dtype=dtype, name=name, card=card)
    if adapter_files:  # beside the base weights before measuring: zoo.load folds them in, as a user loads the folder
        write_adapters(path, adapter_files["state"], adapter_files["config"])
    if val_data is not None:  # measured on what ships: the weights as stored in `dtype` (+ adapters), read back
        loss = measure_loss(load_export(path), max_batches=max_batches, datamodule=val_data)
        card |= {"metric": "val loss (nats/token, validation split of the training data)",
                 "metric_value": round(loss, 4), "metric_command":
                 "python -c \"import zoo; from zoo.hub.export import measure_loss; "
                 f"print(measure_loss(zoo.load('{name or Path(out).name}')))\"",
                 "perplexity": round(math.exp(loss), 3)}
        path = export(m, out, dtype=dtype, name=name, card=card, report=False)  # the adapter files are left as they are
    return path
