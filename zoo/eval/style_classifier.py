"""A music style classifier, trained on real pieces, that scores a style-conditioned model's samples (the
way `zoo.eval.classifier` scores class-conditional images): does `style=irish` sound like the Irish tunes?

The classifier reads what a listener would, not the tokens: a note list (start, end, pitch, velocity)
becomes `NUM_FEATURES` numbers (`style_features`: key-invariant pitch-class profile, register, polyphony,
chordal share, silence, note lengths, inter-onset intervals, melodic steps of the top voice, note
density, velocities), and a small MLP on standardised features predicts the style. Features rather than
a network on event ids: they are the same whichever codec produced the music, cannot key on a token the
model happens to emit, and say why a sample was (mis)classified. A pitch-class profile is rotated to its
strongest class, so transposition does not change the style.

Real windows (`event_windows`) are decoded exactly as samples are (a window of events from a random
point of a piece, through the codec's `decode_notes`), so the classifier sees the same kind of excerpt
at training and at test time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from zoo.eval.music_stats import LENGTH_BINS

_IOI_BINS = (0.0, 0.06, 0.12, 0.2, 0.3, 0.45, 0.7, 1.1, float("inf"))  # seconds between distinct onsets
_STEP_BINS = (0, 1, 2, 3, 4, 5, 7, 9, 12, 128)  # semitones between successive top-voice notes
_GRID = 0.02  # seconds per frame for polyphony and silence
NUM_FEATURES = 12 + 4 + 3 + 1 + (len(LENGTH_BINS) - 1) + (len(_IOI_BINS) - 1) + (len(_STEP_BINS) - 1) + 1 + 2


def style_features(notes: np.ndarray) -> np.ndarray:
    """(N, 4) notes (start s, end s, pitch, velocity) -> (NUM_FEATURES,) float64; zeros for no notes."""
    out = np.zeros(NUM_FEATURES)
    notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
    if len(notes) == 0:
        return out
    start, end, pitch, vel = notes.T
    dur = np.maximum(end - start, 1e-3)
    pc = np.bincount(pitch.astype(int) % 12, weights=dur, minlength=12)
    pc = np.roll(pc, -int(pc.argmax())) / pc.sum()  # key-invariant profile
    span = max(float(end.max() - start.min()), _GRID)
    frames = np.zeros(int(np.ceil(span / _GRID)) + 1)
    t0 = start.min()
    for a, b in zip(((start - t0) / _GRID).astype(int), np.maximum(((end - t0) / _GRID).astype(int), 1)):
        frames[a:max(b, a + 1)] += 1
    sounding = frames[frames > 0]
    onsets, counts = np.unique(np.round(start, 2), return_counts=True)
    ioi = np.diff(onsets)
    top = np.array([pitch[np.round(start, 2) == t].max() for t in onsets])
    steps = np.abs(np.diff(top))
    parts = [
        pc,
        [pitch.mean() / 127, pitch.std() / 24, np.percentile(pitch, 5) / 127, np.percentile(pitch, 95) / 127],
        [sounding.mean() / 4 if len(sounding) else 0.0, min(frames.max(), 12) / 12, (counts >= 3).mean()],
        [(frames == 0).mean()],
        _hist(dur, LENGTH_BINS),
        _hist(ioi, _IOI_BINS),
        _hist(steps, _STEP_BINS, right=False),
        [np.log1p(len(notes) / span)],
        [vel.mean() / 127, vel.std() / 32],
    ]
    out[:] = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    return out


def _hist(x: np.ndarray, bins: Sequence[float], right: bool = True) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(len(bins) - 1)
    edges = np.asarray(bins, dtype=np.float64)
    idx = np.clip(np.digitize(x, edges[1:-1], right=right), 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1) / len(x)


def event_windows(codec, sequences: Sequence[np.ndarray], labels: Sequence[int], *, events: int, per_class: int,
                  seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """`per_class` note lists per style: windows of `events` event ids from a random point of a piece of
    that style (pieces drawn by length), decoded by `codec.decode_notes` as samples are."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    notes, out_labels = [], []
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        lengths = np.array([len(sequences[i]) for i in idx], dtype=np.float64)
        for i in rng.choice(idx, size=per_class, p=lengths / lengths.sum()):
            seq = sequences[i]
            a = int(rng.integers(0, max(1, len(seq) - events)))
            notes.append(codec.decode_notes(seq[a:a + events]))
            out_labels.append(int(c))
    return notes, out_labels


@dataclass
class StyleClassifier:
    """Standardisation + MLP; `predict(note lists) -> style ids`."""

    net: nn.Module
    mean: Tensor
    std: Tensor
    names: list[str]

    def logits(self, pieces: Sequence[np.ndarray]) -> Tensor:
        x = torch.tensor(np.stack([style_features(p) for p in pieces]), dtype=torch.float32)
        with torch.no_grad():
            return self.net((x - self.mean) / self.std)

    def predict(self, pieces: Sequence[np.ndarray]) -> list[int]:
        return self.logits(pieces).argmax(-1).tolist()

    def accuracy(self, pieces: Sequence[np.ndarray], labels: Sequence[int]) -> float:
        return float(np.mean(np.array(self.predict(pieces)) == np.asarray(labels)))


def train_style_classifier(pieces: Sequence[np.ndarray], labels: Sequence[int], names: Sequence[str], *,
                           hidden: int = 64, steps: int = 600, lr: float = 3e-3, weight_decay: float = 1e-3,
                           seed: int = 0) -> StyleClassifier:
    """Full-batch Adam on the features of `pieces` (a few seconds on a CPU)."""
    if len(set(labels)) < 2:
        raise ValueError(f"a style classifier needs pieces of at least 2 styles, got labels {sorted(set(labels))}")
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(np.stack([style_features(p) for p in pieces]), dtype=torch.float32)
    y = torch.tensor(list(labels), dtype=torch.long)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    xs = (x - mean) / std
    net = nn.Sequential(nn.Linear(NUM_FEATURES, hidden), nn.GELU(), nn.Dropout(0.2), nn.Linear(hidden, len(names)))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.dim() == 1 else p.shape[-1] ** -0.5))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.random.fork_rng():  # dropout draws from a seeded stream, not the caller's
        torch.manual_seed(seed)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs), y).backward()
            opt.step()
    return StyleClassifier(net.eval(), mean, std, list(names))
