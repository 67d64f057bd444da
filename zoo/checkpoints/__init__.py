"""Checkpoints below training: what `zoo.load`, zoo-sample and zoo-export need to read a `.ckpt`, without
importing Lightning or Hydra (`import zoo; zoo.load(...)` stays as light as torch).

    files.py     safe_load (weights-only torch.load, one CheckpointError per bad file), atomic_torch_save
    reading.py   read_checkpoint / check_metadata (the `ckpt["zoo"]` metadata) and model_from_checkpoint
    lora.py      LoRA adapters through peft: what a fine-tuning run wraps and its checkpoint records

Training uses these through `zoo.training.checkpoint_io` (Lightning's CheckpointIO plugin and the sharded
strategy, which write with `atomic_torch_save` and read with `safe_load`).
"""

from zoo.checkpoints.files import CheckpointError, CheckpointSaveError, atomic_torch_save, safe_load
from zoo.checkpoints.reading import (
    CHECKPOINT_VERSION,
    check_metadata,
    model_from_checkpoint,
    read_checkpoint,
    supported_version,
)

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "CheckpointSaveError", "atomic_torch_save", "check_metadata",
           "model_from_checkpoint", "read_checkpoint", "safe_load", "supported_version"]
