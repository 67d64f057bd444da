"""Colour-cluster image codec: every pixel is the id of its nearest colour in a fixed palette (OpenAI's ImageGPT).

Chen et al. 2020 ("Generative Pretraining from Pixels", §3.1) cluster (R, G, B) pixel values with k-means
(k = 512) and model an image as the H·W cluster ids in raster order (left to right, top to bottom): one token
per pixel, not one per channel. The palette is the `clusters` list of the Hugging Face repo's
`preprocessor_config.json`: (k, 3) colours on the [-1, 1] scale (8-bit v ↦ v / 127.5 − 1).

    image (3, H, W) --nearest cluster (squared Euclidean distance on the [-1, 1] scale)--> ids (H·W,)
    ids --cluster colour--> (3, H, W) float image in [0, 1] ((c + 1) / 2)

Decoding then encoding is the identity on ids for a palette whose colours are distinct (each cluster colour is
its own nearest cluster); encoding is lossy for other colours (a photo becomes its nearest palette colours).
The vocabulary is the k cluster ids; the start-of-image token is the model's (zoo.models.gpt `start_token`).

The attributes the image member and sampling read (height, width, channels, patch_size = 1, tokens_per_image,
num_classes = 0, prefix_length, decode_batch ...) have the meaning they have on `ImagePatchCodec`, so the image
member samples, completes and saves both alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.codecs.base import Codec


class ColourClusterCodec(Codec):
    """Images of height × width RGB pixels <-> H·W cluster ids (layout in the module docstring).

    clusters: (k, 3) colours in [-1, 1], as ImageGPT's processor stores them. Shapes: B batch, T = H·W.
    """

    type_name = "colour_clusters"
    channels = 3
    patch_size = 1  # one token per pixel: any number of rows is a prefix (`prefix_length`)
    num_classes = 0  # ImageGPT is unconditional
    class_names = None

    def __init__(self, *, height: int, width: int, clusters: Sequence[Sequence[float]] | Tensor | np.ndarray) -> None:
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ColourClusterCodec {name} must be a positive int, got {value!r}")
        c = torch.as_tensor(np.asarray(clusters, dtype=np.float32))
        if c.ndim != 2 or c.shape[1] != 3 or len(c) < 2:
            raise ValueError(f"clusters must be a (k, 3) list of RGB colours with k >= 2, got shape {tuple(c.shape)}")
        if not torch.isfinite(c).all() or c.min() < -1 or c.max() > 1:
            raise ValueError("clusters must be colours in [-1, 1] (ImageGPT's scale: 8-bit v -> v / 127.5 - 1), "
                             f"got range [{c.min().item():.4g}, {c.max().item():.4g}]")
        self.height, self.width, self.clusters = height, width, c  # (k, 3)

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return len(self.clusters)

    @property
    def tokens_per_image(self) -> int:
        return self.height * self.width

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def config(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "clusters": self.clusters.tolist()}

    def __repr__(self) -> str:
        return f"ColourClusterCodec(height={self.height}, width={self.width}, clusters={self.vocab_size})"

    # ---- images -> ids ----
    def nearest(self, pixels: Tensor) -> Tensor:
        """Colours (..., 3) on the [-1, 1] scale -> int64 ids (...) of the nearest cluster (the first on a tie)."""
        flat = pixels.reshape(-1, 1, 3).float()
        ids = torch.cat([((part - self.clusters) ** 2).sum(-1).argmin(-1) for part in flat.split(4096)])  # (N,)
        return ids.view(pixels.shape[:-1])

    def levels_to_tokens(self, levels: Tensor) -> Tensor:
        """8-bit images (B, 3, H, W) (uint8 or integers in [0, 255]) -> (B, T) ids."""
        if levels.ndim != 4 or tuple(levels.shape[1:]) != self.image_shape or torch.is_floating_point(levels):
            raise ValueError(f"expected 8-bit images of shape (B, {self.channels}, {self.height}, {self.width}), "
                             f"got {levels.dtype} {tuple(levels.shape)}")
        return self.images_to_tokens(levels.float() / 255)

    def images_to_tokens(self, images: Tensor) -> Tensor:
        """Float images (B, 3, H, W) in [0, 1] -> (B, T) ids of their nearest clusters."""
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"images must lie in [0, 1], got range [{images.min().item():.4g}, "
                             f"{images.max().item():.4g}]")
        return self.nearest(images.permute(0, 2, 3, 1) * 2 - 1).flatten(1)  # (B, H, W) -> (B, T)

    def dequantize(self, levels: Tensor) -> Tensor:
        """8-bit images (B, 3, H, W) -> float32 in [0, 1] (what the training render shows as originals)."""
        return levels.float() / 255

    def encode(self, x: Any) -> list[int]:
        """One image (3, H, W): float in [0, 1] or uint8 -> T ids."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if not isinstance(t, Tensor) or tuple(t.shape) != self.image_shape:
            raise ValueError(f"expected an image of shape {self.image_shape}, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(x).__name__}")
        if t.dtype == torch.uint8:
            return self.levels_to_tokens(t[None])[0].tolist()
        if not torch.is_floating_point(t):
            raise TypeError(f"encode expects float pixels in [0, 1] or uint8, got dtype {t.dtype}")
        return self.images_to_tokens(t[None])[0].tolist()

    # ---- ids -> images ----
    def decode_batch(self, tokens: Tensor) -> Tensor:
        """(B, T) ids -> (B, 3, H, W) float32 images in [0, 1]: each pixel its cluster's colour."""
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image:
            raise ValueError(f"expected (B, T={self.tokens_per_image}) ids, got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"cluster ids must lie in [0, {self.vocab_size}), got range "
                             f"[{tokens.min().item()}, {tokens.max().item()}]")
        colours = (self.clusters[tokens.long()] + 1) / 2  # (B, T, 3)
        return colours.view(-1, self.height, self.width, 3).permute(0, 3, 1, 2).contiguous()

    def decode(self, ids: Sequence[int] | Tensor) -> Tensor:
        """T ids -> (3, H, W) float32 image in [0, 1]."""
        return self.decode_batch(torch.as_tensor(ids, dtype=torch.long).reshape(1, -1))[0]

    # ---- what the image member asks every image codec ----
    def prefix_length(self, rows: int) -> int:
        """Leading ids that hold the top `rows` pixel rows."""
        if not 0 <= rows <= self.height:
            raise ValueError(f"rows must be in [0, {self.height}], got {rows}")
        return rows * self.width

    def check_class_ids(self, cond: Any) -> Tensor:
        raise ValueError("this codec is unconditional (colour clusters carry no classes); class ids are not accepted")
