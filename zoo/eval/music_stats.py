"""Objective statistics of music, to compare generated pieces with real ones (issue 16).

Listening is not a measurement: these numbers are. For a set of pieces (pretty_midi objects; drum
tracks are left out, they have no pitch class) `music_stats` returns

- `pitch_class`: the 12-bin pitch-class histogram, each note weighted by its duration, summing to 1;
- `note_length`: the histogram of note durations over `LENGTH_BINS` (seconds), summing to 1;
- `polyphony`: mean number of notes sounding while at least one sounds;
- `held_over_4s`: share of notes held longer than 4 seconds (a stuck note is the classic failure of a
  performance-event model whose note-on slid out of its context window);
- `silence`: share of the time between the first onset and the last release with no note sounding;
- `notes_per_second`.

`compare(samples, reference)` turns two such dictionaries into distances: total variation (half the L1
distance, 0 = same, 1 = disjoint) between the histograms and absolute differences of the scalars.
`card_table(result, ...)` turns benchmarks/music_stats.py's output into the model card's `sample_stats`
table (zoo.hub.export renders it in README.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

LENGTH_BINS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, float("inf"))  # seconds; the last bin is "held over 4 s"
HELD_SECONDS = 4.0
_GRID = 0.01  # seconds per frame when measuring polyphony and silence


def _notes(pm: Any) -> np.ndarray:
    """(n, 3) float: start, end, pitch of every pitched note (drum tracks skipped)."""
    rows = [(n.start, n.end, n.pitch) for inst in pm.instruments if not inst.is_drum for n in inst.notes
            if n.end > n.start]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def music_stats(pieces: Iterable[Any]) -> dict[str, Any]:
    """Statistics pooled over `pieces` (see the module docstring); `pieces` counts the non-empty ones."""
    pitch_class = np.zeros(12)
    lengths: list[np.ndarray] = []
    sounding_frames = polyphony_sum = silent_frames = span_frames = 0.0
    seconds = 0.0
    n_pieces = 0
    for pm in pieces:
        notes = _notes(pm)
        if len(notes) == 0:
            continue
        n_pieces += 1
        start, end, pitch = notes[:, 0], notes[:, 1], notes[:, 2].astype(int)
        dur = end - start
        np.add.at(pitch_class, pitch % 12, dur)
        lengths.append(dur)
        t0, t1 = start.min(), end.max()
        frames = max(1, int(np.ceil((t1 - t0) / _GRID)))
        count = np.zeros(frames + 1)
        np.add.at(count, np.clip(((start - t0) / _GRID).astype(int), 0, frames), 1)
        np.add.at(count, np.clip(((end - t0) / _GRID).astype(int), 0, frames), -1)
        active = np.cumsum(count)[:frames]  # notes sounding in each frame
        sounding = active > 0
        sounding_frames += sounding.sum()
        polyphony_sum += active[sounding].sum()
        silent_frames += (~sounding).sum()
        span_frames += frames
        seconds += t1 - t0
    if n_pieces == 0:
        raise ValueError("music_stats: no notes in any piece")
    all_lengths = np.concatenate(lengths)
    hist, _ = np.histogram(all_lengths, bins=np.asarray(LENGTH_BINS))
    return {
        "pieces": n_pieces,
        "notes": int(len(all_lengths)),
        "pitch_class": (pitch_class / pitch_class.sum()).tolist(),
        "note_length": (hist / hist.sum()).tolist(),
        "polyphony": float(polyphony_sum / max(sounding_frames, 1)),
        "held_over_4s": float((all_lengths > HELD_SECONDS).mean()),
        "silence": float(silent_frames / max(span_frames, 1)),
        "notes_per_second": float(len(all_lengths) / max(seconds, 1e-9)),
    }


def total_variation(p: Iterable[float], q: Iterable[float]) -> float:
    """Half the L1 distance between two distributions: 0 = identical, 1 = disjoint."""
    return 0.5 * float(np.abs(np.asarray(list(p)) - np.asarray(list(q))).sum())


def compare(samples: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float]:
    """Distances of `samples`' statistics from `reference`'s (both from `music_stats`)."""
    out = {"pitch_class_tv": total_variation(samples["pitch_class"], reference["pitch_class"]),
           "note_length_tv": total_variation(samples["note_length"], reference["note_length"])}
    for key in ("polyphony", "held_over_4s", "silence", "notes_per_second"):
        out[f"{key}_diff"] = float(samples[key] - reference[key])
    return out


# (label, key in music_stats' output, as a percentage?) for the model card's table, in its order
_CARD_ROWS = (("mean polyphony (notes sounding when any sounds)", "polyphony", False),
              ("notes held longer than 4 s", "held_over_4s", True),
              ("silent share of the piece", "silence", True),
              ("notes per second", "notes_per_second", False))


def card_table(result: Mapping[str, Any], *, command: str, about: str) -> dict[str, Any]:
    """The model card's `sample_stats` field from a {"samples", "reference", "distance"} result
    (benchmarks/music_stats.py): samples against the reference data, with the command and how it was
    measured (`about`), as zoo.hub.export.model_card renders it. Any music codec: the statistics are
    computed on decoded MIDI."""
    got, ref, dist = result["samples"], result["reference"], result["distance"]

    def fmt(value: float, percent: bool) -> str:
        return f"{100 * value:.1f} %" if percent else f"{value:.1f}"

    rows = [[label, fmt(got[key], pct), fmt(ref[key], pct)] for label, key, pct in _CARD_ROWS]
    rows += [["pitch-class histogram, total variation to the data", f"{dist['pitch_class_tv']:.2f}", "0"],
             ["note-length histogram, total variation to the data", f"{dist['note_length_tv']:.2f}", "0"]]
    return {"about": about, "command": command,
            "header": ["statistic", f"samples ({got['pieces']})", f"validation data ({ref['pieces']} pieces)"],
            "rows": rows}
