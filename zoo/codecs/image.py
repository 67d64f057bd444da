"""Image <-> token codec for patch-based image models (MEGABYTE-style global/local transformers).

Token layout (the contract the image model and every sampler rely on):

    image (C, H, W) --quantize--> levels (C, H, W), ints in [0, levels)
    cut into N = (H/p)·(W/p) patches of p×p pixels, taken in raster order (left to right, top to bottom)
    each patch flattened to P = p·p·C sub-pixel values, row-major inside the patch with the channel
    innermost: element (dy·p + dx)·C + c is channel c of pixel (dy, dx) of the patch
    token sequence = the N patches one after the other: length N·P, token t = patch t // P, element t % P

With `patch_size=1` this is the ImageGPT order (pixels in raster order, channels innermost).

Quantisation: a float x in [0, 1] maps to level floor(x·(levels−1) + ½) and level q maps back to
q / (levels−1), so dequantize→quantize is the identity on levels; 8-bit input v maps to the level
nearest to v/255 (`quantize_uint`, exact integer arithmetic). With `levels=256` 8-bit images are
kept exactly, which is what bits/dim figures in the literature assume.

The vocabulary is exactly the `levels` pixel values: ids 0..levels−1. There are no special ids — the
model adds its own start-of-image / class embeddings outside this vocabulary, and class ids live in
`[0, num_classes)` (`num_classes=0` means unconditional).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from zoo.codecs.base import Codec

MAX_LEVELS = 256  # datasets store levels as uint8


class ImagePatchCodec(Codec):
    """Quantised images as flat sequences of patch tokens (layout in the module docstring).

    Shapes: B batch, C channels, H/W image size, p patch size, N = (H/p)·(W/p) patches,
    P = p·p·C tokens per patch, T = N·P tokens per image.
    """

    type_name = "image_patch"

    def __init__(
        self,
        *,
        height: int,
        width: int,
        channels: int = 1,
        levels: int = 256,
        patch_size: int = 1,
        num_classes: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        for name, value in (("height", height), ("width", width), ("patch_size", patch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be an int in [2, {MAX_LEVELS}], got {levels!r}")
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"patch_size={patch_size} must divide both height={height} and width={width}; "
                f"accepted patch sizes: {_common_divisors(height, width)}"
            )
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0 = unconditional), got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for num_classes={num_classes}")
        self.height, self.width, self.channels = height, width, channels
        self.levels, self.patch_size, self.num_classes = levels, patch_size, num_classes
        self.class_names = [str(c) for c in class_names] if class_names is not None else None

    # ---------------------------------------------------------------- sizes
    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.levels

    @property
    def num_patches(self) -> int:
        """N: patches per image."""
        return (self.height // self.patch_size) * (self.width // self.patch_size)

    @property
    def patch_tokens(self) -> int:
        """P: tokens (sub-pixel values) per patch."""
        return self.patch_size * self.patch_size * self.channels

    @property
    def tokens_per_image(self) -> int:
        """T = N·P = C·H·W."""
        return self.num_patches * self.patch_tokens

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def config(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "levels": self.levels,
            "patch_size": self.patch_size,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }

    def __repr__(self) -> str:
        return f"ImagePatchCodec({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    # --------------------------------------------------------- quantisation
    def quantize(self, images: Tensor) -> Tensor:
        """Float images in [0, 1] (any shape, e.g. (B, C, H, W)) -> int64 levels in [0, levels)."""
        if not torch.is_floating_point(images):
            raise TypeError(f"quantize expects a float tensor in [0, 1], got dtype {images.dtype}")
        if images.numel() and not torch.isfinite(images).all():
            raise ValueError("quantize: images contain NaN or infinite values")
        lo, hi = (images.min().item(), images.max().item()) if images.numel() else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"quantize expects values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        return torch.floor(images.double() * (self.levels - 1) + 0.5).long()

    def quantize_uint(self, raw: Tensor, max_value: int = 255) -> Tensor:
        """Integer pixels in [0, max_value] (e.g. uint8 with 255) -> int64 levels, nearest level, exact.

        Same mapping as `quantize(raw / max_value)`, in integer arithmetic (no rounding surprises).
        """
        if torch.is_floating_point(raw):
            raise TypeError(f"quantize_uint expects integer pixels, got dtype {raw.dtype}")
        raw = raw.long()
        if raw.numel() and (raw.min() < 0 or raw.max() > max_value):
            raise ValueError(
                f"pixels must lie in [0, {max_value}], got range [{raw.min().item()}, {raw.max().item()}]"
            )
        if max_value == self.levels - 1:
            return raw
        # round half up of raw·(L−1)/max: floor((2·raw·(L−1) + max) / (2·max))
        return (2 * raw * (self.levels - 1) + max_value) // (2 * max_value)

    def dequantize(self, levels: Tensor) -> Tensor:
        """Int levels in [0, levels) -> float32 in [0, 1] (level / (levels−1))."""
        self._check_levels(levels)
        return levels.float() / (self.levels - 1)

    def _check_levels(self, x: Tensor) -> None:
        if torch.is_floating_point(x):
            raise TypeError(f"expected integer levels, got dtype {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() >= self.levels):
            raise ValueError(
                f"token/level values must lie in [0, {self.levels}), got range "
                f"[{x.min().item()}, {x.max().item()}]"
            )

    # ------------------------------------------------------------- patches
    def patchify(self, x: Tensor) -> Tensor:
        """(B, C, H, W) levels -> (B, N, P): patches in raster order, (dy, dx, c) inside a patch."""
        self._check_image_batch(x)
        p = self.patch_size
        return rearrange(x, "b c (nh p1) (nw p2) -> b (nh nw) (p1 p2 c)", p1=p, p2=p)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """(B, N, P) -> (B, C, H, W); the exact inverse of `patchify`."""
        if patches.ndim != 3 or patches.shape[1:] != (self.num_patches, self.patch_tokens):
            raise ValueError(
                f"unpatchify expects (B, N={self.num_patches}, P={self.patch_tokens}), "
                f"got {tuple(patches.shape)}"
            )
        p = self.patch_size
        return rearrange(
            patches, "b (nh nw) (p1 p2 c) -> b c (nh p1) (nw p2)",
            nh=self.height // p, p1=p, p2=p, c=self.channels,
        )

    def levels_to_tokens(self, x: Tensor) -> Tensor:
        """(B, C, H, W) levels -> (B, T) int64 token ids (the model's input layout)."""
        return self.patchify(x).reshape(x.shape[0], self.tokens_per_image).long()

    def tokens_to_levels(self, tokens: Tensor) -> Tensor:
        """(B, T) or (B, N, P) token ids -> (B, C, H, W) int64 levels."""
        if tokens.ndim == 2:
            if tokens.shape[1] != self.tokens_per_image:
                raise ValueError(
                    f"expected (B, T={self.tokens_per_image}) tokens, got {tuple(tokens.shape)}"
                )
            tokens = tokens.reshape(tokens.shape[0], self.num_patches, self.patch_tokens)
        self._check_levels(tokens)
        return self.unpatchify(tokens).long()

    def decode_batch(self, tokens: Tensor) -> Tensor:
        """(B, T) token ids -> (B, C, H, W) float images in [0, 1] (e.g. for sample grids)."""
        return self.dequantize(self.tokens_to_levels(tokens))

    def _check_image_batch(self, x: Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"expected images of shape (B, {self.channels}, {self.height}, {self.width}), "
                f"got {tuple(x.shape)}"
            )

    # ------------------------------------------------------ codec contract
    def encode(self, x: Any) -> list[int]:
        """One image -> T token ids.

        Accepts a tensor or ndarray of shape (C, H, W) (or (H, W) when C=1): float in [0, 1], or
        uint8 in [0, 255]. Other integer dtypes are ambiguous (levels or 8-bit?) and are rejected.
        """
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if not isinstance(t, Tensor):
            raise TypeError(f"encode expects a torch.Tensor or numpy array, got {type(x).__name__}")
        if t.ndim == 2 and self.channels == 1:
            t = t.unsqueeze(0)
        if tuple(t.shape) != self.image_shape:
            raise ValueError(f"expected an image of shape {self.image_shape}, got {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            levels = self.quantize_uint(t, 255)
        elif torch.is_floating_point(t):
            levels = self.quantize(t)
        else:
            raise TypeError(
                f"encode expects float pixels in [0, 1] or uint8 in [0, 255], got dtype {t.dtype}; "
                "for integer levels use levels_to_tokens"
            )
        return self.levels_to_tokens(levels.unsqueeze(0))[0].tolist()

    def decode(self, ids: Sequence[int] | Tensor) -> Tensor:
        """T token ids -> (C, H, W) float32 image in [0, 1]."""
        t = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
        return self.decode_batch(t)[0]

    # ---------------------------------------------------- helpers for models
    def token_coordinates(self) -> Tensor:
        """(T, 3) int64: (channel, row, column) of the sub-pixel each token position holds."""
        c, h, w = self.image_shape
        grid = torch.stack(
            torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
        )  # (3, C, H, W): channel, row, column index of every sub-pixel
        # lay out each coordinate component exactly as the pixels are laid out
        out = [self.patchify(grid[k].unsqueeze(0)).reshape(-1) for k in range(3)]
        return torch.stack(out, dim=-1)

    def prefix_length(self, rows: int) -> int:
        """Number of leading tokens that hold exactly the top `rows` pixel rows (image completion).

        Only whole rows of patches form a prefix of the token sequence, so `rows` must be a
        multiple of `patch_size`.
        """
        if not 0 <= rows <= self.height or rows % self.patch_size:
            raise ValueError(
                f"rows must be a multiple of patch_size={self.patch_size} in [0, {self.height}], got {rows}"
            )
        return (rows // self.patch_size) * (self.width // self.patch_size) * self.patch_tokens

    def check_class_ids(self, cond: Tensor | Sequence[int] | int) -> Tensor:
        """Validate class ids against `num_classes`; returns them as an int64 tensor."""
        t = torch.as_tensor(cond)
        if torch.is_floating_point(t):
            raise TypeError(f"class ids must be integers, got dtype {t.dtype}")
        if self.num_classes == 0:
            raise ValueError("this codec is unconditional (num_classes=0); class ids are not accepted")
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            bad = t[(t < 0) | (t >= self.num_classes)].unique().tolist()
            names = f" ({', '.join(self.class_names)})" if self.class_names else ""
            raise ValueError(f"class ids {bad} out of range; accepted: 0..{self.num_classes - 1}{names}")
        return t.long()


def bits_per_dim(nll_nats_per_subpixel: float | Tensor) -> float | Tensor:
    """Mean negative log-likelihood per sub-pixel in nats -> bits per dimension (÷ ln 2)."""
    return nll_nats_per_subpixel / math.log(2)


def _common_divisors(a: int, b: int) -> list[int]:
    g = math.gcd(a, b)
    return [d for d in range(1, g + 1) if g % d == 0]
