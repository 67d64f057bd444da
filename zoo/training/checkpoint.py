"""Checkpoint reading as training and its tests name it: `zoo.checkpoints.reading` (below training, no
Lightning), re-exported."""

from zoo.checkpoints.files import CheckpointError
from zoo.checkpoints.reading import (
    CHECKPOINT_VERSION,
    check_metadata,
    model_from_checkpoint,
    read_checkpoint,
    supported_version,
)

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "check_metadata", "model_from_checkpoint", "read_checkpoint",
           "supported_version"]
