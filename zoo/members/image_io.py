"""Image grids for samples: an (H', W'[, 3]) uint8 array for loggers, a PNG file for people."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEFAULT_CELL_PIXELS = 64  # auto upscale: each image is shown at least this many pixels on its long side


def image_grid(
    images: Tensor | np.ndarray,
    nrow: int = 8,
    *,
    padding: int = 1,
    pad_value: float = 0.5,
    upscale: int = 1,
) -> np.ndarray:
    """Tile images (B, C, H, W) into a grid with `nrow` images per row (as torchvision's make_grid).

    `images`: float in [0, 1] (clipped) or uint8, C = 1 or 3. Each image is enlarged `upscale`×
    by nearest-neighbour (pixels stay sharp) before tiling; `padding` pixels of grey `pad_value`
    separate the cells and frame the grid. Returns uint8 of shape
    (rows·(H·upscale + padding) + padding, nrow·(W·upscale + padding) + padding) for C = 1, with a
    trailing 3 for C = 3, where rows = ceil(B / nrow).
    """
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(
            f"image_grid expects a non-empty (B, C, H, W) batch with C in (1, 3), got {tuple(x.shape)}"
        )
    if nrow < 1 or upscale < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1, upscale >= 1, padding >= 0; got {nrow}, {upscale}, {padding}")
    if x.dtype == torch.uint8:
        pixels = x
    elif torch.is_floating_point(x):
        if not torch.isfinite(x).all():
            raise ValueError("image_grid: images contain NaN or infinite values")
        pixels = torch.round(x.float().clamp(0, 1) * 255).to(torch.uint8)
    else:
        raise TypeError(f"image_grid expects float images in [0, 1] or uint8, got dtype {x.dtype}")
    if upscale > 1:
        pixels = pixels.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)

    b, c, h, w = pixels.shape
    ncol = min(nrow, b)
    rows = math.ceil(b / nrow)
    pad = round(min(max(pad_value, 0.0), 1.0) * 255)
    grid = torch.full(
        (c, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad, dtype=torch.uint8
    )
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = pixels[i]
    out = grid.permute(1, 2, 0).numpy()  # (H', W', C)
    return out[..., 0] if c == 1 else out


def auto_upscale(height: int, width: int, cell_pixels: int = DEFAULT_CELL_PIXELS) -> int:
    """Smallest integer factor that shows an image at least `cell_pixels` on its long side."""
    return max(1, math.ceil(cell_pixels / max(height, width)))


def save_grid_png(
    images: Tensor | np.ndarray,
    path: str | Path,
    nrow: int = 8,
    *,
    upscale: int | None = None,
    padding: int = 1,
    pad_value: float = 0.5,
) -> Path:
    """Write `image_grid(images, nrow, ...)` as a PNG (mode L or RGB); returns the path.

    `upscale=None` picks `auto_upscale` so that e.g. 8×8 digits become 64×64 cells.
    """
    from PIL import Image  # optional dependency (zoo[image])

    x = torch.as_tensor(images)
    if upscale is None:
        upscale = auto_upscale(x.shape[-2], x.shape[-1]) if x.ndim == 4 else 1
    grid = image_grid(x, nrow, padding=padding, pad_value=pad_value, upscale=upscale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")  # 2-D uint8 -> L, (H, W, 3) -> RGB
    return path
