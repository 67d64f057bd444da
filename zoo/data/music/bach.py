"""The Bach chorales in music21's corpus (the `music` extra), converted to MIDI by music21 and then
read as performance events; the conversion is cached like any MIDI folder's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import midi_from_bytes
from zoo.data.download import need
from zoo.data.music.performance import PerformanceDataModule

_BACH_SUFFIXES = (".mxl", ".krn", ".xml")  # the chorales; the corpus's .rntxt files are harmonic analyses


def bach_chorale_files() -> list[Path]:
    """The Bach chorale scores bundled with music21 (.mxl, .krn, .xml), sorted by file name."""
    corpus = need("music21.corpus", "music", "data=bach_chorales (the chorales in music21's corpus)")
    return sorted((Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in _BACH_SUFFIXES),
                  key=lambda p: p.name)


def score_to_notes(path: Path, codec: PerformanceCodec) -> np.ndarray:
    """music21 score file -> MIDI bytes (repeats expanded, music21's tempo) -> the codec's note array."""
    from music21 import converter

    return stream_to_notes(converter.parse(path), codec)


def stream_to_notes(score: Any, codec: PerformanceCodec) -> np.ndarray:
    """A parsed music21 score -> MIDI bytes -> the codec's note array."""
    from music21.midi import translate

    return codec.extract_notes(midi_from_bytes(translate.streamToMidiFile(score).writestr()))


class BachChoralesDataModule(PerformanceDataModule):
    """The Bach chorales in music21's corpus (~400 scores): embedded, no download.

    Converted once with music21 (about 0.2 s a file) and cached; `max_files` keeps the first files
    by name (for quick tests). Files music21 cannot convert (e.g. badly formed repeats) are skipped.
    """

    name: ClassVar[str] = "bach_chorales"

    def _files(self) -> list[tuple[str, Path, str]]:
        files = bach_chorale_files()[:self.max_files]
        return [(p.name, p, "") for p in files]

    def _convert(self, path: Path) -> np.ndarray:
        return score_to_notes(path, self.codec)

    def _cache_extra(self) -> dict[str, Any]:
        import music21

        return {"music21": music21.__version__}

    def _source(self) -> str:
        return "music21's Bach corpus"
