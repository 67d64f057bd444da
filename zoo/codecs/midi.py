"""Performance-event codec for MIDI (Oore et al. 2018 "This Time with Feeling"; Music Transformer).

A performance is a list of notes; it becomes a sequence of events on a grid of
`1 / steps_per_second` seconds (10 ms by default):

    id                              event
    0, 1, 2                         PAD, BOS, EOS (special; `decode` ignores them)
    3 + p             (p 0..127)    NOTE_ON pitch p, at the current time and velocity
    131 + p           (p 0..127)    NOTE_OFF pitch p
    259 + k - 1       (k 1..K)      TIME_SHIFT by k steps (K = `max_shift_steps`, 100 = 1 s)
    259 + K + b       (b 0..V-1)    VELOCITY bin b for the following note-ons (V = `num_velocity_bins`)

With the defaults that is 3 + 128 + 128 + 100 + 32 = 391 ids (388 events). `encode` returns events
only; datamodules frame each piece as BOS + events + EOS.

Canonical form. `encode` is a function of the *quantized* note list, normalised so that decoding is
unambiguous (hence `encode(decode(encode(m))) == encode(m)` exactly):
  * times are rounded to the nearest step; a note shorter than one step lasts one step;
  * notes of the same pitch may not overlap: two notes that start on the same step become one (the
    longer; its velocity), and a note still sounding when its pitch is struck again ends there;
  * velocities are binned uniformly over 1..127 and decode to the mean velocity of their bin;
  * at one time step, note-offs come first (by pitch), then note-ons by (velocity bin, pitch), and a
    VELOCITY event precedes a note-on only when the bin changes (always before the first one);
  * a gap longer than K steps is a run of TIME_SHIFT(K) events and one remainder.
So `decode(encode(m))` equals the canonical form of `m`: times within half a step (5 ms), the
velocity of the bin, and the same-pitch overlaps resolved as above.

`decode` accepts ANY sequence of ids in the vocabulary (e.g. model samples) and always returns valid
MIDI: note-offs of silent pitches are ignored, a note-on of a sounding pitch first ends that note,
notes still open at the end close at the final time, and notes of zero duration are dropped.

Notes between the MIDI file and the events are numpy arrays `(N, 4)` float64 with columns
(start seconds, end seconds, pitch, velocity): see `extract_notes` here and zoo/codecs/midi_files.py
(reading and writing files, the sustain pedal, transposition and time stretch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pretty_midi

from zoo.codecs.base import Codec
from zoo.codecs.midi_files import (
    END,
    NUM_PITCHES,
    PITCH,
    START,
    VELOCITY,
    apply_sustain,
    load_midi,
    notes_to_midi,
    sort_notes,
)

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NUM_SPECIAL = 3


def _quantize(seconds: np.ndarray, steps_per_second: int) -> np.ndarray:
    # round half up (not numpy's half-to-even) so that step/sps always maps back to step
    return np.floor(np.asarray(seconds, dtype=np.float64) * steps_per_second + 0.5).astype(np.int64)


class PerformanceCodec(Codec):
    """MIDI <-> performance events (id layout in the module docstring).

    Options: `steps_per_second` (time resolution), `max_shift_steps` (longest single TIME_SHIFT),
    `num_velocity_bins` (1..127), `sustain` (apply the damper pedal, see `apply_sustain`),
    `programs` (keep only instruments with these General MIDI programs 0..127; None = all) and
    `instruments` (keep only these indices into `PrettyMIDI.instruments`; None = all). Both filters
    may be given (a note must pass both). Drum instruments are always dropped: they have no pitch.
    Decoded MIDI has one piano (program 0) instrument.

    `styles` names a style-conditioned model's conditions (class id i = styles[i]; None = unconditional), so
    that `style=bach` means the same after loading; they do not change the events.
    """

    type_name: ClassVar[str] = "midi_performance"

    def __init__(self, *, steps_per_second: int = 100, max_shift_steps: int = 100, num_velocity_bins: int = 32,
                 sustain: bool = True, programs: Sequence[int] | None = None,
                 instruments: Sequence[int] | None = None, styles: Sequence[str] | None = None) -> None:
        if not (isinstance(steps_per_second, int) and steps_per_second >= 1):
            raise ValueError(f"steps_per_second must be an integer >= 1, got {steps_per_second!r}")
        if not (isinstance(max_shift_steps, int) and max_shift_steps >= 1):
            raise ValueError(f"max_shift_steps must be an integer >= 1, got {max_shift_steps!r}")
        if not (isinstance(num_velocity_bins, int) and 1 <= num_velocity_bins <= 127):
            raise ValueError(f"num_velocity_bins must be an integer in 1..127, got {num_velocity_bins!r}")
        if programs is not None and not all(0 <= int(p) <= 127 for p in programs):
            raise ValueError(f"programs must be General MIDI program numbers 0..127, got {list(programs)}")
        if instruments is not None and not all(int(i) >= 0 for i in instruments):
            raise ValueError(f"instruments must be indices >= 0 into PrettyMIDI.instruments, got {instruments}")
        self.steps_per_second = steps_per_second
        self.max_shift_steps = max_shift_steps
        self.num_velocity_bins = num_velocity_bins
        self.sustain = bool(sustain)
        self.programs = None if programs is None else [int(p) for p in programs]
        self.instruments = None if instruments is None else [int(i) for i in instruments]
        if styles is not None and (isinstance(styles, str) or not styles or len(set(map(str, styles))) != len(styles)):
            raise ValueError(f"styles must be a non-empty list of distinct names (or None), got {styles!r}")
        self.styles = None if styles is None else [str(x) for x in styles]

        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID
        self.note_on_offset = NUM_SPECIAL
        self.note_off_offset = self.note_on_offset + NUM_PITCHES
        self.shift_offset = self.note_off_offset + NUM_PITCHES  # id of TIME_SHIFT(1)
        self.velocity_offset = self.shift_offset + max_shift_steps
        self.vocab_size = self.velocity_offset + num_velocity_bins
        # velocity v in 1..127 -> bin (v - 1) * V // 127; a bin decodes to the mean of its velocities
        vel = np.arange(1, 128)
        self._bin_of_velocity = np.concatenate([[0], (vel - 1) * num_velocity_bins // 127])  # index 0..127
        self._velocity_of_bin = np.array(
            [int(round(vel[self._bin_of_velocity[1:] == b].mean())) for b in range(num_velocity_bins)]
        )

    def config(self) -> dict[str, Any]:
        return {
            "steps_per_second": self.steps_per_second, "max_shift_steps": self.max_shift_steps,
            "num_velocity_bins": self.num_velocity_bins, "sustain": self.sustain,
            "programs": self.programs, "instruments": self.instruments,
        } | ({"styles": self.styles} if self.styles is not None else {})  # absent: older checkpoints' state

    @property
    def num_classes(self) -> int:  # style conditions (0 = unconditional); a null model.num_classes comes from here
        return len(self.styles) if self.styles else 0

    # ------------------------------------------------------------------ MIDI -> notes
    def extract_notes(self, midi: pretty_midi.PrettyMIDI | str | Path) -> np.ndarray:
        """The selected, non-drum instruments' notes, sustain applied, merged and sorted: (N, 4)."""
        pm = midi if isinstance(midi, pretty_midi.PrettyMIDI) else load_midi(midi)
        end_time = pm.get_end_time()
        parts = []
        for index, inst in enumerate(pm.instruments):
            if inst.is_drum or (self.programs is not None and inst.program not in self.programs):
                continue
            if self.instruments is not None and index not in self.instruments:
                continue
            notes = np.array([(n.start, n.end, n.pitch, n.velocity) for n in inst.notes], dtype=np.float64)
            notes = notes.reshape(-1, 4)
            if self.sustain:  # the pedal acts per channel, i.e. per pretty_midi instrument
                notes = apply_sustain(notes, inst.control_changes, end_time)
            parts.append(notes)
        return sort_notes(np.concatenate(parts) if parts else np.zeros((0, 4)))

    # ------------------------------------------------------------------ notes -> events
    def canonical_notes(self, notes: np.ndarray) -> np.ndarray:
        """Quantized canonical form (module docstring) as int64 (N, 4): start step, end step, pitch, bin.

        Sorted by (pitch, start). Raises ValueError for pitches outside 0..127.
        """
        notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
        pitch = notes[:, PITCH]
        if len(pitch) and (pitch.min() < 0 or pitch.max() >= NUM_PITCHES or np.any(pitch != np.round(pitch))):
            raise ValueError(f"note pitches must be integers in 0..127, got range {pitch.min()}..{pitch.max()}")
        start = np.maximum(_quantize(notes[:, START], self.steps_per_second), 0)
        end = np.maximum(_quantize(notes[:, END], self.steps_per_second), start + 1)
        velocity = np.clip(np.round(notes[:, VELOCITY]), 1, 127).astype(np.int64)
        q = np.stack([start, end, pitch.astype(np.int64), self._bin_of_velocity[velocity]], axis=1)
        # per pitch by onset; among equal onsets the longest first, so `unique` keeps it
        q = q[np.lexsort((-q[:, 3], -q[:, 1], q[:, 0], q[:, 2]))]
        _, first = np.unique(q[:, [2, 0]], axis=0, return_index=True)
        q = q[np.sort(first)]
        if len(q) == 0:
            return q
        # a sounding note ends when its pitch is struck again (onsets now strictly increase per pitch)
        same_pitch_next = np.append(q[1:, 2] == q[:-1, 2], False)
        next_start = np.append(q[1:, 0], 0)
        q[same_pitch_next, 1] = np.minimum(q[same_pitch_next, 1], next_start[same_pitch_next])
        return q

    def encode(self, x: pretty_midi.PrettyMIDI | str | Path) -> list[int]:
        """MIDI (object or file path) -> event ids (no BOS/EOS)."""
        return self.encode_notes(self.extract_notes(x)).tolist()

    def encode_notes(self, notes: np.ndarray, return_times: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
        """Note array (N, 4) -> event ids, int64 (E,). Vectorised: fast enough to re-encode per batch.

        With `return_times`, also return each event's time in steps (int64 (E,); a TIME_SHIFT is
        stamped with the time it starts from).
        """
        q = self.canonical_notes(notes)
        n = len(q)
        # events: note-offs (kind 0) before note-ons (kind 1) at equal times; ons by (bin, pitch)
        time = np.concatenate([q[:, 1], q[:, 0]])
        kind = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
        key = np.concatenate([q[:, 2], q[:, 3] * NUM_PITCHES + q[:, 2]])
        token = np.concatenate([self.note_off_offset + q[:, 2], self.note_on_offset + q[:, 2]])
        order = np.lexsort((key, kind, time))
        time, kind, token = time[order], kind[order], token[order]
        vbin = np.concatenate([np.full(n, -1), q[:, 3]])[order]

        # velocity change before a note-on whose bin differs from the previous note-on's
        on_bins = vbin[kind == 1]
        changed = np.ones(len(on_bins), dtype=bool)
        changed[1:] = on_bins[1:] != on_bins[:-1]
        needs_velocity = np.zeros(len(time), dtype=bool)
        needs_velocity[kind == 1] = changed
        # time shifts before each event: `full` shifts of K steps, then one of `rest` steps
        gap = np.diff(time, prepend=0)
        k = self.max_shift_steps
        full, rest = gap // k, gap % k
        n_shift = full + (rest > 0)
        count = n_shift + needs_velocity + 1
        end = np.cumsum(count)  # one past each event's own token
        begin = end - count

        ids = np.full(int(end[-1]) if len(end) else 0, self.shift_offset + k - 1, dtype=np.int64)
        ids[end - 1] = token
        ids[end[needs_velocity] - 2] = self.velocity_offset + vbin[needs_velocity]
        has_rest = rest > 0
        ids[begin[has_rest] + full[has_rest]] = self.shift_offset + rest[has_rest] - 1
        if not return_times:
            return ids
        # time of each output token: the event's previous time plus the shifts already applied
        prev = time - gap
        times = np.repeat(prev, count)
        within = np.arange(len(ids)) - np.repeat(begin, count)  # position inside the event's group
        shifted = np.minimum(within, np.repeat(n_shift, count))  # shifts taken before this token
        times += np.minimum(shifted * k, np.repeat(gap, count))
        return ids, times

    # ------------------------------------------------------------------ events -> notes
    def decode_notes(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Any ids in the vocabulary -> valid note array (N, 4), sorted by start (rules in module doc)."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside the {self.type_name} vocabulary "
                             f"(ids 0..{self.vocab_size - 1})")
        sps = self.steps_per_second
        step, velocity = 0, int(self._velocity_of_bin[self._bin_of_velocity[64]])  # mezzo-forte until told
        sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start step, velocity)
        notes: list[tuple[float, float, int, int]] = []

        def close(pitch: int) -> None:
            start, vel = sounding.pop(pitch)
            if step > start:  # zero-length notes are dropped
                notes.append((start / sps, step / sps, pitch, vel))

        for i in ids:
            if i < self.note_on_offset:
                continue  # PAD / BOS / EOS
            if i < self.note_off_offset:
                pitch = i - self.note_on_offset
                if pitch in sounding:
                    close(pitch)
                sounding[pitch] = (step, velocity)
            elif i < self.shift_offset:
                pitch = i - self.note_off_offset
                if pitch in sounding:
                    close(pitch)
            elif i < self.velocity_offset:
                step += i - self.shift_offset + 1
            else:
                velocity = int(self._velocity_of_bin[i - self.velocity_offset])
        for pitch in sorted(sounding):
            close(pitch)
        return sort_notes(np.array(notes, dtype=np.float64).reshape(-1, 4))

    def decode(self, ids: Sequence[int] | np.ndarray) -> pretty_midi.PrettyMIDI:
        """Any ids in the vocabulary -> a valid one-piano PrettyMIDI. Raises ValueError for ids outside it."""
        return notes_to_midi(self.decode_notes(ids))

    # ------------------------------------------------------------------ augmentation on ids
    def transpose(self, ids: Sequence[int] | np.ndarray, semitones: int) -> list[int]:
        """Shift NOTE_ON/NOTE_OFF events by `semitones`; events of pitches leaving 0..127 are dropped.

        Equals `encode_notes(transpose_notes(notes, s))` whenever no note leaves the range. When some
        do, the result still decodes to exactly the in-range notes, but may keep VELOCITY events that
        now precede no note-on (not canonical: re-encoding the decoded notes removes them).
        """
        ids = np.asarray(ids, dtype=np.int64)
        is_note = (ids >= self.note_on_offset) & (ids < self.shift_offset)
        base = np.where(ids < self.note_off_offset, self.note_on_offset, self.note_off_offset)
        pitch = ids - base + semitones
        keep = ~is_note | ((pitch >= 0) & (pitch < NUM_PITCHES))
        out = np.where(is_note, base + pitch, ids)
        return out[keep].tolist()

    def describe(self, token_id: int) -> str:
        """Human-readable name of one id, e.g. 'NOTE_ON(60)', 'TIME_SHIFT(250ms)', 'VELOCITY(bin 12)'."""
        i = int(token_id)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        if i < NUM_SPECIAL:
            return ("PAD", "BOS", "EOS")[i]
        if i < self.note_off_offset:
            return f"NOTE_ON({i - self.note_on_offset})"
        if i < self.shift_offset:
            return f"NOTE_OFF({i - self.note_off_offset})"
        if i < self.velocity_offset:
            return f"TIME_SHIFT({(i - self.shift_offset + 1) * 1000 / self.steps_per_second:g}ms)"
        return f"VELOCITY(bin {i - self.velocity_offset})"
