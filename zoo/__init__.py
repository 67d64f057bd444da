"""zoo: a PyTorch Lightning model zoo of generative transformers.

    import zoo
    zoo.list_models()
    m = zoo.load("gpt-pydoc"); print(m.generate("The with statement", max_new_tokens=80))

`load` and `list_models` live in `zoo.hub`, imported on first use so that `import zoo` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["list_models", "load"]


def load(name_or_path: Any, device: Any = "cpu", dtype: Any = None, path: Any = None) -> Any:
    """`zoo.hub.load`: a pretrained model by name, exported folder, `.ckpt` path or GPT-2 folder."""
    from zoo.hub import load as _load

    return _load(name_or_path, device=device, dtype=dtype, path=path)


def list_models() -> list[str]:
    """`zoo.hub.list_models`: the names `zoo.load` accepts."""
    from zoo.hub import list_models as _list_models

    return _list_models()
