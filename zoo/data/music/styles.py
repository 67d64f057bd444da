"""Style-labelled music from music21's corpus (the `music` extra): each piece carries the id of its
collection (Bach chorales, Palestrina, Monteverdi madrigals, string quartets, German folk songs, Irish
dance tunes), served as `cond` beside the performance events, for the style-conditioned Music
Transformer (`model.num_classes`, classifier-free guidance at sampling time).

Scores are converted with music21 to MIDI and then to the codec's note arrays once, and cached like
any MIDI folder's (`PerformanceDataModule`). A collection may be a list of single-score files or of
"opus" files holding many tunes (the .abc song books): an opus tune is named `<file>#<k>`.

Which pieces: each style takes at most `max_pieces` (per style, split evenly between its sources)
from the files of its sources in a fixed order (single scores by the sha256 of their name, so the
choice is spread over the collection rather than its alphabetical start; opus files in the order
listed). Conversion cost varies 100-fold (a folk tune ~0.2 s, a Beethoven quartet movement ~40 s),
hence the small default for quartets (12 movements, still ~150k events).

Training windows draw each style equally often (`balance=True`; within a style, pieces in
proportion to their length), so a style with few long pieces is not drowned by one with many.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from zoo.codecs.base import Codec
from zoo.codecs.midi import PerformanceCodec
from zoo.data.download import need
from zoo.data.music.bach import stream_to_notes
from zoo.data.music.performance import PerformanceDataModule

# style -> music21 corpus sources: (composer key, file names to use in order, or None = every score file)
STYLE_SOURCES: dict[str, list[tuple[str, list[str] | None]]] = {
    "bach": [("bach", None)],
    "palestrina": [("palestrina", None)],
    "monteverdi": [("monteverdi", None)],
    "quartets": [("beethoven", None), ("mozart", None), ("haydn", None)],
    "folk": [("essenFolksong", ["altdeu10.abc", "kinder0.abc", "ballad10.abc", "erk10.abc", "boehme10.abc"])],
    "irish": [("oneills1850", ["0001-0050.abc", "0101-0200.abc", "0301-0350.abc"]), ("ryansMammoth", None)],
}
DEFAULT_MAX_PIECES: dict[str, int] = {"quartets": 12}  # the rest: `max_pieces`
_SCORE_SUFFIXES = (".mxl", ".krn", ".xml", ".abc")  # not .rntxt (harmonic analyses)


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _parsed(path: str) -> Any:
    """music21's parse of one file (kept while its tunes are converted one after the other)."""
    from music21 import converter

    return converter.parse(path)


class StyleCorpusDataModule(PerformanceDataModule):
    """music21 collections as styles: batches hold `idx`, `targets` and `cond` (B,) style ids.

    `styles`: the styles to use, in class-id order (names from `STYLE_SOURCES`); `max_pieces`: the cap
    per style (`DEFAULT_MAX_PIECES` overrides it for expensive styles unless `max_pieces_by_style` says
    otherwise). The codec's `styles` option is set from `styles`, so the checkpoint knows the names.
    """

    name: ClassVar[str] = "music21_styles"

    def __init__(self, *, styles: Sequence[str] = tuple(STYLE_SOURCES), max_pieces: int = 120,
                 max_pieces_by_style: Mapping[str, int] | None = None, balance: bool = True,
                 codec: Mapping[str, Any] | Codec | None = None, **kwargs: Any) -> None:
        styles = [str(s) for s in styles]
        unknown = [s for s in styles if s not in STYLE_SOURCES]
        if unknown or not styles or len(set(styles)) != len(styles):
            raise ValueError(f"styles must be distinct names from {list(STYLE_SOURCES)}, got {styles}"
                             + (f" (unknown: {unknown})" if unknown else ""))
        caps = {s: DEFAULT_MAX_PIECES.get(s, max_pieces) for s in styles} | dict(max_pieces_by_style or {})
        bad = {s: n for s, n in caps.items() if s not in styles or not isinstance(n, int) or n < 1}
        if bad or max_pieces < 1:
            raise ValueError(f"max_pieces / max_pieces_by_style must be >= 1 for styles in {styles}, got "
                             f"{bad or max_pieces}")
        self.styles, self.caps, self.balance = styles, caps, bool(balance)
        options = codec.config() if isinstance(codec, PerformanceCodec) else dict(codec or {})
        if options.get("styles") not in (None, styles):
            raise ValueError(f"codec.styles={options['styles']} disagrees with data.styles={styles}; leave "
                             "codec.styles unset (it is taken from data.styles)")
        super().__init__(codec={**options, "styles": styles}, **kwargs)
        self.labels: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ files
    def _files(self) -> list[tuple[str, Path, str]]:
        corpus = need("music21.corpus", "music", "data=music21_styles (music21's corpus)")
        out = []
        for style in self.styles:
            sources = STYLE_SOURCES[style]
            for i, (composer, names) in enumerate(sources):
                cap = self.caps[style] // len(sources) + (i < self.caps[style] % len(sources))
                found = {Path(p).name: Path(p) for p in corpus.getComposer(composer)
                         if Path(p).suffix in _SCORE_SUFFIXES}
                if names is None:  # single scores, spread over the collection
                    picked = sorted(found, key=lambda n: _sha(f"{composer}/{n}"))[:cap]
                    out += [(f"{style}/{composer}/{n}", found[n], "") for n in sorted(picked)]
                else:  # song books (opus files) in the order listed, tune by tune
                    out += self._opus_entries(style, composer, [found[n] for n in names if n in found], cap)
        return out[:self.max_files]  # max_files (quick runs): the first entries, in style order

    def _opus_entries(self, style: str, composer: str, paths: list[Path], cap: int) -> list[tuple[str, Path, str]]:
        """`<file>#<k>` entries for the first `cap` tunes of these song books."""
        out: list[tuple[str, Path, str]] = []
        for path in paths:
            if len(out) >= cap:
                break
            n = _opus_size(path)
            out += [(f"{style}/{composer}/{path.name}#{k}", path, "") for k in range(min(n, cap - len(out)))]
        return out

    def _convert_entry(self, name: str, path: Path) -> np.ndarray:
        parsed = _parsed(str(path))
        if "#" in name:
            k = int(name.rsplit("#", 1)[1])
            scores = list(parsed.scores) if hasattr(parsed, "scores") else [parsed]
            return stream_to_notes(scores[k], self.codec)
        return stream_to_notes(parsed, self.codec)

    def _cache_extra(self) -> dict[str, Any]:
        import music21

        return {"music21": music21.__version__}

    def _source(self) -> str:
        return f"music21's corpus ({', '.join(self.styles)})"

    # ------------------------------------------------------------------ labels and batches
    def setup(self, stage: str | None = None) -> None:
        if self.labels:
            return
        super().setup(stage)
        index = {s: i for i, s in enumerate(self.styles)}
        self.labels = {split: [index[n.split("/", 1)[0]] for n in self.names[split]] for split in self.names}
        missing = [s for s in self.styles if index[s] not in self.labels["train"]]
        if missing:
            raise ValueError(f"{self.name}: no training pieces for style(s) {missing}; raise max_pieces or drop them")
        if self.balance:  # each style equally likely; pieces within a style by length
            labels = torch.tensor(self.labels["train"])
            totals = torch.zeros(len(self.styles), dtype=torch.float64).index_add_(0, labels, self._train_weights)
            self._train_weights = self._train_weights / totals[labels]

    def _cond(self, split: str, index: int) -> int:
        """The piece's style id: the base class serves it as `cond` in training batches and evaluation windows."""
        return self.labels[split][index]


def _opus_size(path: Path) -> int:
    """Number of tunes in an .abc song book (its `X:` reference lines), without parsing the music."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if line.startswith("X:")) or 1
