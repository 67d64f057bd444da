"""ImagePatchCodec: exact round trips, the documented token layout, quantisation, errors; PNG grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.codecs.base import codec_from_dict, load_codec
from zoo.codecs.image import ImagePatchCodec, bits_per_dim
from zoo.members.image_io import auto_upscale, image_grid, save_grid_png


def reference_tokens(x: torch.Tensor, p: int) -> list[int]:
    """The layout written out as loops: patches in raster order, (dy, dx, c) inside each patch."""
    c, h, w = x.shape
    out = []
    for py in range(h // p):
        for px in range(w // p):
            for dy in range(p):
                for dx in range(p):
                    for ch in range(c):
                        out.append(int(x[ch, py * p + dy, px * p + dx]))
    return out


@st.composite
def level_batches(draw):
    p = draw(st.sampled_from([1, 2, 3, 4]))
    c = draw(st.sampled_from([1, 3]))
    nh, nw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    levels = draw(st.integers(2, 256))
    b = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    codec = ImagePatchCodec(height=nh * p, width=nw * p, channels=c, levels=levels, patch_size=p)
    x = torch.randint(0, levels, (b, c, nh * p, nw * p), generator=torch.Generator().manual_seed(seed))
    return codec, x


@settings(max_examples=60, deadline=None)
@given(level_batches())
def test_patchify_unpatchify_exact_round_trip(case):
    codec, x = case
    patches = codec.patchify(x)
    assert patches.shape == (x.shape[0], codec.num_patches, codec.patch_tokens)
    assert torch.equal(codec.unpatchify(patches), x)
    tokens = codec.levels_to_tokens(x)
    assert tokens.shape == (x.shape[0], codec.tokens_per_image) and tokens.dtype == torch.int64
    assert torch.equal(codec.tokens_to_levels(tokens), x)
    assert torch.equal(codec.tokens_to_levels(patches), x)


@settings(max_examples=30, deadline=None)
@given(level_batches())
def test_token_layout_matches_documented_order(case):
    codec, x = case
    assert codec.levels_to_tokens(x)[0].tolist() == reference_tokens(x[0], codec.patch_size)


def test_patch_size_one_is_raster_order_channels_innermost():
    codec = ImagePatchCodec(height=4, width=6, channels=3, levels=256, patch_size=1)
    x = torch.randint(0, 256, (2, 3, 4, 6))
    assert torch.equal(codec.levels_to_tokens(x), x.permute(0, 2, 3, 1).reshape(2, -1))


def test_token_coordinates_locate_every_token():
    codec = ImagePatchCodec(height=6, width=4, channels=3, levels=50, patch_size=2)
    x = torch.randint(0, 50, (1, 3, 6, 4))
    tokens = codec.levels_to_tokens(x)[0]
    coords = codec.token_coordinates()
    assert coords.shape == (codec.tokens_per_image, 3)
    assert torch.equal(tokens, x[0, coords[:, 0], coords[:, 1], coords[:, 2]])
    assert len({tuple(c) for c in coords.tolist()}) == codec.tokens_per_image  # a permutation


def test_sizes_and_vocab():
    codec = ImagePatchCodec(height=28, width=28, channels=1, levels=16, patch_size=4, num_classes=10)
    assert codec.vocab_size == 16
    assert (codec.num_patches, codec.patch_tokens, codec.tokens_per_image) == (49, 16, 784)
    rgb = ImagePatchCodec(height=32, width=32, channels=3, levels=256, patch_size=4)
    assert (rgb.num_patches, rgb.patch_tokens, rgb.tokens_per_image) == (64, 48, 3072)


def test_quantize_dequantize_consistency():
    for levels in (2, 9, 16, 17, 256):
        codec = ImagePatchCodec(height=2, width=2, levels=levels)
        q = torch.arange(levels)
        deq = codec.dequantize(q)
        assert deq[0] == 0.0 and deq[-1] == 1.0
        assert torch.equal(codec.quantize(deq), q)
        x = torch.rand(1000, generator=torch.Generator().manual_seed(levels))
        err = (codec.dequantize(codec.quantize(x)) - x).abs().max().item()
        assert err <= 0.5 / (levels - 1) + 1e-6  # nearest level


@pytest.mark.parametrize("levels", [2, 8, 16, 17, 100, 256])
def test_quantize_uint_matches_float_quantize(levels):
    codec = ImagePatchCodec(height=2, width=2, levels=levels)
    raw = torch.arange(256, dtype=torch.uint8)
    q = codec.quantize_uint(raw, 255)
    assert torch.equal(q, codec.quantize(raw.double() / 255))
    assert q.min() == 0 and q.max() == levels - 1
    assert (q.diff() >= 0).all()


def test_quantize_uint_identity_at_native_levels():
    codec = ImagePatchCodec(height=2, width=2, levels=17)
    raw = torch.arange(17)
    assert torch.equal(codec.quantize_uint(raw, 16), raw)
    with pytest.raises(ValueError, match=r"\[0, 16\].*\[0, 17\]"):
        codec.quantize_uint(torch.tensor([0, 17]), 16)


def test_encode_decode_exact_for_quantized_images():
    codec = ImagePatchCodec(height=8, width=8, channels=3, levels=17, patch_size=2)
    levels = torch.randint(0, 17, (3, 8, 8))
    image = codec.dequantize(levels)
    ids = codec.encode(image)
    assert isinstance(ids, list) and len(ids) == codec.tokens_per_image
    assert ids == codec.levels_to_tokens(levels[None])[0].tolist()
    decoded = codec.decode(ids)
    assert decoded.shape == (3, 8, 8) and decoded.dtype == torch.float32
    assert torch.equal(decoded, image)
    assert codec.encode(decoded.numpy()) == ids  # numpy input too


def test_encode_uint8_is_exact_at_256_levels_and_accepts_2d_grey():
    codec = ImagePatchCodec(height=4, width=4, channels=1, levels=256, patch_size=2)
    img = torch.randint(0, 256, (4, 4), dtype=torch.uint8)
    ids = codec.encode(img.numpy())
    assert ids == reference_tokens(img[None].long(), 2)
    assert torch.equal(torch.round(codec.decode(ids) * 255).to(torch.uint8)[0], img)


def test_bad_inputs_give_clear_errors():
    divisors = r"\[1, 2, 4, 7, 14, 28\]"
    with pytest.raises(ValueError, match=r"patch_size=3 must divide both height=28 and width=28.*" + divisors):
        ImagePatchCodec(height=28, width=28, patch_size=3)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*got 2"):
        ImagePatchCodec(height=4, width=4, channels=2)
    for bad in (1, 257):
        with pytest.raises(ValueError, match=rf"levels must be an int in \[2, 256\], got {bad}"):
            ImagePatchCodec(height=4, width=4, levels=bad)
    codec = ImagePatchCodec(height=4, width=4, channels=1, levels=8, patch_size=2, num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4\), got \(1, 4, 5\)"):
        codec.encode(torch.zeros(1, 4, 5))
    with pytest.raises(TypeError, match="int32"):
        codec.encode(torch.zeros(1, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got range \[-0.5"):
        codec.encode(torch.full((1, 4, 4), -0.5))
    with pytest.raises(ValueError, match=r"T=16\) tokens, got \(1, 15\)"):
        codec.decode([0] * 15)
    with pytest.raises(ValueError, match=r"\[0, 8\), got range \[0, 8\]"):
        codec.decode([0] * 15 + [8])
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\), got \(2, 3, 4, 4\)"):
        codec.patchify(torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class ids \[-1, 3\] out of range; accepted: 0..2"):
        codec.check_class_ids([0, 3, -1])
    assert codec.check_class_ids([0, 2]).tolist() == [0, 2]
    with pytest.raises(ValueError, match="unconditional"):
        ImagePatchCodec(height=4, width=4).check_class_ids(0)


def test_prefix_length_covers_top_rows():
    codec = ImagePatchCodec(height=8, width=6, channels=3, levels=5, patch_size=2)
    a, b = torch.randint(0, 5, (2, 1, 3, 8, 6))
    k = codec.prefix_length(4)
    mixed = torch.cat([codec.levels_to_tokens(a)[:, :k], codec.levels_to_tokens(b)[:, k:]], dim=1)
    out = codec.tokens_to_levels(mixed)
    assert torch.equal(out[..., :4, :], a[..., :4, :]) and torch.equal(out[..., 4:, :], b[..., 4:, :])
    assert codec.prefix_length(0) == 0 and codec.prefix_length(8) == codec.tokens_per_image
    with pytest.raises(ValueError, match="multiple of patch_size=2"):
        codec.prefix_length(3)


def test_codec_state_round_trips(tmp_path):
    codec = ImagePatchCodec(
        height=8, width=8, channels=1, levels=17, patch_size=2, num_classes=2, class_names=["a", "b"]
    )
    state = json.loads(json.dumps(codec.to_dict()))
    assert state["type"] == "image_patch"
    again = codec_from_dict(state)
    assert isinstance(again, ImagePatchCodec) and again.config() == codec.config()
    loaded = load_codec(codec.save(tmp_path / "codec"))
    assert loaded.config() == codec.config()
    with pytest.raises(ValueError, match="2 class_names for num_classes=3"):
        ImagePatchCodec(height=8, width=8, num_classes=3, class_names=["a", "b"])


def test_bits_per_dim():
    assert bits_per_dim(math.log(256)) == pytest.approx(8.0)
    assert torch.allclose(bits_per_dim(torch.tensor([math.log(2), math.log(17)])), torch.tensor([1.0, math.log2(17)]))


# ---------------------------------------------------------------- PNG grids
def test_save_grid_png_grey_size_and_content(tmp_path):
    from PIL import Image

    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    path = save_grid_png(images, tmp_path / "sub" / "grid.png", nrow=4)
    up = auto_upscale(8, 8)
    assert up == 8
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        rows, cols = 3, 4
        assert im.size == (cols * (8 * up + 1) + 1, rows * (8 * up + 1) + 1)
        arr = np.asarray(im)
    expected = np.round(images[5, 0].numpy() * 255).astype(np.uint8)  # row 1, column 1
    top, left = 1 + (8 * up + 1), 1 + (8 * up + 1)
    cell = arr[top:top + 8 * up, left:left + 8 * up]
    assert np.array_equal(cell[::up, ::up], expected)
    assert np.array_equal(cell, np.kron(expected, np.ones((up, up), dtype=np.uint8)))  # nearest-neighbour


def test_image_grid_rgb_shape_and_errors():
    grid = image_grid(torch.ones(3, 3, 4, 5), nrow=8, padding=2, upscale=3)
    assert grid.shape == (1 * (12 + 2) + 2, 3 * (15 + 2) + 2, 3) and grid.dtype == np.uint8
    assert (grid[2:14, 2:17] == 255).all()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*got \(2, 2, 4, 4\)"):
        image_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        image_grid(torch.full((1, 1, 2, 2), float("nan")))
