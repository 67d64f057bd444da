"""Streaming token shards on Lightning's data engine (`litdata`): prepare once, train from chunks.

`prepare_corpus` reads text files, folders or globs, builds (or reuses) a text codec, cuts the
corpus into pieces of about `piece_bytes` at line ends and tokenises the pieces in `num_workers`
processes with `litdata.optimize` into token chunks (`TokensLoader` layout, uint16/uint32):

    OUT/train/   litdata chunks + index.json: the first (1 - val_fraction) of the corpus
    OUT/val/     litdata chunks + index.json: its last val_fraction (at most max_val_bytes)
    OUT/zoo_stream.json   the manifest: codec state (to_dict), token counts, sources with size and sha256

OUT may be a local folder or a URL litdata writes to (s3://, gs://, r2://); the manifest is written
last, so a folder without one is an unfinished preparation. Documents (files) are separated by the
codec's end-of-sequence id, or by a blank line when it has none (as `zoo.data.text` does).

`StreamingTextDataModule` trains from one or several prepared corpora (mixed by `weights`) with
litdata's `StreamingDataset` + `StreamingDataLoader`: windows of `block_size + 1` tokens, shuffled by
chunk and within chunks (seeded), read lazily, so memory stays bounded whatever the corpus size.
Ranks and workers get disjoint chunk intervals (litdata's sharding). The loader is stateful: Lightning
stores its `state_dict` in the checkpoint's loop state and calls `load_state_dict` on resume, so a run
continues mid-epoch with exactly the batches an uninterrupted run would have seen.
"""

from zoo.data.streaming.common import DOC_SEPARATOR, MANIFEST, is_url, litdata, load_manifest, read_json, write_json
from zoo.data.streaming.module import StreamingTextDataModule
from zoo.data.streaming.prepare import find_files, prepare_corpus

__all__ = ["DOC_SEPARATOR", "MANIFEST", "StreamingTextDataModule", "find_files", "is_url", "litdata", "load_manifest",
           "prepare_corpus", "read_json", "write_json"]
