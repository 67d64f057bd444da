"""Objective statistics of a music checkpoint's samples against the validation data (issue 16).

    PYTHONPATH=. python benchmarks/music_stats.py music-transformer-bach --samples 8 --events 512
    PYTHONPATH=. python benchmarks/music_stats.py runs/jsb/last.ckpt --jsb ../shared/data/jsb/Jsb16thSeparated.json

Samples are generated from scratch (BOS), `--events` new tokens each, seeds 0..N-1, with the
checkpoint's generation defaults; the reference is the validation split of the data the model was
trained on (Bach chorales from music21's corpus through the checkpoint's own codec, or the JSB grid
file). Prints one JSON line with both statistics and their distances (zoo.eval.music_stats).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import zoo
from zoo.eval.music_stats import compare, music_stats
from zoo.members.music import ids_to_midi


def reference_pieces(m, jsb: str | None, limit: int) -> list:
    if jsb is not None:
        from zoo.data.music import load_jsb_json

        grids = load_jsb_json(jsb, m.codec)["val"][1][:limit]
        return [m.codec.to_midi(g) for g in grids]
    from zoo.data.music import BachChoralesDataModule

    dm = BachChoralesDataModule(block_size=m.model.max_len, batch_size=1, codec=m.codec)
    dm.prepare_data()
    dm.setup("fit")
    return [ids_to_midi(m.codec, ids) for ids in dm.sequences["val"][:limit]]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--jsb", default=None, help="Jsb16thSeparated.json (reference for a JSB-grid checkpoint)")
    p.add_argument("--reference", type=int, default=40, help="validation pieces in the reference")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    m = zoo.load(args.checkpoint)
    samples = [m.generate(max_new_tokens=args.events, seed=i) for i in range(args.samples)]
    ref = music_stats(reference_pieces(m, args.jsb, args.reference))
    got = music_stats(samples)
    result = {"checkpoint": args.checkpoint, "samples": got, "reference": ref, "distance": compare(got, ref)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
