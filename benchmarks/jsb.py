"""JSB Chorales held-out NLL of a zoo checkpoint, scored as the Music Transformer paper's table.

    PYTHONPATH=. python benchmarks/jsb.py runs/music_transformer_jsb/checkpoints/last.ckpt \
        --json ../shared/data/jsb/Jsb16thSeparated.json --split val

Nats per token (one voice at one 16th step), BOS/EOS excluded, every grid token scored with at least
half a block of left context (zoo.eval.likelihood.strided_nll, stride = block / 2); the disjoint-window
figure (stride = block, what zoo-train's val/loss roughly measures) is printed beside it; `--quarter` adds stride =
block / 4 (every token with at least three quarters of a block of left context).

Length generalisation (the paper's argument for relative attention): `--lengths 1 2` scores with windows of
1x and 2x the training length (`--train-length`, default the model's context), stride half a window, so at
2x every token sees at least a whole training length of left context. A model whose context is shorter
than the window is rebuilt with a longer one and the same weights: relative attention keeps its
`max_relative_position` distances (farther keys, never seen in training, get the zero embedding; the
`_clip` figure gives them the farthest learned distance's embedding instead),
rotary/ALiBi extend; a learned position table cannot be extended and is reported as n/a
(the absolute baseline is therefore trained with a table of 2x its training length whose second half never
sees a gradient: `model.block_size=512 data.block_size=256`, benchmarks/jsb.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

import zoo
from zoo.codecs.jsb import BOS_ID, EOS_ID, PAD_ID
from zoo.data.music import load_jsb_json
from zoo.eval.likelihood import Score, strided_nll


def evaluate(model, codec, grids, block: int | None = None, quarter: bool = False) -> dict[str, float]:
    block = block or model.max_len
    out = {}
    strides = (("strided", block // 2), ("disjoint", block)) + ((("strided_quarter", block // 4),) if quarter else ())
    for label, stride in strides:
        total = Score(0.0, 0)
        for grid in grids:
            ids = [BOS_ID, *codec.encode_grid(grid).tolist(), EOS_ID]
            total = total + strided_nll(model, ids, block=block, stride=stride, skip=(BOS_ID, EOS_ID, PAD_ID))
        out[label] = total.per_token
        out["tokens"] = total.tokens
    return out


def with_context(model, block: int, far: str = "zero"):
    """`model` itself if its context holds `block` tokens, else a copy with block_size=`block` and the same
    weights; None when the weights cannot serve that length (a learned position table shorter than it).
    `far` (relative attention): distances past the learned ones get the zero embedding ("zero", the model's
    own rule) or the embedding of the farthest learned distance ("clip", Shaw et al.'s clipping)."""
    if block <= model.max_len:
        return model
    c = model.config
    if c.position == "learned":
        return None
    state = dict(model.state_dict())
    if "relative" in c.bias and far == "clip":
        for key in [k for k in state if k.endswith("attn.er")]:
            er = state[key]  # (H, L, D): distance r at row r; repeat the last row out to `block`
            state[key] = torch.cat([er, er[:, -1:].expand(-1, block - er.shape[1], -1)], 1)
        c = dataclasses.replace(c, max_relative_position=block)
    bigger = type(model)(dataclasses.replace(c, block_size=block)).eval()
    missing, unexpected = bigger.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("rotary") for k in missing):
        raise ValueError(f"cannot extend the context: missing {missing}, unexpected {unexpected}")
    return bigger


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--json", required=True, help="Jsb16thSeparated.json")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengths", type=int, nargs="*", default=[],
                   help="also score with windows of these multiples of the training length (e.g. 1 2)")
    p.add_argument("--quarter", action="store_true",
                   help="also score with stride block / 4: every token with at least 3/4 of a block of context")
    p.add_argument("--train-length", type=int, default=None,
                   help="tokens per training window (default: the model's context)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = zoo.load(args.checkpoint)
    grids = load_jsb_json(args.json, m.codec)[args.split][1]
    train_length = args.train_length or m.model.max_len
    result = {"checkpoint": args.checkpoint, "split": args.split,
              **evaluate(m.model, m.codec, grids, block=train_length, quarter=args.quarter)}
    for k in args.lengths:
        for far in ("zero", "clip") if "relative" in m.model.config.bias and k > 1 else ("zero",):
            model = with_context(m.model, k * train_length, far)
            key = f"strided_{k}x" + ("_clip" if far == "clip" else "")
            result[key] = None if model is None else evaluate(model, m.codec, grids, block=k * train_length)["strided"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
