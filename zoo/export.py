"""zoo-export: turn a zoo-train `.ckpt` into a self-contained folder that `zoo.load(DIR)` reads safely.

    zoo-export checkpoint=runs/gpt_pydoc/checkpoints/last.ckpt out=exports/gpt-pydoc
    zoo-export checkpoint=... out=... dtype=bfloat16 name=my-model measure=false
    zoo-export checkpoint=... out=... +data.path=corpus/   # measure on data that moved since training
    zoo-export checkpoint=runs/NAME/checkpoints/last.ckpt out=NAME-full.ckpt   # sharded folder -> one file
    zoo-export checkpoint=... out=exports/my-gpt push_to=ORG/NAME +card.license=mit  # and upload it
    zoo-export checkpoint=... out=... card_file=stats_card.json   # card fields from a JSON file (sample_stats)
    zoo-export checkpoint=... out=... format=onnx   # also DIR/model.onnx (ONNX Runtime), docs/runtimes.md
    zoo-export checkpoint=... out=... format=gguf   # also DIR/model.gguf (llama.cpp; GPT-architecture models)

What the folder holds and how a sharded checkpoint is consolidated: `zoo.hub.export`; the upload
(token from HF_TOKEN or `hf auth login`): `zoo.hub.hf_hub.push`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked
from zoo.hub.export import consolidate_checkpoint, export_checkpoint
from zoo.hub.export import measure_loss as measure_loss  # the shipped model cards' metric_command imports it here
from zoo.hub.hf_hub import check_repo_id, push
from zoo.hub.loading import _SAMPLING_KEYS
from zoo.hub.registry import CONFIG_FILE
from zoo.sampling import SamplingConfig


def read_card_file(path: str | None) -> dict[str, Any]:
    """Model-card fields from a JSON object file (e.g. {"sample_stats": ...} from benchmarks/music_stats.py
    --card); `card=` overrides them."""
    if path is None:
        return {}
    fields = json.loads(Path(path).read_text())
    if not isinstance(fields, dict):
        raise ValueError(f"card_file={path} must hold a JSON object of card fields, got {type(fields).__name__}")
    return fields


def check_generation(generation: Any) -> dict[str, Any]:
    """`generation=` as the sampling defaults to store: options `zoo.load(...).generate` accepts (names, types
    and ranges checked by SamplingConfig, as when sampling) among those an export keeps; ValueError otherwise,
    before anything is exported."""
    if generation is None:
        return {}
    if not isinstance(generation, Mapping):
        raise ValueError(f"generation={generation!r} is not accepted: expected sampling defaults such as "
                         "+generation.temperature=0.8 or +generation={top_k:40}")
    try:
        SamplingConfig.from_options(generation)
    except ValueError as e:
        raise ValueError(f"generation: {e}") from None
    other = sorted(set(generation) - set(_SAMPLING_KEYS))
    if other:
        raise ValueError(f"generation: {', '.join(other)} {'is' if len(other) == 1 else 'are'} not a sampling "
                         f"default an export stores; accepted: {sorted(_SAMPLING_KEYS)}")
    return dict(generation)


FORMATS = ("safetensors", "onnx", "gguf")  # safetensors: the folder alone; onnx / gguf: that file too, in it


def check_format(fmt: Any) -> str:
    """`format=`, with the packages it needs installed (ImportError naming the extra), before any export."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not accepted; choose one of {list(FORMATS)} (onnx and gguf write "
                         "model.onnx / model.gguf into the export folder, beside its safetensors)")
    if fmt == "onnx":
        from zoo.hub.onnx_export import require

        require("onnx", "onnxscript", "onnxruntime")
    elif fmt == "gguf" and importlib.util.find_spec("gguf") is None:
        raise ImportError("format=gguf needs the gguf package: pip install 'zoo[gguf]'")
    return fmt


def write_runtime_file(path: Path, fmt: str) -> str | None:
    """Write the export folder's model.onnx or model.gguf from the folder itself, read back in float32, and
    check it (zoo.hub.onnx_export, zoo.hub.gguf_export); a line saying how well the file agrees."""
    if fmt == "safetensors":
        return None
    from zoo.hub.loading import load

    m = load(path, dtype="float32")
    if fmt == "onnx":
        from zoo.hub.onnx_export import ONNX_FILE, check_onnx, export_onnx

        diff = check_onnx(m, export_onnx(m, path / ONNX_FILE))
        return f"{ONNX_FILE}: ONNX Runtime logits within {diff:.2g} of PyTorch's"
    from zoo.hub.gguf_export import GGUF_FILE, check_gguf, export_gguf

    return f"{GGUF_FILE}: {check_gguf(m, export_gguf(m, path / GGUF_FILE))}"


def export_and_push(opts: dict[str, Any]) -> tuple[Path, str | None]:
    """The export folder and, with push_to=ORG/NAME, the URL of the commit that uploaded it."""
    generation = check_generation(opts.get("generation"))
    fmt = check_format(opts.get("format", "safetensors"))
    card = read_card_file(opts["card_file"]) | dict(opts["card"] or {})
    if opts["push_to"]:
        check_repo_id(opts["push_to"])  # before the export and its measurement, not after
        card.setdefault("hub_repo", opts["push_to"])  # the card then says zoo.load("hf:ORG/NAME")
    path = export_checkpoint(opts["checkpoint"], opts["out"], dtype=opts["dtype"], name=opts["name"],
                             measure=opts["measure"], hardware=opts["hardware"], card=card,
                             adapters=opts["adapters"], generation=generation, data=dict(opts.get("data") or {}))
    runtime = write_runtime_file(path, fmt)
    if runtime:
        print(runtime)
    if not opts["push_to"]:
        return path, None
    metric = json.loads((path / CONFIG_FILE).read_text())["card"].get("metric_value")
    message = f"zoo-export {path.name}" + (f" (val loss {metric} nats/token)" if metric is not None else "")
    return path, push(path, opts["push_to"], private=opts["private"], commit_message=message)


def main() -> None:
    @hydra.main(config_path=CONF_DIR, config_name="export", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        quiet_console()
        opts = resolve(cfg, "zoo-export")
        if str(opts["out"]).endswith(".ckpt"):  # consolidate a sharded checkpoint, nothing else
            try:
                path = consolidate_checkpoint(opts["checkpoint"], opts["out"])
            except (ValueError, FileNotFoundError) as e:
                raise SystemExit(f"zoo-export: {e}") from e
            print(f"consolidated {opts['checkpoint']} into {path}")
            return
        try:
            path, url = export_and_push(opts)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise SystemExit(f"zoo-export: {e}") from e
        card = json.loads((path / CONFIG_FILE).read_text())["card"]
        print(f"exported to {path}: " + ", ".join(sorted(p.name for p in path.iterdir())))
        if "metric_value" in card:
            print(f"{card['metric']}: {card['metric_value']}")
        if url:
            print(f"pushed to {url}; load it with zoo.load('hf:{opts['push_to']}')")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_checked("export", _main)


if __name__ == "__main__":
    main()
