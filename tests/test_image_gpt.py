"""Patch image GPT: causality, exact cached decoding, likelihood sanity, guidance, sampling, training, eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, run_cli
from omegaconf import OmegaConf
from PIL import Image

from zoo.codecs.image import ImagePatchCodec
from zoo.data.image import DigitsDataModule
from zoo.eval import bits_per_dim, classifier_fid, independent_pixel_bits_per_dim, train_classifier
from zoo.eval.classifier import classifier_accuracy
from zoo.members import member_for
from zoo.members.image import parse_labels, sample_tokens
from zoo.models.image_gpt import ImageGPT, ImageGPTConfig
from zoo.sampling import generate
from zoo.train import run
from zoo.training.builders import build_data
from zoo.training.checkpoint import model_from_checkpoint

LEVELS = 7
# (patch tokens P, patches N, local layers): a patch model, a pixel model without and with a local stack
SHAPES = [(4, 6, 2), (1, 12, 0), (1, 8, 1), (3, 4, 0)]
# Small enough to train a few steps in seconds; the geometry comes from the digits codec.
TINY_IMAGE = [
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.local_n_layer=1", "model.local_n_head=2",
    "model.local_n_embd=16", "data.batch_size=8", "trainer.max_steps=4", "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "samples.every_n_steps=0",
    "checkpoint.every_n_steps=2", "logger=none", "threads=1",
]


def tiny_model(p: int = 4, n: int = 6, local_n_layer: int = 2, num_classes: int = 3, seed: int = 0,
               **overrides) -> ImageGPT:
    """Random weights with std 0.3 (not 0.02): peaked logits, so that a change anywhere shows."""
    torch.manual_seed(seed)
    cfg = ImageGPTConfig(vocab_size=LEVELS, num_patches=n, patch_tokens=p, num_classes=num_classes, n_layer=2,
                         n_head=2, n_embd=32, local_n_layer=local_n_layer, local_n_embd=16, **overrides)
    model = ImageGPT(cfg).eval()
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() > 1:
                w.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    return dm


# ---- the model's contracts ----------------------------------------------------------------------------

@pytest.mark.parametrize("p,n,local", SHAPES)
def test_causal_across_and_within_patches(p, n, local):
    model = tiny_model(p, n, local)
    t_len = n * p
    x, cond = torch.randint(0, LEVELS, (2, t_len)), torch.tensor([0, 2])
    with torch.no_grad():
        ref = model(x, cond=cond)  # (B, T, V); position t predicts token t
        assert ref.shape == (2, t_len, LEVELS)
        for t in range(t_len):
            y = x.clone()
            y[:, t:] = (x[:, t:] + 1 + torch.randint(0, LEVELS - 1, y[:, t:].shape)) % LEVELS  # all differ
            out = model(y, cond=cond)
            torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], atol=1e-5, rtol=1e-5, msg=f"t={t}")
            if t + 1 < t_len:  # token t does reach the next position, so the check above can fail
                assert not torch.allclose(out[:, t + 1], ref[:, t + 1], atol=1e-4)
        other = model(x, cond=torch.tensor([1, 1]))
        assert not torch.allclose(other[:, 0], ref[:, 0], atol=1e-4)  # the class reaches token 0


@pytest.mark.parametrize("static", [False, True])  # decode_step_static: the fixed-shape step compile=True compiles
@pytest.mark.parametrize("p,n,local", SHAPES)
def test_cached_decoding_equals_recomputation(p, n, local, static):
    model = tiny_model(p, n, local)
    decode_step = model.decode_step_static if static else model.decode_step
    t_len = n * p
    x, cond = torch.randint(0, LEVELS, (2, t_len)), torch.tensor([1, 3])  # 3 = no condition
    with torch.no_grad():
        full = model(x, cond=cond)
        for start in sorted({0, 1, p, p + 1, t_len - 1}):  # empty prompt, mid-patch, patch boundary, last
            cache = model.new_cache(2)
            logits = model.prefill(x[:, :start], cond=cond, cache=cache)
            torch.testing.assert_close(logits, model.prefill(x[:, :start], cond=cond), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(logits, full[:, start], atol=1e-5, rtol=1e-5)
            for t in range(start, t_len - 1):
                logits = decode_step(x[:, t:t + 1], cache=cache)
                torch.testing.assert_close(logits, full[:, t + 1], atol=1e-4, rtol=1e-4, msg=f"{start}, {t}")
            assert cache.global_kv.static == cache.local_kv.static == (static and start < t_len - 1)
            with pytest.raises(ValueError, match="complete"):
                decode_step(x[:, -1:], cache=cache)


@pytest.mark.slow
def test_compiled_generate_gives_the_same_tokens():
    """generate(compile=True) on an image model: its two compiled steps (global, local), guided and not."""
    model = tiny_model(4, 6, 1)
    kw = dict(cond=torch.tensor([0, 2]), max_new_tokens=20)
    for options in ({"temperature": 0}, {"temperature": 0, "guidance": 2.0}):
        assert generate(model, [[], [3]], compile=True, **kw, **options) == generate(model, [[], [3]], **kw, **options)


@pytest.mark.parametrize("p,n,local", SHAPES[:2])
def test_cached_sampling_equals_uncached_under_the_same_seed(p, n, local):
    model = tiny_model(p, n, local)
    t_len = n * p
    cond = torch.tensor([0, 1, 2])
    kw = dict(cond=cond, max_new_tokens=t_len, seed=7, temperature=1.0)
    cached = generate(model, [[]] * 3, **kw)
    assert generate(model, [[]] * 3, use_cache=False, **kw) == cached
    assert generate(model, [[]] * 3, **(kw | {"seed": 8})) != cached  # the seed matters
    guided = generate(model, [[]] * 3, guidance=2.5, **kw)
    assert generate(model, [[]] * 3, guidance=2.5, use_cache=False, **kw) == guided
    assert guided != cached  # the guided rows are not the plain conditional ones
    prompts = [[1] * p, [2] * (p + 1), []]  # prompts of different lengths, across a patch boundary
    kw["max_new_tokens"] = t_len - p - 1
    assert generate(model, prompts, **kw) == generate(model, prompts, use_cache=False, **kw)


def test_guidance_one_equals_plain_conditional_sampling():
    model = tiny_model()
    codec = ImagePatchCodec(height=4, width=6, levels=LEVELS, patch_size=2, num_classes=3)  # N = 6, P = 4
    labels = torch.tensor([0, 1, 2, 2])
    plain = sample_tokens(model, codec, labels, seed=3)
    assert torch.equal(sample_tokens(model, codec, labels, seed=3, guidance=1.0), plain)
    assert not torch.equal(sample_tokens(model, codec, labels, seed=3, guidance=3.0), plain)
    assert plain.shape == (4, 24) and plain.min() >= 0 and plain.max() < LEVELS


def test_completion_keeps_the_prompt_rows():
    model = tiny_model()
    codec = ImagePatchCodec(height=4, width=6, levels=LEVELS, patch_size=2, num_classes=3)
    image = torch.randint(0, LEVELS, (1, 1, 4, 6))
    n = codec.prefix_length(2)  # the top 2 pixel rows = the first 3 patches
    prefix = codec.levels_to_tokens(image)[0, :n]
    out = sample_tokens(model, codec, torch.tensor([0, 1]), prefix=prefix, seed=0)
    assert out.shape == (2, 24) and torch.equal(out[:, :n], prefix.expand(2, -1))
    assert torch.equal(codec.tokens_to_levels(out)[:, :, :2], image[:, :, :2].expand(2, -1, -1, -1))


def test_class_ids_out_of_range_are_clear_errors():
    model = tiny_model(num_classes=3)
    codec = ImagePatchCodec(height=4, width=6, levels=LEVELS, patch_size=2, num_classes=3)
    with pytest.raises(ValueError, match=r"class ids \[5\] out of range; accepted: 0\.\.2"):
        sample_tokens(model, codec, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"class id\(s\) \[4\] out of range for num_classes=3; accepted: 0\.\.2, "
                                         r"or 3 for no condition"):
        model.prefill(torch.zeros(1, 0, dtype=torch.long), cond=torch.tensor([4]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 3, dtype=torch.long), cond=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny_model(num_classes=0)(torch.zeros(1, 3, dtype=torch.long), cond=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"unknown label 'seven'; accepted: class ids 0\.\.2 or names"):
        parse_labels(ImagePatchCodec(height=2, width=2, num_classes=3, class_names=["a", "b", "c"]), "seven")
    assert parse_labels(ImagePatchCodec(height=2, width=2, num_classes=3, class_names=["a", "b", "c"]),
                        ["c", 0, "1"]).tolist() == [2, 0, 1]


def test_bad_inputs_and_configs_name_the_problem():
    model = tiny_model()  # T = 24
    with pytest.raises(ValueError, match="whole image"):
        model.prefill(torch.zeros(1, 24, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 7\), got range \[0, 9\]"):
        model(torch.tensor([[0, 9]]))
    base = dict(vocab_size=5, num_patches=4, patch_tokens=2)
    for bad, match in [(dict(local_n_layer=-1), "local_n_layer must be an integer >= 0"),
                       (dict(n_embd=30, n_head=4), "n_embd=30 must be divisible by n_head=4"),
                       (dict(cond_dropout=1.0), r"cond_dropout must be in \[0, 1\)"),
                       (dict(kernel="flash"),
                        r"kernel='flash' is not accepted; choose one of \['auto', 'math', 'sdpa', 'chunked'\]"),
                       (dict(num_patches=0), "num_patches must be a positive integer")]:
        with pytest.raises(ValueError, match=match):
            ImageGPTConfig(**(base | bad))


def test_condition_dropout_replaces_the_class_in_training_only():
    model = tiny_model(cond_dropout=0.3, dropout=0.0)
    x = torch.randint(0, LEVELS, (1, 24)).expand(400, -1)
    with torch.no_grad():
        cond_logits = model(x[:1], cond=torch.tensor([1]))[0]
        null_logits = model(x[:1])[0]  # cond=None is the "no condition" class
        torch.testing.assert_close(null_logits, model(x[:1], cond=torch.tensor([3]))[0])
        model.train()
        out = model(x, cond=torch.ones(400, dtype=torch.long))
        model.eval()
    is_cond = torch.isclose(out, cond_logits, atol=1e-5).flatten(1).all(1)
    is_null = torch.isclose(out, null_logits, atol=1e-5).flatten(1).all(1)
    assert bool((is_cond ^ is_null).all())  # each row is one or the other
    assert 0.2 < float(is_null.float().mean()) < 0.4


def test_unconditional_model_samples_without_labels():
    model = tiny_model(num_classes=0)
    codec = ImagePatchCodec(height=4, width=6, levels=LEVELS, patch_size=2)
    out = sample_tokens(model, codec, None, num=3, seed=0)
    assert out.shape == (3, 24)
    with pytest.raises(ValueError, match="unconditional"):
        sample_tokens(model, codec, [0])


def test_initial_bits_per_dim_is_log2_levels(digits):
    torch.manual_seed(0)
    model = ImageGPT(ImageGPTConfig.for_codec(digits.codec, n_layer=2, n_embd=64, local_n_embd=32))
    levels, labels = digits.splits["val"]
    assert bits_per_dim(model, digits.codec, levels, labels) == pytest.approx(math.log2(17), abs=0.03)


def test_one_batch_overfits(digits):
    torch.manual_seed(0)
    model = ImageGPT(ImageGPTConfig.for_codec(digits.codec, n_layer=2, n_embd=64, local_n_layer=1,
                                              local_n_embd=32, cond_dropout=0.0)).train()
    batch = digits.make_batch(torch.Generator().manual_seed(0), 8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(batch["idx"], cond=batch["cond"]).flatten(0, 1), batch["targets"].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() / math.log(2) < 0.3  # from log2(17) = 4.09 bits/dim


# ---- evaluation --------------------------------------------------------------------------------------

def test_bits_per_dim_and_the_independent_pixel_baseline():
    codec = ImagePatchCodec(height=2, width=2, levels=4)
    train = torch.tensor([[[[0, 1], [2, 3]]], [[[0, 1], [2, 2]]]])  # (2, 1, 2, 2)
    test = torch.tensor([[[[0, 0], [2, 3]]]])
    # alpha=1: position (0,0) saw 0 twice -> p = 3/6; (0,1) saw 1 twice, test 0 -> 1/6; (1,0): 3/6; (1,1): 2/6
    expected = -np.log2([3 / 6, 1 / 6, 3 / 6, 2 / 6]).mean()
    assert independent_pixel_bits_per_dim(codec, train, test) == pytest.approx(expected)
    by_class = independent_pixel_bits_per_dim(codec, train, test, torch.tensor([0, 1]), torch.tensor([1]))
    assert by_class == pytest.approx(-np.log2([2 / 5, 1 / 5, 2 / 5, 1 / 5]).mean())
    # a model's bits/dim is its mean cross-entropy in bits
    model = tiny_model(p=4, n=1, num_classes=0)
    codec = ImagePatchCodec(height=2, width=2, levels=LEVELS, patch_size=2)
    levels = torch.randint(0, LEVELS, (5, 1, 2, 2))
    tokens = codec.levels_to_tokens(levels)
    with torch.no_grad():
        ce = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).item()
    assert bits_per_dim(model, codec, levels, batch_size=2) == pytest.approx(ce / math.log(2), rel=1e-5)


def test_classifier_learns_digits_and_fid_separates_noise(digits):
    f = lambda split: (digits.codec.dequantize(digits.splits[split][0].long()), digits.splits[split][1])
    (tr, ytr), (va, yva), (te, yte) = f("train"), f("val"), f("test")
    clf = train_classifier(tr, ytr, va, yva, epochs=5)
    assert classifier_accuracy(clf, te, yte) > 0.75  # 0.98 after 30 epochs (benchmarks/image_gpt.md)
    same = classifier_fid(clf, te, te)
    noise = classifier_fid(clf, te, torch.rand_like(te))
    assert abs(same) < 1e-2 and noise > 10 * max(classifier_fid(clf, te, va), 1.0)


# ---- training and sampling through the entry points --------------------------------------------------

@pytest.mark.parametrize("name", ["digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "image_folder"])
def test_data_configs_build_their_datamodule(name, tmp_path):
    cfg = compose_train([f"data={name}", "model=image_gpt", f"data.root={tmp_path}" if name == "image_folder"
                         else "data.batch_size=8"])
    dm = build_data(OmegaConf.to_container(cfg, resolve=True)["data"])
    assert dm.name == name and type(dm).__module__.startswith("zoo.data.image.")  # the image family package


@pytest.mark.parametrize("conditional,rows", [(True, 10), (False, 4)])
def test_fast_dev_run_of_image_gpt_digits(conditional, rows, tmp_path):
    cfg = compose_train(["experiment=image_gpt_digits", "trainer=debug", f"run_dir={tmp_path}", *TINY_IMAGE,
                         f"data.conditional={str(conditional).lower()}"])
    summary = run(cfg)
    assert math.isfinite(summary["metrics"]["train/loss"])
    assert summary["metrics"]["train/loss"] == pytest.approx(math.log(17), abs=0.1)
    grid, completion = summary["samples"].images
    # one row per class (4 rows unconditionally), 8 samples per row, 8×8 images upscaled 8×, 2-pixel borders
    assert Image.open(grid).size == (8 * 66 + 2, rows * 66 + 2)
    assert Image.open(completion).size == (8 * 66 + 2, 3 * 66 + 2)


def test_zoo_sample_command_writes_a_png_grid(tmp_path, capsys):
    summary = run(compose_train(["experiment=image_gpt_digits", f"run_dir={tmp_path / 'run'}", *TINY_IMAGE,
                                 "trainer.max_steps=2"]))
    model, codec, _ = model_from_checkpoint(summary["checkpoint"])
    member = member_for(codec)
    assert member.name == "image"
    opts = dict(labels=[3, "7"], num_samples=4, guidance=2.0, out=str(tmp_path / "out"), temperature=1.0,
                top_k=None, top_p=None, min_p=None, seed=0)
    done = member.sample(model, codec, opts)
    assert Image.open(tmp_path / "out" / "samples.png").size == (4 * 66 + 2, 2 * 66 + 2)
    assert "2 row(s) (3, 7) × 4 sample(s)" in done.describe() and done.value.shape == (8, 1, 8, 8)
    primer = tmp_path / "primer.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(primer)
    member.sample(model, codec, dict(opts, primer=str(primer), rows=4, labels=None))
    assert Image.open(tmp_path / "out" / "completion.png").size == (5 * 66 + 2, 10 * 66 + 2)
    for bad, match in [(dict(labels=10), r"class ids \[10\] out of range"),
                       (dict(prompt="x"), "`prompt` does not apply to image models"),
                       (dict(stop=["x"]), "`stop` does not apply to image models.*fixed number of tokens"),
                       (dict(max_new_tokens=5), "`max_new_tokens` does not apply to image models"),
                       (dict(guidance_scale=2), "unknown option 'guidance_scale'; did you mean 'guidance'"),
                       (dict(primer=str(primer), rows=3), "multiple of patch_size=2")]:
        with pytest.raises(ValueError, match=match):
            member.sample(model, codec, opts | bad)
    # zoo-sample's defaults for other members' inputs are dropped unless given on the command line
    member.sample(model, codec, opts | dict(stop=[], max_new_tokens=200), explicit={"labels", "num_samples"})


@pytest.mark.slow
def test_cli_train_then_sample_image_grid(tmp_path):
    r = run_cli(["zoo-train", "experiment=image_gpt_digits", *TINY_IMAGE], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "runs" / "image_gpt_digits" / "checkpoints" / "last.ckpt"
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "labels=[1,2]", "num_samples=3", "seed=0", "guidance=2",
                 f"out={tmp_path / 'grid'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(tmp_path / "grid" / "samples.png").size == (3 * 66 + 2, 2 * 66 + 2)
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", "labels=12"], cwd=tmp_path)
    assert r.returncode != 0 and "class ids [12] out of range; accepted: 0..9" in r.stderr
