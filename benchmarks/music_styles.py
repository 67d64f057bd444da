"""Does a style-conditioned Music Transformer play the style it is asked for? (issue 16)

    PYTHONPATH=. python benchmarks/music_styles.py music-transformer-styles --samples 20 --events 512 \
        --guidance 1 2 3 4 6 --stats-guidance 4      # the defaults: writes benchmarks/music_styles.json

Writes the JSON to benchmarks/<stem>.json (or --out FILE), the stem named for the command (`stem`, issue 22):
music_styles, then each option that differs from its default (e.g. music_styles_guidance-1-2, or
music_styles_checkpoint-runs-s-last.ckpt for another checkpoint).

1. A style classifier (zoo.eval.style_classifier: note-level features + MLP) is trained on windows of
   `--events` events from the training pieces of each style and checked on windows of the validation
   pieces (its accuracy on real music is the ceiling for the samples).
2. For each guidance scale (1 = the condition alone, no guidance), `--samples` pieces per style are drawn
   from scratch (`--events` new events, top-p 0.95, seeds 0..), and the classifier names their style.
   Accuracy = share named as the style asked for; the confusion matrix is in the JSON.
3. Sample statistics per style at `--stats-guidance` against that style's validation pieces
   (zoo.eval.music_stats).
The data are the checkpoint's styles from music21's corpus (data=music21_styles defaults, cached).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.bench.common import changed_options, output_stem
from zoo.data.music import StyleCorpusDataModule
from zoo.eval.music_stats import compare, music_stats
from zoo.eval.style_classifier import event_windows, train_style_classifier
from zoo.sampling import SamplingConfig, generate_sliding


def draw(model, codec, style: int, n: int, events: int, guidance: float | None, seed: int) -> list[list[int]]:
    cfg = SamplingConfig(max_new_tokens=events, temperature=1.0, top_p=0.95, seed=seed,
                         guidance=None if guidance in (None, 1.0) else guidance, stop_tokens=(codec.eos_id,))
    cond = torch.full((n,), style, dtype=torch.long)
    return generate_sliding(model, [[codec.bos_id]] * n, cfg, cond=cond)


RECIPE_GUIDANCE = 4.0  # conf/experiment/music_transformer_styles.yaml: the scale where samples read as their style


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default="music-transformer-styles",
                   help="a style-conditioned checkpoint (default: music-transformer-styles)")
    p.add_argument("--samples", type=int, default=20, help="samples per style and guidance scale")
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--stats-guidance", type=float, default=None,
                   help=f"default: {RECIPE_GUIDANCE:g} (the recipe's) when among --guidance, else the largest")
    p.add_argument("--train-windows", type=int, default=200, help="classifier training windows per style")
    p.add_argument("--val-windows", type=int, default=60)
    p.add_argument("--out", default=None, help="write the JSON here (default: benchmarks/<stem>.json, `stem`)")
    return p


def stats_guidance(args: argparse.Namespace) -> float:
    """The guidance scale whose samples' statistics are measured: --stats-guidance, else the recipe's scale
    when among --guidance, else the largest."""
    if args.stats_guidance is not None:
        return args.stats_guidance
    return RECIPE_GUIDANCE if RECIPE_GUIDANCE in args.guidance else max(args.guidance)


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix) without --out: music_styles, then each option that differs from its default
    (the checkpoint included); --stats-guidance only when it differs from the scale chosen without it."""
    options = changed_options(parser(), args, ignore=["out", "stats_guidance"])
    defaults = argparse.Namespace(**{**vars(args), "stats_guidance": None})
    if stats_guidance(args) != stats_guidance(defaults):
        options["stats_guidance"] = args.stats_guidance
    return output_stem("music_styles", options)


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    out = args.out or Path(__file__).with_name(f"{stem(args)}.json")
    torch.set_num_threads(1)
    started = time.monotonic()
    m = zoo.load(args.checkpoint)
    codec, model = m.codec, m.model.eval()
    names = list(codec.styles or [])
    if not names:
        raise SystemExit(f"{args.checkpoint} is not style-conditioned (its codec has no styles)")
    dm = StyleCorpusDataModule(styles=names, block_size=model.max_len, codec=codec)
    dm.prepare_data()
    dm.setup("fit")
    train = event_windows(codec, dm.sequences["train"], dm.labels["train"], events=args.events,
                          per_class=args.train_windows, seed=0)
    val = event_windows(codec, dm.sequences["val"], dm.labels["val"], events=args.events,
                        per_class=args.val_windows, seed=1)
    clf = train_style_classifier(*train, names)
    result: dict = {"checkpoint": args.checkpoint, "styles": names, "events": args.events,
                    "samples_per_style": args.samples,
                    "classifier": {"train_windows": len(train[0]), "val_windows": len(val[0]),
                                   "train_accuracy": clf.accuracy(*train), "val_accuracy": clf.accuracy(*val),
                                   "val_per_style": _per_style(clf.predict(val[0]), val[1], len(names))},
                    "guidance": {}}
    stats_g = stats_guidance(args)
    kept: dict[int, list] = {}
    for g in args.guidance:
        preds, labels = [], []
        for s in range(len(names)):
            rows = draw(model, codec, s, args.samples, args.events, g, seed=1000 * s)
            notes = [codec.decode_notes(ids) for ids in rows]
            preds += clf.predict(notes)
            labels += [s] * len(notes)
            if g == stats_g:
                kept[s] = rows
        confusion = np.zeros((len(names), len(names)), dtype=int)
        for t, q in zip(labels, preds):
            confusion[t, q] += 1
        result["guidance"][str(g)] = {"accuracy": float(np.mean(np.array(preds) == np.array(labels))),
                                      "per_style": _per_style(preds, labels, len(names)),
                                      "confusion": confusion.tolist()}
        print(f"guidance {g:g}: accuracy {result['guidance'][str(g)]['accuracy']:.3f}", file=sys.stderr)
    stats = {}
    for s, rows in kept.items():
        got = music_stats([codec.decode(ids) for ids in rows])
        ref_pieces = [codec.decode(seq) for seq, lab in zip(dm.sequences["val"], dm.labels["val"]) if lab == s]
        ref = music_stats(ref_pieces)
        stats[names[s]] = {"samples": got, "reference": ref, "distance": compare(got, ref)}
    result["stats_guidance"] = stats_g
    result["stats"] = stats
    result["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(result)
    print(text)
    with open(out, "w") as f:
        f.write(text + "\n")
    return result


def _per_style(preds: list[int], labels: list[int], k: int) -> list[float]:
    p, y = np.asarray(preds), np.asarray(labels)
    return [float((p[y == c] == c).mean()) if (y == c).any() else float("nan") for c in range(k)]


if __name__ == "__main__":
    main(sys.argv[1:])
