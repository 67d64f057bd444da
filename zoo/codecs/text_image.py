"""(caption, image) <-> tokens for the text-to-image decoder: a text codec and an image patch codec.

Layout (what `zoo.models.text2image.Text2Image` reads):

    caption  -> text ids from the text codec (char, byte or BPE, fitted on the captions), at most
                `text_len` of them, right-padded with `pad_id = text_vocab_size` to exactly `text_len`
    image    -> ImagePatchCodec tokens (levels 0..V−1, patch by patch; zoo/codecs/image.py)
    encode((caption, image)) = the padded caption ids offset by V, then the T image tokens: one stream
                over one vocabulary of V + text_vocab_size + 1 ids (image levels first, as the model's
                joint logits; the padding id V + text_vocab_size is never a target)

The empty caption "" is all padding: the unconditional prompt (what caption dropout trains and
classifier-free guidance uses as `uncond`). A caption longer than `text_len` tokens is cut to its
first `text_len` tokens with a warning (`on_long="truncate"`) or rejected with a ValueError
(`on_long="error"`). Round trip: `decode_caption(encode_caption(s)) == s` for every caption the text
codec encodes and that fits.

`vocab_size` is the image vocabulary (the tokens `zoo.sampling` generates); `text_vocab_size`,
`text_len` and the image geometry are attributes of the same names as the model config's fields.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from zoo.codecs.base import IGNORE_INDEX, Codec, codec_from_dict
from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text import TextCodec, TextCodecKind, build_text_codec

log = logging.getLogger(__name__)

OnLong = Literal["truncate", "error"]


class TextImageCodec(Codec):
    """A caption codec and an image codec, with a fixed caption length (see the module docstring)."""

    type_name: ClassVar[str] = "text_image"

    def __init__(self, *, text: TextCodec | dict[str, Any], image: ImagePatchCodec | dict[str, Any], text_len: int,
                 on_long: OnLong = "truncate") -> None:
        self.text = codec_from_dict(text) if isinstance(text, dict) else text
        self.image = codec_from_dict(image) if isinstance(image, dict) else image
        if not isinstance(self.text, TextCodec):
            raise TypeError(f"text must be a text codec (char, byte, bpe), got {type(self.text).__name__}")
        if not isinstance(self.image, ImagePatchCodec):
            raise TypeError(f"image must be an ImagePatchCodec, got {type(self.image).__name__}")
        if self.image.num_classes:
            raise ValueError("the image codec of a text-to-image pair must be unconditional (num_classes=0)")
        if not isinstance(text_len, int) or text_len < 2:
            raise ValueError(f"text_len must be an int >= 2, got {text_len!r}")
        if on_long not in ("truncate", "error"):
            raise ValueError(f"on_long={on_long!r}; accepted: 'truncate', 'error'")
        self.text_len, self.on_long = text_len, on_long

    @classmethod
    def fit(cls, captions: Sequence[str], image: ImagePatchCodec, *, kind: TextCodecKind = "char",
            text_vocab_size: int | None = None, text_len: int | None = None, on_long: OnLong = "truncate",
            ) -> TextImageCodec:
        """Fit the text codec on `captions`; text_len=None -> the longest caption's length in tokens."""
        text = build_text_codec(kind, list(captions), text_vocab_size)
        longest = max((len(text.encode(s)) for s in captions), default=0)
        return cls(text=text, image=image, text_len=text_len or max(longest, 2), on_long=on_long)

    # ---------------------------------------------------------------- sizes (model config fields)
    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.image.vocab_size

    @property
    def text_vocab_size(self) -> int:
        return self.text.vocab_size

    @property
    def pad_id(self) -> int:
        return self.text.vocab_size

    num_patches = property(lambda self: self.image.num_patches)
    patch_tokens = property(lambda self: self.image.patch_tokens)
    tokens_per_image = property(lambda self: self.image.tokens_per_image)
    num_classes = 0

    def config(self) -> dict[str, Any]:
        return {"text": self.text.to_dict(), "image": self.image.to_dict(), "text_len": self.text_len,
                "on_long": self.on_long}

    # ---------------------------------------------------------------- captions
    def encode_caption(self, caption: str) -> list[int]:
        """Text ids of `caption` (unpadded), at most text_len (truncated or rejected, per `on_long`)."""
        if not isinstance(caption, str):
            raise TypeError(f"a caption must be a str, got {type(caption).__name__}")
        ids = self.text.encode(caption)
        if len(ids) > self.text_len:
            if self.on_long == "error":
                raise ValueError(f"caption {caption!r} is {len(ids)} tokens, longer than text_len={self.text_len}; "
                                 "shorten it or set on_long='truncate'")
            log.warning("caption %r is %d tokens; truncated to text_len=%d", caption, len(ids), self.text_len)
            ids = ids[:self.text_len]
        return ids

    def caption_ids(self, captions: Sequence[str]) -> Tensor:
        """Captions -> (B, text_len) int64 ids right-padded with `pad_id` (the model's `cond`)."""
        rows = [self.encode_caption(s) for s in captions]
        return torch.tensor([r + [self.pad_id] * (self.text_len - len(r)) for r in rows], dtype=torch.long
                            ).view(len(rows), self.text_len)

    def decode_caption(self, ids: Sequence[int] | Tensor) -> str:
        """Caption ids (padded or not) -> the caption; padding is dropped."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        return self.text.decode([i for i in ids if i != self.pad_id])

    def targets(self, captions: Tensor, image_tokens: Tensor) -> Tensor:
        """(B, L) caption ids and (B, T) image tokens -> (B, L−1+T) targets of the model's joint logits:
        caption tokens 1..L−1 offset by V (padding -> IGNORE_INDEX), then the image tokens."""
        text = torch.where(captions[:, 1:] == self.pad_id, IGNORE_INDEX, captions[:, 1:] + self.vocab_size)
        return torch.cat([text, image_tokens], dim=1)

    # ---------------------------------------------------------------- codec contract
    def encode(self, x: tuple[str, Any]) -> list[int]:
        """(caption, image) -> text_len caption ids offset by V, then T image tokens (module docstring)."""
        caption, image = x
        caps = self.caption_ids([caption])[0] + self.vocab_size
        return caps.tolist() + self.image.encode(image)

    def decode(self, ids: Sequence[int] | Tensor) -> tuple[str, Tensor]:
        """The inverse of `encode`: -> (caption, (C, H, W) float image in [0, 1])."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        if len(ids) != self.text_len + self.tokens_per_image:
            raise ValueError(f"expected {self.text_len} caption + {self.tokens_per_image} image ids, got {len(ids)}")
        caption = self.decode_caption([i - self.vocab_size for i in ids[:self.text_len]])
        return caption, self.image.decode(ids[self.text_len:])

    def decode_batch(self, tokens: Tensor) -> Tensor:
        """(B, T) image tokens -> (B, C, H, W) float images in [0, 1]."""
        return self.image.decode_batch(tokens)

    def __repr__(self) -> str:
        return f"TextImageCodec(text={self.text.type_name}, image={self.image!r}, text_len={self.text_len})"
