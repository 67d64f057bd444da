"""JSB Chorales held-out NLL of a zoo checkpoint, scored as the Music Transformer paper's table.

    PYTHONPATH=. python benchmarks/jsb.py runs/music_transformer_jsb/checkpoints/last.ckpt \
        --json ../shared/data/jsb/Jsb16thSeparated.json --split val

Nats per token (one voice at one 16th step), BOS/EOS excluded, every grid token scored with at least
half a block of left context (zoo.eval.likelihood.strided_nll, stride = block / 2); the disjoint-window
figure (stride = block, what zoo-train's val/loss roughly measures) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import zoo
from zoo.codecs.jsb import BOS_ID, EOS_ID, PAD_ID
from zoo.data.music import load_jsb_json
from zoo.eval.likelihood import Score, strided_nll


def evaluate(model, codec, grids, block: int | None = None) -> dict[str, float]:
    block = block or model.max_len
    out = {}
    for label, stride in (("strided", block // 2), ("disjoint", block)):
        total = Score(0.0, 0)
        for grid in grids:
            ids = [BOS_ID, *codec.encode_grid(grid).tolist(), EOS_ID]
            total = total + strided_nll(model, ids, block=block, stride=stride, skip=(BOS_ID, EOS_ID, PAD_ID))
        out[label] = total.per_token
        out["tokens"] = total.tokens
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--json", required=True, help="Jsb16thSeparated.json")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = zoo.load(args.checkpoint)
    grids = load_jsb_json(args.json, m.codec)[args.split][1]
    result = {"checkpoint": args.checkpoint, "split": args.split, **evaluate(m.model, m.codec, grids)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
