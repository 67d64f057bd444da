"""Chunk checksums: `zoo-prepare` records each chunk's size and sha256 in the manifest; training checks a chunk
the first time it reads from it, so a truncated or altered chunk is an error naming the file, never a batch of
wrong tokens (litdata memory-maps chunks and checks neither; a truncated local chunk made it wait forever
for the missing bytes, as for a download in progress).

Local folders only: for a URL litdata downloads chunks to its cache while reading, and the manifest of a
corpus prepared straight to a URL has no checksums (computing them would mean downloading it all).
"""

from __future__ import annotations

import os
from typing import Any

from litdata import TokensLoader

from zoo.data.streaming.common import CorruptChunkError, file_sha256


def check_chunk(path: str, expected: dict[str, Any] | None) -> None:
    """Raise CorruptChunkError unless the file at `path` has the recorded size and sha256."""
    if expected is None:
        raise CorruptChunkError(f"streaming chunk {path} is not in the manifest's checksums; prepare the data again "
                                "with zoo-prepare")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CorruptChunkError(f"streaming chunk {path} cannot be read ({e.strerror}); prepare the data again "
                                "with zoo-prepare") from None
    if size != expected["bytes"]:
        raise CorruptChunkError(f"streaming chunk {path} is truncated or extended: {size} bytes, zoo-prepare wrote "
                                f"{expected['bytes']}; prepare the data again with zoo-prepare")
    if file_sha256(path) != expected["sha256"]:
        raise CorruptChunkError(f"streaming chunk {path} was altered: its sha256 differs from the one zoo-prepare "
                                "recorded; prepare the data again with zoo-prepare")


class VerifiedTokensLoader(TokensLoader):
    """litdata's TokensLoader that checks each chunk file once (per process) before its first item is read."""

    def __init__(self, block_size: int, sums: dict[str, dict[str, Any]]) -> None:
        super().__init__(block_size=block_size)
        self.sums = sums
        self.verified: set[str] = set()

    def load_item_from_chunk(self, index: int, chunk_index: int, chunk_filepath: str, begin: int,
                             filesize_bytes: int) -> Any:
        if chunk_filepath not in self.verified:
            check_chunk(chunk_filepath, self.sums.get(os.path.basename(chunk_filepath)))
            self.verified.add(chunk_filepath)
        return super().load_item_from_chunk(index, chunk_index, chunk_filepath, begin, filesize_bytes)


# litdata checks that the loader's class name is the one the chunks were written with ("TokensLoader");
# pickling (DataLoader workers) finds the class by its __qualname__, which stays VerifiedTokensLoader
VerifiedTokensLoader.__name__ = "TokensLoader"
