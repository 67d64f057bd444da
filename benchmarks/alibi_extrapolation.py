"""ALiBi's length extrapolation (Press et al. 2022) against learned and rotary positions, on zoo's GPT.

Three tiny byte-level GPTs, identical but for their positions (`position=learned`, `position=rotary`, or
`position=none bias=alibi`; results keyed learned | rotary | alibi), trained the same steps
on the same batches of the embedded pydoc text (`pydoc_data.topics`, what `data=pydoc` reads) at length T;
then the validation loss (nats/byte) at T, 2T and 4T, over the same held-out bytes cut into non-overlapping
windows of each length. Learned positions have no table rows past T: n/a there. One CPU thread.

    python benchmarks/alibi_extrapolation.py [--steps 600] [--T 64]   # writes benchmarks/alibi_extrapolation.json

(other options are added to the name: --steps 300 writes alibi_extrapolation_steps-300.json; `stem`)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from pydoc_data.topics import topics

import torch
import torch.nn.functional as F

from zoo.bench.common import changed_options, output_stem
from zoo.models.gpt import GPT, GPTConfig


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output file's name (no suffix): alibi_extrapolation, then each option that differs from its default."""
    return output_stem("alibi_extrapolation", changed_options(parser(), args))


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    data = torch.tensor(list("\n".join(topics[k] for k in sorted(topics)).encode()), dtype=torch.long)
    n_val = len(data) // 10
    train, val = data[:-n_val], data[-n_val:]
    t, lengths = args.T, (args.T, 2 * args.T, 4 * args.T)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(train) - t - 1, (args.steps, args.batch), generator=g)  # the same batches for all
    results = {}
    for position in ("learned", "rotary", "alibi"):
        torch.manual_seed(0)
        # block_size only sizes the learned table (trained rows: T) and the rotary cos/sin table
        fields = dict(position="none", bias="alibi") if position == "alibi" else dict(position=position)
        cfg = GPTConfig(vocab_size=256, block_size=t if position == "learned" else 4 * t, n_layer=2, n_head=4,
                        n_embd=128, **fields)
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        start = time.perf_counter()
        model.train()
        for step in range(args.steps):
            idx = torch.stack([train[s:s + t + 1] for s in starts[step].tolist()])  # (B, T + 1)
            loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - start
        model.eval()
        row = {"train_loss_last": loss.item(), "train_s": train_s}
        n_eval = (len(val) - 1) // (4 * t) * (4 * t)  # the same bytes at every length
        for length in lengths:
            if position == "learned" and length > t:
                row[f"val_loss_{length}"] = None  # no table rows past T
                continue
            x, y = val[:n_eval].view(-1, length), val[1:n_eval + 1].view(-1, length)
            with torch.no_grad():
                row[f"val_loss_{length}"] = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
        results[position] = row
        print(position, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    out = {"args": vars(args), "lengths": lengths, "train_bytes": len(train), "val_bytes_used": n_eval,
           "results": results}
    Path(__file__).with_name(f"{stem(args)}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
