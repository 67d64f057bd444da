"""Held-out likelihood of long sequences with a fixed context: strided (sliding-window) scoring.

A sequence longer than the model's context is scored in windows of `block` tokens that advance by
`stride`: each window scores only the targets it has not scored before, so every target is scored once,
with at least `block - stride` tokens of left context wherever the sequence has that many before it
(the first window scores its targets with whatever context precedes them). With `stride = block // 2`
this is "every token scored with at least half a block of left context", the protocol of the Music
Transformer paper's JSB table that a plain split into disjoint windows (where the first tokens of
every window see almost nothing) would make look worse than it is.

Only real content is scored: targets listed in `skip` (BOS/EOS/PAD framing) are left out of both
the sum and the count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Score:
    """Summed negative log-likelihood (nats) over `tokens` scored targets."""

    nll: float
    tokens: int

    @property
    def per_token(self) -> float:
        return self.nll / self.tokens if self.tokens else math.nan

    def __add__(self, other: Score) -> Score:
        return Score(self.nll + other.nll, self.tokens + other.tokens)


def strided_windows(n: int, block: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first, stop) per window of a length-`n` sequence: inputs `start .. start + block - 1`
    predict targets `start + 1 .. start + block`, of which `first .. stop - 1` are scored there."""
    if not 0 < stride <= block:
        raise ValueError(f"stride must be in 1..block ({block}), got {stride}")
    out, scored, start = [], 1, 0  # target 0 (the first token) has no context: never scored
    while scored < n:
        stop = min(start + block + 1, n)
        out.append((start, scored, stop))
        scored, start = stop, start + stride
    return out


@torch.no_grad()
def strided_nll(model: nn.Module, ids: Sequence[int] | Tensor, *, block: int | None = None,
                stride: int | None = None, skip: Iterable[int] = (), batch: int = 16) -> Score:
    """Score one sequence with `model` (idx (B, T) -> logits (B, T, V)); see the module docstring.

    `block` defaults to the model's context (`max_len`), `stride` to half of it."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    block = block or model.max_len
    stride = stride or max(1, block // 2)
    skip_ids = torch.tensor(sorted(set(skip)), dtype=torch.long)
    device = next(model.parameters()).device
    windows = strided_windows(len(ids), block, stride)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        group = windows[i:i + batch]
        width = max(stop - 1 - start for start, _, stop in group)  # inputs start .. stop - 2
        x = torch.zeros(len(group), width, dtype=torch.long)
        for r, (start, _, stop) in enumerate(group):
            x[r, : stop - 1 - start] = ids[start:stop - 1]
        logp = torch.log_softmax(model(x.to(device)).float(), dim=-1).cpu()  # (W, width, V)
        for r, (start, first, stop) in enumerate(group):
            targets = ids[first:stop]
            rows = logp[r, first - 1 - start: stop - 1 - start]  # position p predicts target p + 1
            keep = ~torch.isin(targets, skip_ids)
            total -= float(rows[keep].gather(1, targets[keep, None]).sum())
            count += int(keep.sum())
    return Score(total, count)
