"""Fine-tuning recipes, side by side: from scratch vs full fine-tuning vs LoRA rank 8, same steps.

    python benchmarks/finetune.py            # writes benchmarks/finetune.json and benchmarks/finetune.md

Two tasks, each trained three ways for the same number of steps on one CPU thread:
  text   gpt-pydoc (char GPT, 1.8M parameters, trained on Python's pydoc topics) on Python stdlib
         sources (a text file written here from the running Python's Lib/, characters outside
         gpt-pydoc's vocabulary dropped); data=text_files
  music  music-transformer-bach (Bach chorales) on Monteverdi and Palestrina pieces written as MIDI
         from music21's corpus; data=midi_folder
"from scratch" is the source's architecture with fresh weights (for text, a char codec fitted on the new
text: per-character losses are comparable); "full" is init_from=SOURCE; "lora" is init_from=SOURCE
lora.rank=8. Validation loss is in nats per token on the same validation split for the three.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import zoo
from zoo.bench.common import changed_options, output_stem
from zoo.train import run

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/zoo-bench-finetune")
STEPS = 150
COMMON = ["trainer.accelerator=cpu", "threads=1", "logger=none", "samples.every_n_steps=0", "samples.num_samples=1",
          "samples.max_new_tokens=8", f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={STEPS}",
          "checkpoint.every_n_steps=0", "ckpt_path=null", "trainer.enable_progress_bar=false", "data.batch_size=8"]
# learning rates: scratch at zoo's default; full fine-tuning lower (the weights are already good);
# LoRA higher (few parameters, zero-initialised B)
# LoRA higher (few parameters, zero-initialised B). "lora" adapts every projection (the default targets),
# "lora_attn" the attention's only (c_attn, attn.c_proj), as in the LoRA paper's recipe.
WAYS = {"scratch": ["module.lr=2e-3"], "full": ["module.lr=5e-4"], "lora": ["module.lr=3e-3", "lora.rank=8"],
        "lora_attn": ["module.lr=3e-3", "lora.rank=8", "lora.targets=[c_attn,attn.c_proj]"]}


def stdlib_text(path: Path, chars: set[str], max_chars: int = 400_000) -> Path:
    if path.exists():
        return path
    lib = Path(sys.modules["os"].__file__).parent
    parts, n = [], 0
    for f in sorted(lib.glob("*.py")):
        text = "".join(c for c in f.read_text(errors="ignore") if c in chars)
        parts.append(text)
        n += len(text)
        if n > max_chars:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts))
    return path


def midi_folder(folder: Path, n_monteverdi: int = 20, n_palestrina: int = 10) -> Path:
    from music21 import corpus

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.mid"))) >= n_monteverdi + n_palestrina:
        return folder
    for composer, n in (("monteverdi", n_monteverdi), ("palestrina", n_palestrina)):
        for path in sorted(corpus.getComposer(composer))[:n]:
            out = folder / f"{composer}_{Path(path).stem}.mid"
            if not out.exists():
                corpus.parse(path).write("midi", str(out))
    return folder


def train(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    t = time.perf_counter()
    summary = run(cfg, overrides=overrides)
    return {"val_loss": summary["metrics"]["val/loss"], "seconds": round(time.perf_counter() - t, 1)}


def task(name: str, source: str, data: list[str]) -> dict:
    pretrained = zoo.load(source)
    mc = pretrained.model.config
    arch = [f"model={pretrained.model_type}"] + [f"model.{k}={v}" for k, v in vars(mc).items()
                                                 if k not in ("vocab_size",) and v is not None]
    results = {}
    for way, extra in WAYS.items():
        base = [*COMMON, *data, *extra, f"run_dir={WORK / name / way}"]
        overrides = [*base, *arch] if way == "scratch" else [*base, f"init_from={source}"]
        results[way] = train(overrides)
        print(name, way, results[way], flush=True)
    # parameters: LoRA's trainable share of all parameters (adapters included), counted on the model itself
    from zoo.training.lora import LoRAConfig, apply_lora

    out = {"source": source, "results": results}
    scratch, full = results["scratch"]["val_loss"], results["full"]["val_loss"]
    for way, targets in (("lora", None), ("lora_attn", ["c_attn", "attn.c_proj"])):
        config = LoRAConfig(rank=8, **({"targets": targets} if targets else {}))
        model = apply_lora(zoo.load(source).model.train(), config)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results[way] |= {"trainable": trainable, "trainable_share": trainable / total,
                         "gain_share": (scratch - results[way]["val_loss"]) / (scratch - full)}
        out["parameters"] = total - trainable
    return out

def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parser() -> argparse.ArgumentParser:
    """No options: every figure is fixed in the script (STEPS, the sources, the data), so the file is finetune."""
    return argparse.ArgumentParser(description=__doc__.split("\n")[0])


def stem(args: argparse.Namespace) -> str:
    """The output file's name (no suffix): finetune (the script has no options that change what is measured)."""
    return output_stem("finetune", changed_options(parser(), args))


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    chars = set(zoo.load("gpt-pydoc").codec.chars)
    text = stdlib_text(WORK / "stdlib.txt", chars)
    midi = midi_folder(WORK / "midi")
    report = {
        "cpu": cpu_name(), "torch": torch.__version__, "steps": STEPS,
        "text": task("text", "gpt-pydoc", ["data=text_files", f"data.path={text}", "data.max_val_windows=32"]),
        "music": task("music", "music-transformer-bach",
                      ["data=midi_folder", f"data.path={midi}", "data.max_val_windows=32"]),
    }
    out = Path(__file__).with_name(f"{stem(args)}.json")
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
