"""MIDI files and note arrays: reading, checking and writing files, the damper pedal, augmentation.

What every music codec and data module shares before (or after) it turns notes into tokens: `load_midi`
(a file, with every parse failure a `MidiError` naming it), `midi_from_bytes`, `notes_to_midi` (a file
again), `midi_notes`, `apply_sustain` (CC64), and the augmentations `transpose_notes` / `stretch_notes`.
The event vocabulary itself is the codec's (zoo/codecs/midi.py, zoo/codecs/multitrack.py).

Notes are numpy arrays `(N, 4)` float64 with columns (start seconds, end seconds, pitch, velocity):
`START, END, PITCH, VELOCITY`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pretty_midi

log = logging.getLogger(__name__)

NUM_PITCHES = 128
SUSTAIN_CC = 64  # damper pedal; value >= 64 means down (General MIDI)
START, END, PITCH, VELOCITY = range(4)  # columns of a note array


class MidiError(ValueError):
    """A MIDI file could not be used: unreadable, truncated, not MIDI, or without notes."""


def load_midi(path: str | Path, *, require_notes: bool = True) -> pretty_midi.PrettyMIDI:
    """Read a MIDI file with pretty_midi; any parse failure becomes a `MidiError` naming the file.

    `require_notes`: also reject a file that parses but holds no notes (drum notes count).
    pretty_midi's own warnings (e.g. tempo events on non-zero tracks) are logged at DEBUG level.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MIDI file not found: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pm = pretty_midi.PrettyMIDI(str(path))
    except EOFError as e:
        raise MidiError(f"{path}: truncated MIDI file (unexpected end of data after {path.stat().st_size} "
                        "bytes)") from e
    except Exception as e:  # mido/pretty_midi raise OSError, ValueError, KeyError, IndexError ... on bad bytes
        raise MidiError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e or 'no detail'})") from e
    for w in caught:
        log.debug("%s: %s", path, w.message)
    if require_notes and not any(inst.notes for inst in pm.instruments):
        raise MidiError(f"{path}: the MIDI file contains no notes")
    return pm


def midi_from_bytes(data: bytes) -> pretty_midi.PrettyMIDI:
    """Parse in-memory MIDI bytes (e.g. music21's output) with pretty_midi."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pretty_midi.PrettyMIDI(io.BytesIO(data))


def apply_sustain(notes: np.ndarray, control_changes: Sequence[pretty_midi.ControlChange],
                  end_time: float) -> np.ndarray:
    """Extend notes released while the sustain pedal (CC64 >= 64) is down to the pedal release.

    A note whose release falls strictly inside a pedal-down interval ends when the pedal goes up
    (or at `end_time` if it never does). Re-striking a held pitch cuts the held note at the new
    onset; that happens later, in the codec's canonical form. Returns a new array.
    """
    intervals, down_at = [], None
    for cc in sorted((c for c in control_changes if c.number == SUSTAIN_CC), key=lambda c: c.time):
        if cc.value >= 64 and down_at is None:
            down_at = cc.time
        elif cc.value < 64 and down_at is not None:
            intervals.append((down_at, cc.time))
            down_at = None
    if down_at is not None:
        intervals.append((down_at, max(end_time, down_at)))
    out = notes.copy()
    if not intervals or len(out) == 0:
        return out
    downs = np.array([d for d, _ in intervals])
    ups = np.array([u for _, u in intervals])
    k = np.searchsorted(downs, out[:, END], side="left") - 1  # last pedal-down strictly before release
    inside = (k >= 0) & (out[:, END] < ups[np.maximum(k, 0)])
    out[inside, END] = ups[k[inside]]
    return out


def transpose_notes(notes: np.ndarray, semitones: int) -> np.ndarray:
    """Shift every pitch by `semitones`; notes that leave 0..127 are dropped."""
    out = notes.copy()
    out[:, PITCH] += semitones
    return out[(out[:, PITCH] >= 0) & (out[:, PITCH] < NUM_PITCHES)]


def stretch_notes(notes: np.ndarray, factor: float) -> np.ndarray:
    """Scale all times by `factor` (> 1 is slower)."""
    if factor <= 0:
        raise ValueError(f"stretch factor must be > 0, got {factor}")
    out = notes.copy()
    out[:, [START, END]] *= factor
    return out


def notes_to_midi(notes: np.ndarray, program: int = 0) -> pretty_midi.PrettyMIDI:
    """One instrument (`program`, default acoustic grand piano) holding `notes` (N, 4).

    120 bpm at 500 ticks per beat = 1 ms per tick, so times on a 10 ms grid survive a file round trip.
    """
    pm = pretty_midi.PrettyMIDI(resolution=500, initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=program)
    for s, e, p, v in notes.tolist():
        inst.notes.append(pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s), end=float(e)))
    pm.instruments.append(inst)
    return pm


def midi_notes(pm: pretty_midi.PrettyMIDI) -> np.ndarray:
    """All notes of all instruments, as they are (no selection, no sustain), sorted; (N, 4)."""
    rows = [(n.start, n.end, n.pitch, n.velocity) for inst in pm.instruments for n in inst.notes]
    return sort_notes(np.array(rows, dtype=np.float64).reshape(-1, 4))


def sort_notes(notes: np.ndarray) -> np.ndarray:
    """Notes in a canonical order: by start, pitch, end, velocity."""
    return notes[np.lexsort((notes[:, VELOCITY], notes[:, END], notes[:, PITCH], notes[:, START]))]
