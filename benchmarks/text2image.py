"""Text-to-image benchmark (CPU, one thread): caption faithfulness on held-out layouts and caption bits.

    PYTHONPATH=. python benchmarks/text2image.py            # writes text2image.{json,md} + sample grids
    PYTHONPATH=. python benchmarks/text2image.py captioned_digits@3000   # one more row: 3,000 steps

For captioned_digits and captioned_shapes: train `Text2Image` for a fixed number of steps (the
GenerativeModule loss: mean cross-entropy over the joint caption + image targets, AdamW, warmup +
cosine), then
  * faithfulness: one image per test caption (all held-out layouts, never seen in training), read back
    by the in-project reader (zoo/eval/faithfulness.py), with guidance scale 1 (plain conditional
    sampling) and 3 at temperature 1, and guidance 3 at temperature 0.7; also on val captions
    (training layouts, unseen images);
  * image bits/dim on the test split with the caption and with the empty caption.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.data.text_image import CaptionedDigitsDataModule, CaptionedShapesDataModule
from zoo.eval.faithfulness import DigitsReader, ShapesReader, caption_bits, faithfulness
from zoo.members.text2image import caption_grid
from zoo.models.text2image import Text2Image, Text2ImageConfig
from zoo.training.module import lr_lambda

HERE = Path(__file__).resolve().parent
MODEL = dict(n_layer=3, n_head=4, n_embd=96, local_n_layer=1, local_n_head=2, local_n_embd=48, dropout=0.1,
             cond_dropout=0.15)
RUNS = {  # data module, reader, steps
    "captioned_digits": (CaptionedDigitsDataModule, DigitsReader, 1500),
    "captioned_shapes": (CaptionedShapesDataModule, ShapesReader, 1000),
}
BATCH, LR, WARMUP = 32, 2e-3, 50
SETTINGS = {"guidance_1": (1.0, 1.0), "guidance_3": (3.0, 1.0), "guidance_3_t0.7": (3.0, 0.7)}  # (scale, temp)


def train(dm: object, steps: int, seed: int = 0) -> tuple[Text2Image, list[float]]:
    torch.manual_seed(seed)
    model = Text2Image(Text2ImageConfig.for_codec(dm.codec, **MODEL))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, warmup_steps=WARMUP, max_steps=steps,
                                                                       min_lr_ratio=0.1))
    g, losses = torch.Generator().manual_seed(seed), []
    model.train()
    for _ in range(steps):
        b = dm.make_batch(g, BATCH)
        logits = model(b["idx"], cond=b["cond"])
        loss = F.cross_entropy(logits.flatten(0, 1), b["targets"].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


def bench(run: str) -> dict:
    """`run` = a RUNS name, optionally "@steps" (e.g. captioned_digits@3000) to train longer or shorter."""
    name, _, steps_text = run.partition("@")
    dm_cls, reader_cls, steps = RUNS[name]
    steps = int(steps_text or steps)
    t0 = time.perf_counter()
    dm = dm_cls(batch_size=BATCH, num_eval=256)
    dm.setup()
    model, losses = train(dm, steps)
    t_train = time.perf_counter() - t0
    reader = reader_cls(dm)
    out = {"steps": steps, "batch_size": BATCH, "params": model.num_params(), "model": MODEL,
           "final_train_loss": sum(losses[-50:]) / 50, "train_seconds": round(t_train, 1),
           "reader_test_accuracy": reader.accuracy, "heldout_layouts": [dm.caption(x) for x in dm.heldout_layouts],
           "faithfulness": {}}
    for split in ("test", "val"):
        captions = dm.splits[split][1]
        for key, (scale, temperature) in SETTINGS.items():
            t = time.perf_counter()
            f = faithfulness(model, dm, reader, captions, guidance=scale, temperature=temperature, seed=1)
            out["faithfulness"][f"{split}_{key}"] = f
            print(f"{name} {split} {key}: faithfulness {f:.3f} ({time.perf_counter() - t:.1f}s)", flush=True)
    levels, captions = dm.splits["test"]
    out["test_bits_per_dim"] = caption_bits(model, dm.codec, levels, captions)
    shown = list(dict.fromkeys(dm.splits["test"][1]))[:6]
    if run == name:  # the default runs draw the grids
        caption_grid(model, dm.codec, shown, 8, HERE / f"text2image_{name}.png", guidance=3.0, seed=0)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(run, json.dumps({k: v for k, v in out.items() if k != "heldout_layouts"}), flush=True)
    return out


def markdown(results: dict) -> str:
    lines = ["# Text-to-image (DALL-E-style decoder on the patch image GPT)", "",
             "CPU, one thread (`torch.set_num_threads(1)`), figures as measured by `benchmarks/text2image.py`.",
             f"Model: {MODEL}; batch {BATCH}, lr {LR}, AdamW, warmup {WARMUP} + cosine.", "",
             "Faithfulness: fraction of captions whose generated image the in-project reader reads back as the "
             "caption's layout (one image per caption; sampling temperature T = 1 unless stated). *test* = "
             "held-out layouts never seen in training; *val* = training layouts with unseen images. "
             "Reader accuracy = the judge's own accuracy on real test renders.", "",
             "| data | params | steps | train s | reader acc | test g=1 | test g=3 | test g=3 T=0.7 | val g=1 | "
             "val g=3 | val g=3 T=0.7 | bits/dim cond | bits/dim uncond | bits saved / image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        f, b = r["faithfulness"], r["test_bits_per_dim"]
        lines.append(f"| {name} | {r['params']:,} | {r['steps']} | {r['train_seconds']} | "
                     f"{r['reader_test_accuracy']:.3f} | "
                     + " | ".join(f"{f.get(f'{s}_{k}', float('nan')):.3f}" for s in ("test", "val") for k in SETTINGS)
                     + f" | {b['conditional']:.3f} | "
                     f"{b['unconditional']:.3f} | {b['bits_saved_per_image']:.1f} |")
    lines += ["", "Held-out layouts:", ""]
    for name, r in results.items():
        if "@" not in name:
            lines.append(f"- {name}: " + "; ".join(r["heldout_layouts"]))
    lines += ["", "Grids (rows = held-out captions, guidance 3): `text2image_captioned_digits.png`, "
              "`text2image_captioned_shapes.png`.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", default=list(RUNS), help=f"RUNS names, optionally @steps (default: {list(RUNS)})")
    return p


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix): always text2image. Each run is a row keyed by its name (captioned_digits,
    captioned_digits@3000, ...) and a rerun of some rows keeps the others, so no command overwrites another's
    figures; only the same run measured again replaces its own row."""
    return "text2image"


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    path = HERE / f"{stem(parser().parse_args(names))}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}  # rerunning one dataset keeps the other
    results = results | {name: bench(name) for name in names}
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main(parser().parse_args().runs)
