"""Music datamodules: Bach chorales (embedded default), JSB Chorales grid, MAESTRO, any MIDI folder,
style-labelled music21 collections (`styles`: batches also carry `cond`, the style id).

One module per family: `performance` (MIDI folders, MAESTRO), `bach` (music21's corpus), `jsb` (the
grid); `base` holds what they share (`MusicDataModule`); `multitrack` the codec choice of the MIDI-file
modules. Every public name is re-exported here, so
`zoo.data.music.X` (the `_target_` of older configs and checkpoints) keeps naming the same class.

Every module serves the same batches (`zoo.data.base`): `idx` and `targets`, (batch_size,
block_size) int64, targets = the next token, -100 where the piece ran out (a piece shorter than the
block, or a window at its end; `idx` there holds the codec's PAD id). Each piece is one sequence
BOS + events + EOS. `codec` takes the codec's options (a dict) or a ready codec of the right type.

`midi_folder` and `maestro` take either MIDI codec, chosen by the `type` key of `codec` (in Hydra the
group `data/codec=performance|multitrack`, conf/data/codec/): `performance` (the default, also when
`type` is absent, as in older configs and checkpoints: `PerformanceCodec`, one piano-like stream, drums
dropped) or `multitrack` (`zoo.codecs.multitrack.MultitrackCodec`, a miditok tokenizer from the
`[music]` extra, `tokenization` REMI | TSD | MIDILike: every instrument and the drums in one stream,
time in beats). Everything below holds for both, except where a rule names the performance codec.

Training batches come from one resumable `BatchStream`: a piece is drawn with probability
proportional to its length, then a random window of block_size + 1 tokens. With `augment=True` the
piece is first transposed by a whole number of semitones drawn from ±`transpose_range` (only shifts
that keep every note inside the codec's range are drawn, so no note is ever lost) and, for
performance-event data, time-stretched by a factor drawn uniformly from `stretch_range`, both
applied to the note list before encoding. Multitrack pieces are transposed on their token ids,
pitched notes only (drums never move), and not stretched (their time is in beats). All randomness
comes from the stream's generator: batch b is a pure function of (seed, b). Validation and test
never augment: every piece is cut into consecutive windows (stride block_size, the last one padded),
so each token after BOS is predicted exactly once and the loss is a deterministic per-token NLL.
`max_val_windows` (for quick runs) caps the validation and test loaders at their first windows in
that order; None = all.

Splits: `maestro` and `jsb_chorales` keep their official splits; `bach_chorales` and `midi_folder`
split by file: the files sorted by the sha256 of their name (path relative to the folder), the first
round(val_fraction·n) to val, the next round(test_fraction·n) to test (each at least one file when
its fraction is > 0 and enough files exist; train always keeps one), the rest to train. The split
depends only on the set of names, never on `seed`.

Notes extracted from MIDI (bach_chorales, midi_folder, maestro; token ids for the multitrack codec)
are cached once in `<cache_dir>/music/<name>-<key>.npz` (numpy arrays only, loaded without pickle),
keyed by the file list (with sizes and modification times) and the codec's options, so later runs
skip parsing.
Unreadable files (not MIDI, truncated, corrupt, no notes) are skipped with a warning naming each, a
summary count, and `skipped_files` when `on_error="skip"` (the default: a MIDI collection scraped
from the web nearly always holds a few broken files, and one should not cost a day of training), or
stop the run with a `MidiError` naming the first such file when `on_error="raise"` (for curated data,
where a broken file is a bug to fix).
"""

from __future__ import annotations

from collections.abc import Callable

from zoo.data.music.bach import BachChoralesDataModule, bach_chorale_files, score_to_notes
from zoo.data.music.base import SPLITS, MusicDataModule, split_by_name
from zoo.data.music.jsb import JSB_SHA256, JSB_URL, JSBChoralesDataModule, load_jsb_json
from zoo.data.music.performance import MaestroDataModule, MidiFolderDataModule, PerformanceDataModule
from zoo.data.music.styles import STYLE_SOURCES, StyleCorpusDataModule

__all__ = [
    "BachChoralesDataModule", "JSBChoralesDataModule", "JSB_SHA256", "JSB_URL", "MUSIC_DATAMODULES",
    "MaestroDataModule", "MidiFolderDataModule", "MusicDataModule", "PerformanceDataModule", "SPLITS",
    "STYLE_SOURCES", "StyleCorpusDataModule",
    "bach_chorale_files", "load_jsb_json", "score_to_notes", "split_by_name",
]

MUSIC_DATAMODULES: dict[str, Callable[..., MusicDataModule]] = {
    "bach_chorales": BachChoralesDataModule,
    "jsb_chorales": JSBChoralesDataModule,
    "maestro": MaestroDataModule,
    "midi_folder": MidiFolderDataModule,
    "music21_styles": StyleCorpusDataModule,
}
