"""Pretrained zoo models: the registry (`registry.py`), loading any source (`loading.py`: `load`, which
asks `sources.py` for an entry's verified folder and `build.py` for the model; `pretrained.py`: the
`Pretrained` it returns), Hugging Face GPT-2 import (`gpt2.py`) and export (`export.py`, imported on its own:
it pulls in the training builders). The shipped checkpoints are the folders beside these modules.
Nothing here but export.py imports Lightning or zoo.training (tests/test_light_load.py).

`zoo.load` and `zoo.list_models` are `load` and `list_models` here; `help(zoo.load)` is the guide.
"""

from zoo.hub.gpt2 import load_gpt2
from zoo.hub.loading import Pretrained, generation_defaults, load, load_any, load_checkpoint, load_export, resolve_entry
from zoo.hub.registry import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    GENERATION_FILE,
    HUB_DIR,
    REGISTRY,
    WEIGHTS_FILE,
    Entry,
    HubError,
    describe_models,
    list_models,
)

__all__ = [
    "CONFIG_FILE", "EXPORT_FORMAT", "GENERATION_FILE", "HUB_DIR", "REGISTRY", "WEIGHTS_FILE", "Entry", "HubError",
    "Pretrained", "describe_models", "generation_defaults", "list_models", "load", "load_any", "load_checkpoint",
    "load_export", "load_gpt2", "resolve_entry",
]
