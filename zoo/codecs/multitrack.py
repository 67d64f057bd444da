"""Multitrack MIDI codec: every instrument and the drums in one token stream, via miditok (issue 16).

`PerformanceCodec` reads a MIDI file as one piano-like stream (drums dropped, one program). This codec
wraps a miditok tokenizer (https://miditok.readthedocs.io, on symusic) configured with
`use_programs=True` and `one_token_stream_for_programs=True`: each note is announced by a
`Program_p` token (p 0..127, or -1 for drums), so all tracks interleave in one sequence, e.g. REMI:

    Bar Position_0 Program_0 Pitch_60 Velocity_79 Duration_0.7.8 Program_-1 PitchDrum_36 Velocity_79 ...

Ids 0, 1, 2 are miditok's PAD, BOS and EOS special tokens: zoo's `pad_id`, `bos_id`, `eos_id`
(`encode` returns events only; datamodules frame each piece as BOS + events + EOS).

What a round trip keeps (`decode(encode(m))`), exactly as miditok quantises:
  * time in beats, not seconds: onsets on a grid of 1/8 beat (durations: 1/8 beat up to 4 beats, then
    1/4 beat up to 12), rounded to the nearest grid point;
  * each instrument's General MIDI program and the drum flag (decoded tracks: one per program, drums last
    in miditok's order), pitches inside `PITCH_RANGE` (pitched) or `DRUM_PITCH_RANGE` (drums; notes
    outside are dropped at encoding), velocities in `num_velocities` bins;
  * tempo (`use_tempos`: 32 values 40..250 bpm) and time signatures (`use_time_signatures`); without
    them a piece decodes at 120 bpm in 4/4.
Controls (sustain pedal, pitch bends) are not kept.

`decode` accepts ANY sequence of ids in the vocabulary (e.g. model samples) and returns a valid
PrettyMIDI: special ids are dropped, and tokens that break the grammar are skipped by miditok (a
Pitch without its Velocity/Duration makes no note; a Program token sets the instrument of the notes
that follow). `transpose` moves pitched notes on the ids (drums stay), as an augmentation.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pretty_midi

from zoo.codecs.base import Codec
from zoo.codecs.midi_files import load_midi, midi_from_bytes

TOKENIZATIONS = ("REMI", "TSD", "MIDILike")  # miditok's single-vocabulary tokenizers that take programs
SPECIAL_TOKENS = ("PAD", "BOS", "EOS")  # ids 0, 1, 2, as every zoo codec
PITCH_RANGE = (21, 109)  # miditok's default: the piano's A0..C8 (end exclusive)
DRUM_PITCH_RANGE = (27, 88)
PITCHED_TYPES = ("Pitch", "NoteOn", "NoteOff")  # token types that carry the pitch of a pitched note
INSTALL = 'the multitrack codec needs miditok, which `pip install -e .` does not install: python -m pip install ' \
          '-e ".[music]"'


def _miditok() -> Any:
    try:
        import miditok
    except ImportError as e:
        raise ImportError(INSTALL) from e
    return miditok


class MultitrackCodec(Codec):
    """MIDI (all instruments and drums) <-> one miditok token stream (module docstring).

    Options: `tokenization` (REMI | TSD | MIDILike), `num_velocities` (velocity bins, 1..127),
    `use_tempos` and `use_time_signatures` (tokens for them). `vocab_sha256` pins the vocabulary
    (set by `config()`): a checkpoint rebuilt by a miditok that numbers tokens differently is refused
    instead of decoding to wrong notes.
    """

    type_name: ClassVar[str] = "midi_multitrack"

    def __init__(self, *, tokenization: str = "REMI", num_velocities: int = 32, use_tempos: bool = True,
                 use_time_signatures: bool = True, vocab_sha256: str | None = None) -> None:
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {', '.join(TOKENIZATIONS)}, got {tokenization!r}")
        if not (isinstance(num_velocities, int) and 1 <= num_velocities <= 127):
            raise ValueError(f"num_velocities must be an integer in 1..127, got {num_velocities!r}")
        miditok = _miditok()
        self.tokenization, self.num_velocities = tokenization, num_velocities
        self.use_tempos, self.use_time_signatures = bool(use_tempos), bool(use_time_signatures)
        config = miditok.TokenizerConfig(
            pitch_range=PITCH_RANGE, drums_pitch_range=DRUM_PITCH_RANGE, num_velocities=num_velocities,
            special_tokens=list(SPECIAL_TOKENS), use_programs=True, one_token_stream_for_programs=True,
            use_tempos=self.use_tempos, use_time_signatures=self.use_time_signatures)
        self.tokenizer = getattr(miditok, tokenization)(config)
        self.tokens: list[str] = [self.tokenizer[i] for i in range(len(self.tokenizer))]
        self.vocab_size = len(self.tokens)
        self.pad_id, self.bos_id, self.eos_id = (self.tokenizer.vocab[f"{s}_None"] for s in SPECIAL_TOKENS)
        self.vocab_sha256 = hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()
        if vocab_sha256 is not None and vocab_sha256 != self.vocab_sha256:
            raise ValueError(f"{self.type_name}: miditok {getattr(miditok, '__version__', '?')} builds a different "
                             f"{tokenization} vocabulary (sha256 {self.vocab_sha256[:12]}) than the one this "
                             f"codec was saved with ({vocab_sha256[:12]}); install the miditok that trained it")
        # transposition table: for each shift s, id -> id of the same token s semitones up (pitched notes only)
        kind, _, value = zip(*(t.partition("_") for t in self.tokens))
        self._pitch = np.array([int(v) if k in PITCHED_TYPES else -1 for k, v in zip(kind, value)])
        self._kind = np.array(kind)
        self._shift_tables: dict[int, np.ndarray] = {}

    def config(self) -> dict[str, Any]:
        return {"tokenization": self.tokenization, "num_velocities": self.num_velocities,
                "use_tempos": self.use_tempos, "use_time_signatures": self.use_time_signatures,
                "vocab_sha256": self.vocab_sha256}

    # ------------------------------------------------------------------ MIDI -> ids
    def encode(self, x: pretty_midi.PrettyMIDI | str | Path) -> list[int]:
        """MIDI (object or file path) -> token ids (no BOS/EOS). Notes outside the pitch ranges are dropped."""
        import symusic

        pm = x if isinstance(x, pretty_midi.PrettyMIDI) else load_midi(x, require_notes=False)
        buffer = io.BytesIO()
        pm.write(buffer)
        score = symusic.Score.from_midi(buffer.getvalue())
        if score.note_num() == 0:
            return []
        tokens = self.tokenizer.encode(score)
        return list(tokens.ids)

    def note_count(self, ids: Sequence[int] | np.ndarray) -> int:
        """How many notes (pitched and drums) `ids` start: the tokens naming a pitch at an onset."""
        kinds = self._kind[np.asarray(ids, dtype=np.int64)]
        return int(np.isin(kinds, ("Pitch", "PitchDrum", "NoteOn", "DrumOn")).sum())

    # ------------------------------------------------------------------ ids -> MIDI
    def decode(self, ids: Sequence[int] | np.ndarray) -> pretty_midi.PrettyMIDI:
        """Any ids in the vocabulary -> a valid PrettyMIDI (one instrument per program, drums as is_drum).

        Raises ValueError for ids outside the vocabulary; special ids are ignored.
        """
        import symusic

        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside the {self.type_name} vocabulary "
                             f"(ids 0..{self.vocab_size - 1})")
        events = [i for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id)]
        score = self.tokenizer.decode(events) if events else symusic.Score(self.tokenizer.time_division)
        if len(score.tracks) == 0:
            # symusic 0.6 writes tempo and time-signature changes out of order into a file without tracks
            score.tracks.append(symusic.Track(program=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return midi_from_bytes(score.dumps_midi())

    # ------------------------------------------------------------------ augmentation on ids
    def pitch_bounds(self, ids: Sequence[int] | np.ndarray) -> tuple[int, int] | None:
        """(lowest, highest) pitch of the pitched notes in `ids` (drums excluded); None without any."""
        pitches = self._pitch[np.asarray(ids, dtype=np.int64)]
        pitches = pitches[pitches >= 0]
        return (int(pitches.min()), int(pitches.max())) if len(pitches) else None

    def transpose(self, ids: Sequence[int] | np.ndarray, semitones: int) -> np.ndarray:
        """Shift every pitched note by `semitones`; drums and all other tokens stay.

        Equals encoding the transposed MIDI when every pitched note stays inside `PITCH_RANGE` (the
        order of tokens at one time follows pitch, which a common shift keeps); raises ValueError
        otherwise (draw shifts within `pitch_bounds`).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if semitones == 0:
            return ids.copy()
        bounds = self.pitch_bounds(ids)
        if bounds is None:
            return ids.copy()
        lo, hi = bounds
        if lo + semitones < PITCH_RANGE[0] or hi + semitones >= PITCH_RANGE[1]:
            raise ValueError(f"transposing by {semitones} moves pitches {lo}..{hi} outside the codec's range "
                             f"{PITCH_RANGE[0]}..{PITCH_RANGE[1] - 1}")
        return self._shift_table(semitones)[ids]

    def _shift_table(self, semitones: int) -> np.ndarray:
        """id -> id of the same token `semitones` higher for pitched-note tokens (-1 off range); others fixed."""
        if semitones not in self._shift_tables:
            index = {(k, int(p)): i for i, (k, p) in enumerate(zip(self._kind, self._pitch)) if p >= 0}
            table = np.arange(self.vocab_size)
            for (k, p), i in index.items():
                table[i] = index.get((k, p + semitones), -1)
            self._shift_tables[semitones] = table
        return self._shift_tables[semitones]

    def describe(self, token_id: int) -> str:
        """miditok's name of one id, e.g. 'Program_-1', 'Pitch_60', 'Position_4', 'BOS_None'."""
        i = int(token_id)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.tokens[i]
