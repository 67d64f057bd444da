"""Captioned images for the text-to-image decoder: two synthetic sets and a folder reader.

One module per family: `synthetic` (captioned digits and shapes), `folder` (image_text_folder);
`base` holds what they share (`CaptionedImageDataModule`). Every public name is re-exported here, so
`zoo.data.text_image.X` (the `_target_` of older configs and checkpoints) keeps naming the same class.

Batches (what `Text2Image` and `GenerativeModule` consume; layout in zoo/codecs/text_image.py):

    idx      (B, T)        int64  the image's tokens (ImagePatchCodec layout)
    cond     (B, L)        int64  caption ids right-padded with the codec's pad_id (L = text_len)
    targets  (B, L−1+T)    int64  `TextImageCodec.targets`: caption tokens 1..L−1 (offset, -100 on
                                  padding), then the image tokens

* `captioned_digits`: an 8×16 canvas (17 grey levels) holding one or two scikit-learn digits in its
  left and right halves, captioned "a 3 on the left and a 7 on the right" / "a 3 on the left" /
  "a 7 on the right" (120 layouts).
* `captioned_shapes`: a 12×12 RGB canvas (2 levels per channel: pure colours) with one shape drawn
  by Pillow, captioned "a small red circle on the left" (kind × colour × size × side: 36 layouts);
  the shape's position inside its half is jittered.
* `image_text_folder`: a folder of images with same-named .txt captions (`cat.png` + `cat.txt`),
  or a CSV (columns path,caption) / JSONL ({"path": ..., "caption": ...}) given as `captions=`.
  Images without a caption (and unreadable files) are skipped, counted in `skipped` and named in a
  warning.

Compositional generalisation: the synthetic sets hold out a `heldout_fraction` of their two-part
layouts (digit pairs; shape attribute combinations), chosen from `split_seed`. Training never shows a
held-out caption; `val` holds `num_eval` examples of training layouts (drawn from images kept out of
training for digits) and `test` `num_eval` examples of the held-out layouts only. Everything is a
deterministic function of (`split_seed`, `seed`): training batches come from a `BatchStream`
(the loaders are `zoo.data.base.StreamDataModule`'s).
"""

from zoo.data.text_image.base import CaptionCollate, CaptionedImageDataModule, caption_batch
from zoo.data.text_image.folder import ImageTextFolderDataModule
from zoo.data.text_image.synthetic import CaptionedDigitsDataModule, CaptionedShapesDataModule, Layout

__all__ = [
    "CaptionCollate", "CaptionedDigitsDataModule", "CaptionedImageDataModule", "CaptionedShapesDataModule",
    "ImageTextFolderDataModule", "Layout", "caption_batch",
]
