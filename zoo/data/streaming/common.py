"""What `zoo-prepare` and `data=streaming` share: the manifest, its codec, local or cloud paths."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo.codecs.base import codec_from_dict
from zoo.codecs.text import TextCodec, TextCodecKind
from zoo.data.download import need

log = logging.getLogger(__name__)

MANIFEST = "zoo_stream.json"
FORMAT = 1  # bump when the chunk layout or the manifest changes
DOC_SEPARATOR = "\n\n"
DEFAULT_PATTERNS = ("*.txt", "*.md", "*.rst", "*.py")
URL_SCHEMES = ("s3://", "gs://", "r2://")
CodecKind = TextCodecKind  # zoo.codecs.text.TEXT_CODECS's names
Batch = dict[str, torch.Tensor]


class CorruptChunkError(ValueError):
    """A prepared chunk does not match the size or sha256 `zoo-prepare` recorded (zoo.data.streaming.verify)."""


def litdata() -> Any:
    """The `litdata` package, or MissingExtra naming the extra that installs it."""
    return need("litdata", "streaming", "zoo-prepare / data=streaming")


def is_url(path: str) -> bool:
    return str(path).startswith(URL_SCHEMES)


def _token_count(folder: str) -> int:
    index = read_json(f"{folder}/index.json")
    return int(sum(c["dim"] for c in index["chunks"]))


def read_json(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """A JSON file from a local path or a URL litdata can read."""
    if is_url(path):
        litdata()
        from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own uploader/downloader

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            _get_fs_provider(path, storage_options).download_file(path, local)
            return json.loads(Path(local).read_text())
    return json.loads(Path(path).read_text())


def write_json(path: str, value: dict[str, Any], storage_options: dict | None = None) -> None:
    text = json.dumps(value, indent=2)
    if is_url(path):
        litdata()
        from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own uploader/downloader

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            Path(local).write_text(text)
            _get_fs_provider(path, storage_options).upload_file(local, path)
        return
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: the manifest is whole or absent



def load_manifest(path: str, storage_options: dict | None = None) -> tuple[dict[str, Any], TextCodec]:
    """(manifest, codec) of a prepared folder or URL; a clear error for anything else."""
    path = str(path).rstrip("/")
    where = f"{path}/{MANIFEST}"
    if not is_url(path):
        if not Path(path).exists():
            raise FileNotFoundError(f"prepared data {path!r} does not exist; make it with "
                                    f"`zoo-prepare inputs=TEXT_FILES out={path}`")
        if not Path(where).is_file():
            raise FileNotFoundError(f"{path!r} holds no {MANIFEST}: not a folder written by zoo-prepare (or its "
                                    "preparation did not finish); rerun zoo-prepare")
    manifest = read_json(where, storage_options)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: format {manifest.get('format')!r}, this zoo reads format {FORMAT}; "
                         "rerun zoo-prepare")
    codec = codec_from_dict(manifest["codec"], source=where)
    assert isinstance(codec, TextCodec)
    return manifest, codec


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def chunk_sums(folder: str) -> dict[str, dict[str, Any]]:
    """{chunk file name: {"bytes", "sha256"}} of a local split folder written by litdata.optimize."""
    index = json.loads(Path(folder, "index.json").read_text())
    return {c["filename"]: {"bytes": os.path.getsize(Path(folder, c["filename"])),
                            "sha256": file_sha256(Path(folder, c["filename"]))} for c in index["chunks"]}
