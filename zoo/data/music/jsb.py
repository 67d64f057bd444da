"""JSB Chorales on a 16th-note grid (`JSBGridCodec`), from a local JSON file or downloaded once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from zoo.codecs.base import Codec
from zoo.codecs.jsb import JSBGridCodec, grid_array
from zoo.data.download import cache_root, download
from zoo.data.music.base import MusicDataModule

JSB_URL = "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master/Jsb16thSeparated.json"
JSB_SHA256 = "79294cc374f9252e95ef4b703161524c1c53dc1f712c236f00f1c1f5d54af5a7"


class JSBChoralesDataModule(MusicDataModule):
    """JSB Chorales, 16th-note grid (Boulanger-Lewandowski 2012 split), with `JSBGridCodec`.

    Source: `path` (a local copy of the JSON) or `url` + `sha256` (downloaded once into
    `<cache_dir>/downloads`). The JSON maps train/valid/test to lists of pieces, each a list of
    steps of up to 4 pitches (see `grid_array`). Augmentation transposes only (a grid has no tempo
    to stretch); training windows start on whole steps, so `block_size` must be a multiple of 4 and
    target j of every window is voice j mod 4 (S, A, T, B).
    """

    name: ClassVar[str] = "jsb_chorales"
    crop_stride: ClassVar[int] = 4
    codec: JSBGridCodec

    def __init__(self, *, path: str | Path | None = None, url: str = JSB_URL, sha256: str | None = JSB_SHA256,
                 **kwargs: Any) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.url, self.sha256 = url, sha256
        super().__init__(**kwargs)
        if self.block_size % 4:
            raise ValueError(f"{self.name}: block_size must be a multiple of 4 (tokens per step), "
                             f"got {self.block_size}")
        self._loaded: dict[str, tuple[list[str], list[np.ndarray]]] | None = None

    def _make_codec(self, options: Mapping[str, Any] | Codec | None) -> Codec:
        if isinstance(options, JSBGridCodec):
            return options
        if isinstance(options, Codec):
            raise ValueError(f"{self.name} needs a JSBGridCodec (or its options), got {type(options).__name__}")
        return JSBGridCodec(**dict(options or {}))

    def _json_path(self) -> Path:
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.name}: JSON file not found: {self.path}")
            return self.path
        url_key = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        dest = cache_root(self.cache_dir) / "downloads" / f"{url_key}-{Path(self.url).name or 'jsb.json'}"
        return download(self.url, dest, self.sha256)

    def _load_splits(self) -> dict[str, tuple[list[str], list[np.ndarray]]]:
        if self._loaded is None:
            self._loaded = load_jsb_json(self._json_path(), self.codec)
        return self._loaded

    def _encode(self, piece: np.ndarray) -> np.ndarray:
        return self.codec.encode_grid(piece)

    def _augmented_ids(self, index: int, g: torch.Generator) -> np.ndarray:
        grid = self.pieces["train"][index]
        sounding = grid[grid >= 0]
        r, c = self.transpose_range, self.codec
        lo = max(-r, c.min_pitch - int(sounding.min())) if len(sounding) else -r
        hi = min(r, c.max_pitch - int(sounding.max())) if len(sounding) else r
        shift = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return c.encode_grid(np.where(grid >= 0, grid + shift, -1))


def load_jsb_json(path: Path, codec: JSBGridCodec) -> dict[str, tuple[list[str], list[np.ndarray]]]:
    """{split: (names "train/0" ..., grids int64 (steps, 4))}; checks every pitch fits `codec`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSB JSON file ({e})") from e
    keys = {"train": "train", "val": "valid", "test": "test"}
    if not isinstance(data, dict) or not set(keys.values()) <= set(data):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object with keys train, valid, test; found {found}")
    out = {}
    for split, key in keys.items():
        names, grids = [], []
        for i, piece in enumerate(data[key]):
            name = f"{key}/{i}"
            try:
                grid = grid_array(piece)
                codec.encode_grid(grid)  # range check
            except ValueError as e:
                raise ValueError(f"{path}: piece {name}: {e}") from e
            if len(grid):
                names.append(name)
                grids.append(grid)
        out[split] = (names, grids)
    return out
