"""The codec contract: every model declares one; every codec round-trips exactly.

A codec turns a domain object (text, MIDI, image) into token ids and back. Its whole state is a
JSON-serialisable dict (`to_dict`, e.g. a BPE tokenizer's JSON as a string), so that a Lightning
checkpoint (`ckpt["codec"]`) and an exported folder (`codec.json`, plus optional human-readable
extra files) carry everything needed to decode samples, with no absolute paths.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

CODEC_FILE = "codec.json"
IGNORE_INDEX = -100  # a target position the loss skips (F.cross_entropy's ignore_index)
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
        """JSON-serialisable constructor arguments; the complete state of the codec (no paths)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, **self.config()}

    def save_files(self, directory: Path) -> None:
        """Write extra files (e.g. a tokenizer) next to codec.json."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        return cls(**config)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CODEC_FILE).write_text(json.dumps(self.to_dict(), indent=2))
        self.save_files(directory)
        return directory


def load_codec(directory: str | Path) -> Codec:
    """Rebuild the codec saved in `directory` by `Codec.save`."""
    directory = Path(directory)
    path = directory / CODEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CODEC_FILE} in {directory}; expected a folder written by Codec.save()")
    return codec_from_dict(json.loads(path.read_text()), source=str(path))


def codec_from_dict(state: dict[str, Any], source: str = "codec state") -> Codec:
    """Rebuild a codec from `Codec.to_dict()` output."""
    config = dict(state)
    type_name = config.pop("type", None)
    missing = _import_all() if type_name not in _REGISTRY else []
    if type_name not in _REGISTRY:
        hint = f" (could not import: {'; '.join(missing)})" if missing else ""
        raise ValueError(f"{source}: unknown codec type {type_name!r}; known: {sorted(_REGISTRY)}{hint}")
    return _REGISTRY[type_name].from_config(config)


def _import_all() -> list[str]:
    """Import the codec modules so their classes register; return the import errors (missing extras)."""
    errors = []
    for mod in ("text", "midi", "multitrack", "jsb", "image", "text_image", "clusters"):
        try:
            importlib.import_module(f"zoo.codecs.{mod}")
        except ImportError as e:
            errors.append(f"zoo.codecs.{mod}: {e}")
    return errors
