"""Text-to-image decoder: caption codec, causality, caption dropout, guidance, data, training and zoo-sample."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, run_cli
from PIL import Image

from zoo.codecs.base import IGNORE_INDEX, codec_from_dict
from zoo.codecs.image import ImagePatchCodec
from zoo.codecs.text_image import TextImageCodec
from zoo.data.text_image import CaptionedDigitsDataModule, CaptionedShapesDataModule, ImageTextFolderDataModule
from zoo.members import member_for
from zoo.members.image_io import auto_upscale
from zoo.members.text2image import sample_images
from zoo.models.text2image import Text2Image, Text2ImageConfig
from zoo.sampling import generate
from zoo.train import run
from zoo.training.checkpoint import model_from_checkpoint

TINY_T2I = [
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.local_n_layer=1", "model.local_n_head=2",
    "model.local_n_embd=16", "data.batch_size=4", "data.num_eval=8", "trainer.max_steps=2",
    "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu",
    "samples.every_n_steps=0", "checkpoint.every_n_steps=2", "logger=none", "threads=1",
]


@pytest.fixture(scope="module")
def digits() -> CaptionedDigitsDataModule:
    dm = CaptionedDigitsDataModule(batch_size=4, num_eval=16)
    dm.setup()
    return dm


def tiny_model(codec: TextImageCodec, seed: int = 0, **fields) -> Text2Image:
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, local_n_layer=1, local_n_head=2, local_n_embd=16, dropout=0.0) | fields
    return Text2Image(Text2ImageConfig.for_codec(codec, **cfg)).eval()


# ---- codec -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "byte"])
def test_captions_round_trip_exactly(digits, kind):
    captions = [digits.caption(x) for x in digits.layouts()]
    codec = TextImageCodec.fit(captions, digits.codec.image, kind=kind)
    assert codec.text_len == max(len(codec.text.encode(c)) for c in captions)
    ids = codec.caption_ids(captions)
    assert ids.shape == (len(captions), codec.text_len)
    assert [codec.decode_caption(row) for row in ids] == captions
    levels = torch.randint(0, 17, (1, 8, 16))
    caption, decoded = codec.decode(codec.encode((captions[5], levels / 16)))
    assert caption == captions[5] and torch.equal(codec.image.quantize(decoded), levels)
    clone = codec_from_dict(codec.to_dict())  # the checkpoint's JSON state rebuilds the same codec
    assert clone.caption_ids(captions).equal(ids) and clone.text_len == codec.text_len


def test_empty_caption_is_the_unconditional_prompt(digits):
    codec, model = digits.codec, tiny_model(digits.codec)
    assert codec.caption_ids([""]).equal(model.null_caption(1))
    tokens = digits.make_batch(torch.Generator().manual_seed(0), 2)["idx"]
    assert model.image_logits(tokens, codec.caption_ids(["", ""])).equal(model.image_logits(tokens, None))
    same = sample_images(model, codec, [""], seed=3)
    assert torch.equal(same, torch.tensor([generate(model, [[]], max_new_tokens=codec.tokens_per_image, seed=3)[0]]))


def test_long_captions_are_truncated_with_a_warning_or_rejected(digits, caplog):
    short = TextImageCodec(text=digits.codec.text, image=digits.codec.image, text_len=6)
    with caplog.at_level(logging.WARNING):
        ids = short.encode_caption("a 3 on the left")
    assert short.decode_caption(ids) == "a 3 on" and "truncated to text_len=6" in caplog.text
    strict = TextImageCodec(text=digits.codec.text, image=digits.codec.image, text_len=6, on_long="error")
    with pytest.raises(ValueError, match=r"15 tokens, longer than text_len=6"):
        strict.caption_ids(["a 3 on the left"])
    with pytest.raises(ValueError, match="on_long="):
        TextImageCodec(text=digits.codec.text, image=digits.codec.image, text_len=6, on_long="drop")


def test_targets_layout_offsets_caption_tokens_and_ignores_padding(digits):
    b = digits.make_batch(torch.Generator().manual_seed(1), 3)
    codec, L = digits.codec, digits.codec.text_len
    text = b["targets"][:, :L - 1]
    assert torch.equal(b["targets"][:, L - 1:], b["idx"])
    pad = b["cond"][:, 1:] == codec.pad_id
    assert (text[pad] == IGNORE_INDEX).all() and torch.equal(text[~pad], b["cond"][:, 1:][~pad] + codec.vocab_size)


# ---- model -----------------------------------------------------------------------------------------
def test_image_part_never_attends_to_future_image_tokens(digits):
    model, codec = tiny_model(digits.codec), digits.codec
    b = digits.make_batch(torch.Generator().manual_seed(2), 2)
    L, T = codec.text_len, codec.tokens_per_image
    base = model(b["idx"], cond=b["cond"])
    assert base.shape == (2, L - 1 + T, codec.vocab_size + codec.text_vocab_size)
    for j in (0, 5, 4 * 7, T - 1):  # first token, inside a patch, a patch boundary, the last token
        changed = b["idx"].clone()
        changed[:, j:] = (changed[:, j:] + 3) % codec.vocab_size
        out = model(changed, cond=b["cond"])
        # caption rows, and image rows 0..j (row j predicts token j from tokens < j) are unchanged
        assert torch.equal(out[:, :L + j], base[:, :L + j])
        if j < T - 1:
            assert not torch.allclose(out[:, L + j:], base[:, L + j:])
    other = model(b["idx"], cond=codec.caption_ids(["a 1 on the left", "a 2 on the right"]))
    assert not torch.allclose(other[:, L - 1:], base[:, L - 1:])  # the image does read the caption


def test_caption_dropout_produces_the_unconditional_path(digits):
    model, codec = tiny_model(digits.codec, cond_dropout=0.999), digits.codec
    b = digits.make_batch(torch.Generator().manual_seed(3), 4)
    L = codec.text_len
    uncond = model.image_logits(b["idx"], None)
    model.train()
    torch.manual_seed(0)
    dropped = model(b["idx"], cond=b["cond"])[:, L - 1:, :codec.vocab_size]
    assert torch.equal(dropped, uncond)
    model.eval()  # no dropout at evaluation: the caption is used
    assert not torch.allclose(model(b["idx"], cond=b["cond"])[:, L - 1:, :codec.vocab_size], uncond)


def test_loss_weights_give_the_weighted_sum_of_part_means(digits):
    model, codec = tiny_model(digits.codec, cond_dropout=0.0, text_loss_weight=1.0, image_loss_weight=7.0), digits.codec
    b = digits.make_batch(torch.Generator().manual_seed(4), 4)
    model.train()  # GenerativeModule's loss: one mean over all targets; the model reweights the gradients
    F.cross_entropy(model(b["idx"], cond=b["cond"]).flatten(0, 1), b["targets"].flatten(),
                    ignore_index=IGNORE_INDEX).backward()
    weighted = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.eval()
    logits, L = model(b["idx"], cond=b["cond"]), codec.text_len
    text = F.cross_entropy(logits[:, :L - 1].flatten(0, 1), b["targets"][:, :L - 1].flatten(), ignore_index=-100)
    image = F.cross_entropy(logits[:, L - 1:].flatten(0, 1), b["targets"][:, L - 1:].flatten())
    (text / 8 + image * 7 / 8).backward()
    for w, p in zip(weighted, model.parameters(), strict=True):
        torch.testing.assert_close(w, p.grad, rtol=1e-4, atol=1e-7)


def test_guidance_1_equals_plain_conditional_sampling(digits):
    model, codec = tiny_model(digits.codec), digits.codec
    captions = ["a 4 on the left and a 1 on the right", "a 7 on the right"]
    plain = sample_images(model, codec, captions, seed=5)
    assert torch.equal(sample_images(model, codec, captions, seed=5, guidance=1.0), plain)
    cond = codec.caption_ids(captions)
    guided = generate(model, [[], []], max_new_tokens=codec.tokens_per_image, cond=cond, guidance=1.0,
                      temperature=0)
    greedy = generate(model, [[], []], max_new_tokens=codec.tokens_per_image, cond=cond, temperature=0)
    assert guided == greedy  # through the doubled batch: u + 1·(c − u) = c
    assert not torch.equal(sample_images(model, codec, captions, seed=5, guidance=3.0), plain)


def test_generation_is_deterministic_under_a_seed_and_cache_exact(digits):
    model, codec = tiny_model(digits.codec), digits.codec
    captions = ["a 3 on the left", "a 9 on the left and a 2 on the right"]
    first = sample_images(model, codec, captions, seed=11, guidance=3.0)
    assert torch.equal(sample_images(model, codec, captions, seed=11, guidance=3.0), first)
    assert not torch.equal(sample_images(model, codec, captions, seed=12, guidance=3.0), first)
    uncached = sample_images(model, codec, captions, seed=11, guidance=3.0, use_cache=False)
    assert torch.equal(uncached, first)


def test_static_decode_step_equals_the_image_logits(digits):
    """decode_step_static (what compile=True compiles), eager here: behind the caption prefix it gives the logits of
    recomputing the whole image, as decode_step does."""
    model, codec = tiny_model(digits.codec, seed=2), digits.codec
    cond = codec.caption_ids(["a 5 on the right", "a 2 on the left and a 8 on the right"])
    x = torch.randint(0, codec.vocab_size, (2, codec.tokens_per_image), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.image_logits(x, cond)  # (B, T, V)
        cache = model.new_cache(2)
        got = [model.prefill(x[:, :5], cond=cond, cache=cache)]
        for t in range(5, x.shape[1] - 1):
            got.append(model.decode_step_static(x[:, t:t + 1], cache=cache, cond=cond))
    assert cache.global_kv.static
    torch.testing.assert_close(torch.stack(got, 1), full[:, 5:], atol=1e-4, rtol=1e-4)


def test_config_rejects_bad_values(digits):
    with pytest.raises(ValueError, match="num_classes must be 0"):
        Text2ImageConfig.for_codec(digits.codec, num_classes=3)
    with pytest.raises(ValueError, match="text_len must be a positive integer"):
        Text2ImageConfig.for_codec(digits.codec, text_len=0)
    model = tiny_model(digits.codec)
    with pytest.raises(ValueError, match=r"caption ids of shape \(1, 36\)"):
        model.image_logits(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))


# ---- data ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CaptionedDigitsDataModule, CaptionedShapesDataModule])
def test_synthetic_sets_are_deterministic_and_hold_out_layouts(cls):
    a, b = cls(num_eval=16), cls(num_eval=16)
    a.setup()
    b.setup()
    assert a.splits["test"][1] == b.splits["test"][1] and torch.equal(a.splits["test"][0], b.splits["test"][0])
    held = {a.caption(x) for x in a.heldout_layouts}
    assert held and set(a.splits["test"][1]) <= held and not held & set(a.splits["val"][1])
    g = torch.Generator().manual_seed(0)
    seen = {a.codec.decode_caption(row) for _ in range(20) for row in a.make_batch(g, 32)["cond"]}
    assert not seen & held
    assert torch.equal(a.make_batch(torch.Generator().manual_seed(7), 4)["idx"],
                       b.make_batch(torch.Generator().manual_seed(7), 4)["idx"])


def _png(path, value):
    Image.new("RGB", (20, 10), (value, 0, 0)).save(path)


@pytest.mark.parametrize("index", [None, "csv", "jsonl"])
def test_folder_images_without_captions_are_skipped_and_counted(tmp_path, caplog, index):
    for i in range(6):
        _png(tmp_path / f"img{i}.png", 40 * i)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    captions = {f"img{i}.png": f"red {i}" for i in range(4)} | {"broken.png": "broken"}
    if index is None:
        for name, text in captions.items():
            (tmp_path / name).with_suffix(".txt").write_text(text + "\n")
        kwargs = {}
    elif index == "csv":
        rows = [f"{n},{c}" for n, c in captions.items()] + ["img4.png,"]
        (tmp_path / "index.csv").write_text("path,caption\n" + "\n".join(rows) + "\n")
        kwargs = {"captions": str(tmp_path / "index.csv")}
    else:
        import json

        rows = [json.dumps({"path": n, "caption": c}) for n, c in captions.items()] + [json.dumps({"path": "img5.png"})]
        (tmp_path / "index.jsonl").write_text("\n".join(rows))
        kwargs = {"captions": str(tmp_path / "index.jsonl")}
    dm = ImageTextFolderDataModule(root=tmp_path, height=8, width=8, levels=4, patch_size=2, batch_size=2,
                                   val_fraction=0.25, test_fraction=0.25, **kwargs)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    reasons = sorted(r for _, r in dm.skipped)
    assert reasons == (["no caption"] * 2 + ["unreadable"] if index is None else ["no caption", "unreadable"])
    assert len(dm.train[1]) + len(dm.splits["val"][1]) + len(dm.splits["test"][1]) == 4
    assert "skipped" in caplog.text and "broken.png (unreadable)" in caplog.text
    batch = dm.make_batch(torch.Generator().manual_seed(0), 3)
    assert batch["idx"].shape == (3, 8 * 8 * 3) and batch["cond"].shape == (3, dm.codec.text_len)


# ---- training and zoo-sample ------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["text2image_digits", "text2image_shapes"])
def test_fast_dev_run_of_each_experiment(experiment, tmp_path):
    summary = run(compose_train([f"experiment={experiment}", "trainer=debug", f"run_dir={tmp_path}", *TINY_T2I]))
    assert math.isfinite(summary["metrics"]["train/loss"])
    (grid,) = summary["samples"].images
    assert grid.is_file() and grid.with_suffix(".txt").read_text().startswith("row 0: 'a ")


def test_zoo_sample_writes_a_caption_grid(tmp_path, capsys):
    summary = run(compose_train(["experiment=text2image_digits", f"run_dir={tmp_path / 'run'}", *TINY_T2I]))
    model, codec = model_from_checkpoint(summary["checkpoint"])[:2]
    assert isinstance(codec, TextImageCodec) and isinstance(model, Text2Image)
    member = member_for(codec)
    opts = dict(prompt="a 4 on the left and a 1 on the right", prompts=[], guidance=3, num_samples=8, seed=0,
                out=str(tmp_path / "out"), temperature=1.0, top_k=None, top_p=None, min_p=None)
    done = member.sample(model, codec, dict(opts))
    u = auto_upscale(8, 16)
    assert Image.open(tmp_path / "out" / "text2image.png").size == (8 * (16 * u + 2) + 2, 8 * u + 4)
    assert "1 caption(s) × 8 sample(s)" in done.describe()
    with pytest.raises(ValueError, match="unknown|not in"):
        member.sample(model, codec, opts | {"prompt": "a 4 on the left ✗"})
    with pytest.raises(ValueError, match="`labels` does not apply to text2image models"):
        member.sample(model, codec, opts | {"labels": [1]})
    with pytest.raises(ValueError, match="`stop` does not apply to text2image models"):
        member.sample(model, codec, opts | {"stop": ["x"]})


def test_repetition_penalty_is_honoured(digits):
    """It used to be dropped silently: now it changes what is drawn (penalising tokens already in the image)."""
    model, codec = tiny_model(digits.codec), digits.codec
    member = member_for(codec)
    kw = dict(prompt="a 4 on the left and a 1 on the right", num_samples=2, temperature=0)
    plain = member.sample(model, codec, kw).value
    assert torch.equal(member.sample(model, codec, kw | {"repetition_penalty": 1.0}).value, plain)
    assert not torch.equal(member.sample(model, codec, kw | {"repetition_penalty": 3.0}).value, plain)


def test_image_codec_must_be_unconditional():
    with pytest.raises(ValueError, match="unconditional"):
        TextImageCodec(text={"type": "byte", "eos": False}, image=ImagePatchCodec(height=2, width=2, num_classes=2),
                       text_len=4)


@pytest.mark.slow
def test_cli_zoo_sample_writes_a_png_grid(tmp_path):
    summary = run(compose_train(["experiment=text2image_digits", f"run_dir={tmp_path / 'run'}", *TINY_T2I]))
    r = run_cli(["zoo-sample", f"checkpoint={summary['checkpoint']}",
                 "prompt=a 4 on the left and a 1 on the right", "guidance=3", "num_samples=8", "seed=0",
                 f"out={tmp_path / 'grid'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    u = auto_upscale(8, 16)
    assert Image.open(tmp_path / "grid" / "text2image.png").size == (8 * (16 * u + 2) + 2, 8 * u + 4)
