"""The codec choice of the MIDI-file datamodules (`midi_folder`, `maestro`) and what the multitrack one
needs from them.

`codec` is a dict whose `type` names the codec, `performance` (the default, also when `type` is absent:
older configs and checkpoints) or `multitrack`; the other keys are that codec's options. A ready codec
object (e.g. a checkpoint's, with `init_from=`) or the bare name (`data.codec=multitrack`) also works.

Multitrack pieces are token-id arrays, int64 (E,), converted once per file by `MultitrackCodec.encode`
and cached like note arrays; training augmentation transposes the pitched notes on the ids (drums stay)
by a shift drawn from ±transpose_range among those that keep every pitched note in the codec's range.
There is no time stretch: a multitrack piece is timed in beats, and the tempo is a token of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.codecs.base import Codec
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import MidiError, load_midi
from zoo.data.download import need

CODEC_TYPES = ("performance", "multitrack")


def make_midi_codec(options: Mapping[str, Any] | Codec | str | None, name: str) -> Codec:
    """The codec `options` describe (module docstring); errors name the keys and the accepted values."""
    if isinstance(options, PerformanceCodec):
        return options
    if isinstance(options, Codec):
        if not isinstance(options, _multitrack_class(name)):
            raise ValueError(f"{name} needs a PerformanceCodec or a MultitrackCodec (or their options), got "
                             f"{type(options).__name__} ({options.type_name!r})")
        return options
    options = {"type": options} if isinstance(options, str) else dict(options or {})
    kind = options.pop("type", "performance")
    if kind not in CODEC_TYPES:
        raise ValueError(f"codec.type must be one of {', '.join(CODEC_TYPES)}, got {kind!r}")
    cls = PerformanceCodec if kind == "performance" else _multitrack_class(name)
    accepted = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not options of the {kind} codec (accepted: {', '.join(accepted)}). "
                         f"Choose a codec with its options as a group: data/codec={kind}")
    return cls(**options)


def _multitrack_class(name: str) -> type[Codec]:
    need("miditok", "music", f"{name} with the multitrack codec (data/codec=multitrack)")
    from zoo.codecs.multitrack import MultitrackCodec

    return MultitrackCodec


def multitrack_piece(codec: Any, path: Path) -> np.ndarray:
    """One MIDI file -> its token ids, int64 (E,); MidiError when unreadable or without notes the codec keeps."""
    ids = np.asarray(codec.encode(load_midi(path)), dtype=np.int64)
    if codec.note_count(ids) == 0:
        raise MidiError("no notes inside the codec's pitch ranges")
    return ids


def transposed(codec: Any, ids: np.ndarray, transpose_range: int, g: torch.Generator) -> np.ndarray:
    """`ids` with the pitched notes shifted by a whole number of semitones drawn from `g` (module doc)."""
    from zoo.codecs.multitrack import PITCH_RANGE

    bounds = codec.pitch_bounds(ids)
    lo, hi = (-transpose_range, transpose_range) if bounds is None else (
        max(-transpose_range, PITCH_RANGE[0] - bounds[0]), min(transpose_range, PITCH_RANGE[1] - 1 - bounds[1]))
    shift = int(torch.randint(lo, hi + 1, (1,), generator=g))
    return codec.transpose(ids, shift)
