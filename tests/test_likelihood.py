"""Strided held-out scoring (zoo.eval.likelihood): every target once, with the promised left context."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.eval.likelihood import strided_nll, strided_windows


class Bigram(nn.Module):
    """Logits depend on the previous token only, so any windowing must give the full-sequence score."""

    max_len = 8

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, idx):
        assert idx.shape[1] <= self.max_len, "a window longer than the context"
        return self.table[idx]


@pytest.mark.parametrize("n,block,stride", [(2, 8, 4), (9, 8, 4), (30, 8, 4), (31, 8, 1), (30, 8, 8), (100, 16, 5)])
def test_windows_score_every_target_once_with_enough_left_context(n, block, stride):
    scored = []
    for start, first, stop in strided_windows(n, block, stride):
        assert stop - 1 - start <= block  # inputs start .. stop - 2 fit the context
        for t in range(first, stop):
            assert t - start >= min(t, block - stride)  # inputs start .. t - 1 precede target t
            scored.append(t)
    assert scored == list(range(1, n))


def test_strided_score_of_a_context_free_model_equals_the_full_sequence_score():
    torch.manual_seed(1)
    model, ids = Bigram(), torch.randint(0, 11, (53,))
    logp = torch.log_softmax(model.table[ids[:-1]], -1)
    full = -logp.gather(1, ids[1:, None]).sum()
    score = strided_nll(model, ids, batch=3)
    assert score.tokens == 52 and score.nll == pytest.approx(float(full), rel=1e-6)
    skip = {int(ids[5]), int(ids[17])}
    kept = torch.tensor([int(t) not in skip for t in ids[1:]])
    partial = strided_nll(model, ids, skip=skip)
    assert partial.tokens == int(kept.sum())
    assert partial.nll == pytest.approx(float(-logp.gather(1, ids[1:, None])[kept].sum()), rel=1e-6)


def test_a_model_with_context_scores_better_with_strided_windows_than_in_disjoint_ones():
    """The point of the protocol: late targets keep their context (here, a real GPT that learned a pattern)."""
    from zoo.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=16, dropout=0.0))
    seq = torch.tensor([0, 1, 2, 3, 4] * 12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        i = torch.randint(0, len(seq) - 9, (8,))
        x = torch.stack([seq[j:j + 9] for j in i])
        loss = nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    strided = strided_nll(model, seq, stride=4).per_token
    disjoint = strided_nll(model, seq, stride=8).per_token
    assert strided <= disjoint + 1e-6
