"""The codec contract: every model declares one; every codec round-trips exactly.

A codec turns a domain object (text, MIDI, image) into token ids and back. It saves itself into a
folder as `codec.json` (type + parameters) plus any extra files, so that a checkpoint or an
exported model carries everything needed to decode its samples, with no absolute paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

CODEC_FILE = "codec.json"
_REGISTRY: dict[str, type[Codec]] = {}


class Codec:
    """Base class. Subclasses set `type_name`, implement encode/decode/config and may add files."""

    type_name: ClassVar[str] = ""
    vocab_size: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            _REGISTRY[cls.type_name] = cls

    def encode(self, x: Any) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> Any:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (no paths)."""
        return {}

    def save_files(self, directory: Path) -> None:
        """Write extra files (e.g. a tokenizer) next to codec.json."""

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path) -> Codec:
        return cls(**config)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CODEC_FILE).write_text(json.dumps({"type": self.type_name, **self.config()}, indent=2))
        self.save_files(directory)
        return directory


def load_codec(directory: str | Path) -> Codec:
    """Rebuild the codec saved in `directory` by `Codec.save`."""
    directory = Path(directory)
    path = directory / CODEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CODEC_FILE} in {directory}; expected a folder written by Codec.save()")
    config = json.loads(path.read_text())
    type_name = config.pop("type", None)
    if type_name not in _REGISTRY:
        _import_all()
    if type_name not in _REGISTRY:
        raise ValueError(f"{path}: unknown codec type {type_name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[type_name].from_config(config, directory)


def _import_all() -> None:
    """Import the codec modules so their classes register (they may need optional extras)."""
    import importlib

    for mod in ("text", "midi", "image"):
        try:
            importlib.import_module(f"zoo.codecs.{mod}")
        except ImportError:
            pass
