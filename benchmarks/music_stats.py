"""Objective statistics of a music checkpoint's samples against the validation data (issue 16).

    PYTHONPATH=. python benchmarks/music_stats.py music-transformer-bach --samples 8 --events 512
    PYTHONPATH=. python benchmarks/music_stats.py runs/jsb/last.ckpt --jsb ../shared/data/jsb/Jsb16thSeparated.json
    PYTHONPATH=. python benchmarks/music_stats.py music-transformer-bach --card stats.json --roll pianoroll.png

Samples are generated from scratch (BOS), `--events` new tokens each, seeds 0..N-1, with the
checkpoint's generation defaults; the reference is the validation split of the data the model was
trained on (its training config's data module through the checkpoint's own codec: Bach chorales, the
style corpus...; or, with --jsb, the JSB grid file, whose local path an export does not keep). Prints one
JSON line with both statistics, their distances (zoo.eval.music_stats) and the command; `--card FILE`
also writes the model card's `sample_stats` table as {"sample_stats": ...}, which
`zoo-export ... card_file=FILE` puts into config.json and README.md (docs/hub.md); `--roll FILE.png` the
piano roll of sample 0 (the card's picture).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

import zoo
from zoo.eval.music_stats import card_table, compare, music_stats
from zoo.members.music import ids_to_midi
from zoo.members.music_render import piano_roll_png
from zoo.training.builders import build_data


def reference_pieces(m, jsb: str | None, limit: int) -> list:
    """The first `limit` validation pieces of the model's training data, through its own codec, as MIDI."""
    if jsb is not None:  # a JSB export's data path is dropped (a local path): name the file
        from zoo.data.music import load_jsb_json

        grids = load_jsb_json(jsb, m.codec)["val"][1][:limit]
        return [m.codec.to_midi(g) for g in grids]
    data_cfg = dict((m.config.get("train_config") or {}).get("data") or {})
    if not data_cfg:
        raise SystemExit(f"{m.name}: no training data config to take the reference from (pass --jsb FILE)")
    dm = build_data(data_cfg | {"codec": m.codec})  # any music data module: Bach, style corpus, MIDI folder...
    dm.prepare_data()
    dm.setup("fit")
    return [ids_to_midi(m.codec, ids) for ids in dm.sequences["val"][:limit]]


def command_line(args: argparse.Namespace) -> str:
    """The command that measures this again (without --card: it changes no number)."""
    parts = ["PYTHONPATH=.", "python", "benchmarks/music_stats.py", args.checkpoint,
             "--samples", str(args.samples), "--events", str(args.events)]
    if args.jsb is not None:
        parts += ["--jsb", args.jsb]
    if args.reference != 40:
        parts += ["--reference", str(args.reference)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--jsb", default=None, help="Jsb16thSeparated.json (reference for a JSB-grid checkpoint)")
    p.add_argument("--reference", type=int, default=40, help="validation pieces in the reference")
    p.add_argument("--card", default=None, help="also write the model card's sample_stats table to this JSON file")
    p.add_argument("--roll", default=None, help="also write the piano roll of sample 0 (seed 0) to this PNG file")
    args = p.parse_args(argv)
    command = command_line(args)
    torch.set_num_threads(1)
    m = zoo.load(args.checkpoint)
    samples = [m.generate(max_new_tokens=args.events, seed=i) for i in range(args.samples)]
    ref = music_stats(reference_pieces(m, args.jsb, args.reference))
    got = music_stats(samples)
    result = {"checkpoint": args.checkpoint, "command": command, "samples": got, "reference": ref,
              "distance": compare(got, ref)}
    print(json.dumps(result))
    if args.roll:  # the model card's picture: one of the measured samples, as make_gallery.py draws it
        piano_roll_png(samples[0], args.roll)
    if args.card:
        unit = "grid tokens" if args.jsb else "events"
        about = (f"{args.samples} samples of {args.events} {unit} from scratch (seeds 0..{args.samples - 1}, the "
                 f"checkpoint's generation defaults) against {ref['pieces']} validation pieces of the training "
                 "data through the same codec; statistics of the decoded MIDI by zoo.eval.music_stats "
                 "(histograms weighted by note duration)")
        card = {"sample_stats": card_table(result, command=command, about=about)}
        with open(args.card, "w") as f:
            json.dump(card, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
