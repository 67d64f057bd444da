"""JSB Chorales grid codec: four voices (S, A, T, B) per 16th-note step, serialized step by step.

A piece is a grid `(steps, 4)` of MIDI pitches, -1 = the voice is silent. It is read in raster
order, soprano to bass within a step, one token per voice per step, as in Coconet and the Music
Transformer paper's JSB experiment:

    id                      token
    0, 1, 2                 PAD, BOS, EOS (special)
    3                       SILENCE (the voice rests)
    4 + (p - min_pitch)     pitch p, for p in min_pitch..max_pitch (default 36..81, the dataset's range)

The token unit is therefore one voice at one 16th step: 4 tokens per step. A negative
log-likelihood "per token" from a model trained on this codec is per (voice, step), the unit of the
paper's JSB table (its tokens are the same raster-scanned grid cells); BOS/EOS are framing that
datamodules add and should be left out of such a comparison.

The grid cannot tell a held note from a repeated one: step t and t+1 with the same pitch in a voice
are the same cells either way. `to_midi` plays them as one held note (the dataset's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pretty_midi

from zoo.codecs.base import Codec

PAD_ID, BOS_ID, EOS_ID, SILENCE_ID = 0, 1, 2, 3
NUM_VOICES = 4
VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")


def grid_array(grid: Sequence[Sequence[float]] | np.ndarray, voices: int = NUM_VOICES) -> np.ndarray:
    """Validate and normalise a grid to int64 `(steps, voices)`, -1 = silence.

    Accepts integral floats (60.0) and NaN (silence, as in some releases of the data). Steps with
    fewer than `voices` pitches (some releases list only the sounding notes) are padded with
    silence at the end; more than `voices` is an error.
    """
    try:  # regular input: one vectorised pass
        arr = np.asarray(grid, dtype=np.float64)
    except ValueError:  # ragged: steps of different lengths
        arr = None
    if arr is not None and (arr.size == 0 or (arr.ndim == 2 and arr.shape[1] == voices)):
        arr = np.where(np.isnan(arr), -1.0, arr).reshape(-1, voices)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            t = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"step {t} has non-integer pitches {arr[t].tolist()}; expected MIDI numbers or "
                             "-1 for silence")
        rows = arr
    else:
        rows = _ragged_rows(grid, voices)
    out = np.asarray(rows, dtype=np.int64).reshape(-1, voices)
    if (out < -1).any():
        raise ValueError(f"negative pitch {out.min()} in the grid; only -1 (silence) is allowed")
    return out


def _ragged_rows(grid: Sequence[Sequence[float]], voices: int) -> list[list[float]]:
    rows = []
    for t, step in enumerate(grid):
        step = list(np.asarray(step, dtype=np.float64).reshape(-1))
        if len(step) > voices:
            raise ValueError(f"step {t} has {len(step)} pitches {step}; at most {voices} voices are accepted")
        step = [-1.0 if math.isnan(p) else p for p in step] + [-1.0] * (voices - len(step))
        if not all(float(p).is_integer() for p in step):
            raise ValueError(f"step {t} has non-integer pitches {step}; expected MIDI numbers or -1 for silence")
        rows.append(step)
    return rows


class JSBGridCodec(Codec):
    """Grid `(steps, 4)` <-> ids, exact. Layout and token unit in the module docstring."""

    type_name: ClassVar[str] = "jsb_grid"

    def __init__(self, *, min_pitch: int = 36, max_pitch: int = 81) -> None:
        if not (0 <= min_pitch <= max_pitch <= 127):
            raise ValueError(f"need 0 <= min_pitch <= max_pitch <= 127, got min_pitch={min_pitch}, "
                             f"max_pitch={max_pitch}")
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.pad_id, self.bos_id, self.eos_id, self.silence_id = PAD_ID, BOS_ID, EOS_ID, SILENCE_ID
        self.pitch_offset = SILENCE_ID + 1
        self.vocab_size = self.pitch_offset + self.max_pitch - self.min_pitch + 1
        self.voices = NUM_VOICES

    def config(self) -> dict[str, Any]:
        return {"min_pitch": self.min_pitch, "max_pitch": self.max_pitch}

    def encode(self, x: Sequence[Sequence[float]] | np.ndarray) -> list[int]:
        """Grid (steps, 4) -> 4·steps ids (no BOS/EOS). Raises ValueError for pitches out of range."""
        return self.encode_grid(grid_array(x)).tolist()

    def encode_grid(self, grid: np.ndarray) -> np.ndarray:
        """Vectorised `encode` for an int grid already in `grid_array` form; int64 (4·steps,)."""
        grid = np.asarray(grid, dtype=np.int64)
        sounding = grid >= 0
        out_of_range = sounding & ((grid < self.min_pitch) | (grid > self.max_pitch))
        if out_of_range.any():
            t, v = map(int, np.argwhere(out_of_range)[0])
            raise ValueError(f"pitch {grid[t, v]} at step {t}, voice {VOICE_NAMES[v]} is outside this codec's "
                             f"range {self.min_pitch}..{self.max_pitch}; widen min_pitch/max_pitch")
        ids = np.where(sounding, grid - self.min_pitch + self.pitch_offset, SILENCE_ID)
        return ids.reshape(-1)

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Any ids in the vocabulary -> grid int64 (steps, 4).

        Special ids are skipped; the remaining tokens fill the grid in raster order, and a final
        incomplete step is completed with silence. Raises ValueError for ids outside the vocabulary.
        """
        ids = np.asarray(ids.tolist() if hasattr(ids, "tolist") else list(ids), dtype=np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if len(bad):
            raise ValueError(f"token ids {bad[:10].tolist()} are outside the {self.type_name} vocabulary "
                             f"(ids 0..{self.vocab_size - 1})")
        ids = ids[ids >= SILENCE_ID]
        ids = np.concatenate([ids, np.full(-len(ids) % self.voices, SILENCE_ID, dtype=np.int64)])
        grid = np.where(ids == SILENCE_ID, -1, ids - self.pitch_offset + self.min_pitch)
        return grid.reshape(-1, self.voices)

    def transpose_grid(self, grid: np.ndarray, semitones: int) -> np.ndarray:
        """Shift every sounding pitch; raises ValueError if one leaves the codec's range."""
        grid = np.asarray(grid, dtype=np.int64)
        out = np.where(grid >= 0, grid + semitones, -1)
        self.encode_grid(out)  # range check with a precise message
        return out

    def to_midi(self, grid: Sequence[Sequence[float]] | np.ndarray, step_seconds: float = 0.125,
                velocity: int = 90, program: int = 52) -> pretty_midi.PrettyMIDI:
        """A PrettyMIDI with one instrument per voice (S, A, T, B; default program 52, choir aahs).

        `step_seconds` is the length of a 16th note (0.125 s = 120 quarter notes per minute). Equal
        consecutive pitches in a voice are tied into one note (see the module docstring).
        """
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be > 0, got {step_seconds}")
        grid = grid_array(grid)
        pm = pretty_midi.PrettyMIDI(initial_tempo=15.0 / step_seconds)  # a 16th is a quarter of a beat
        for v in range(grid.shape[1]):
            inst = pretty_midi.Instrument(program=program, name=VOICE_NAMES[v])
            col = grid[:, v]
            t = 0
            while t < len(col):
                if col[t] < 0:
                    t += 1
                    continue
                u = t
                while u + 1 < len(col) and col[u + 1] == col[t]:
                    u += 1
                inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(col[t]),
                                                   start=t * step_seconds, end=(u + 1) * step_seconds))
                t = u + 1
            pm.instruments.append(inst)
        return pm
