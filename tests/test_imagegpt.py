"""OpenAI's ImageGPT through zoo: a tiny random `ImageGPTForCausalImageModeling` and its image processor, laid out
in an offline Hugging Face cache as openai/imagegpt-small, loaded by name into zoo's GPT (norm="rmsnorm",
activation="quick_gelu", untied head, start_token) and a colour-cluster codec; logits equal transformers'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_hf_hub import hf_cache, put_in_hf_cache  # noqa: F401  (hf_cache: a fixture)

import zoo
from zoo.codecs.base import codec_from_dict
from zoo.codecs.clusters import ColourClusterCodec
from zoo.hub.registry import HubError
from zoo.members.image import load_primer
from zoo.models.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

SIDE, CLUSTERS = 8, 16  # 8×8 images of 16 colours: n_positions 64, HF vocab 17 (the last id: start of image)


def _hf_imagegpt(folder, *, safe: bool = True):
    """A tiny random ImageGPT (2 layers, 32 wide, 4 heads) and its processor, saved to `folder`."""
    torch.manual_seed(0)
    config = transformers.ImageGPTConfig(vocab_size=CLUSTERS + 1, n_positions=SIDE * SIDE, n_embd=32, n_layer=2,
                                         n_head=4)
    model = transformers.ImageGPTForCausalImageModeling(config).eval()
    with torch.no_grad():  # norm gains away from 1, so that a norm mix-up shows
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.uniform_(0.5, 1.5)
    clusters = np.random.RandomState(0).uniform(-1, 1, (CLUSTERS, 3)).astype(np.float32)
    processor = transformers.ImageGPTImageProcessor(clusters=clusters, size={"height": SIDE, "width": SIDE})
    model.save_pretrained(folder)
    if not safe:  # the Hub's openai/imagegpt-* hold only a pickle: read with weights_only=True
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """(model, processor, folder with model.safetensors, folder with only pytorch_model.bin)."""
    safe, pickled = tmp_path_factory.mktemp("igpt_safe"), tmp_path_factory.mktemp("igpt_bin")
    model, processor = _hf_imagegpt(safe)
    _hf_imagegpt(pickled, safe=False)
    assert (pickled / "pytorch_model.bin").is_file() and not (pickled / "model.safetensors").exists()
    return model, processor, safe, pickled


@pytest.fixture
def cached(hf_cache, hf_folders):  # noqa: F811
    """openai/imagegpt-small in an offline Hugging Face cache, holding only pytorch_model.bin (as the Hub repo)."""
    put_in_hf_cache(hf_cache, "openai/imagegpt-small", hf_folders[3])
    return hf_folders[0], hf_folders[1]


def test_by_name_and_hf_logits_equal_transformers(cached):
    hf_model, _ = cached
    x = torch.randint(0, CLUSTERS, (3, SIDE * SIDE), generator=torch.Generator().manual_seed(1))
    sos = torch.full((3, 1), CLUSTERS)
    with torch.no_grad():
        want = hf_model(torch.cat([sos, x[:, :-1]], 1)).logits  # (3, 64, 16): HF reads SOS, predicts pixels
        for name in ("imagegpt-small", "hf:openai/imagegpt-small"):
            m = zoo.load(name)
            assert isinstance(m.model, GPT) and isinstance(m.codec, ColourClusterCodec)
            c = m.model.config
            assert (c.norm, c.activation, c.tie_weights, c.start_token, c.vocab_size) == \
                ("rmsnorm", "quick_gelu", False, True, CLUSTERS)
            torch.testing.assert_close(m.model(x), want, atol=1e-5, rtol=0)


def test_cached_decoding_equals_full_forward(hf_folders):
    m = zoo.load(str(hf_folders[2]))  # a save_pretrained folder, safetensors
    x = torch.randint(0, CLUSTERS, (2, SIDE * SIDE), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m.model(x)  # (2, 64, 16)
        cache = m.model.new_cache(2)
        steps = [m.model.prefill(x[:, :0], cache=cache)]  # the start token alone
        steps += [m.model.decode_step(x[:, t:t + 1], cache=cache) for t in range(SIDE * SIDE - 1)]
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)
        cache = m.model.new_cache(2)  # the fixed-shape step (compile=True's) after the same prefill
        steps = [m.model.prefill(x[:, :0], cache=cache)]
        steps += [m.model.decode_step_static(x[:, t:t + 1], cache=cache) for t in range(SIDE * SIDE - 1)]
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(m.model.prefill(x[:, :10]), full[:, 10], atol=1e-5, rtol=0)  # no cache


def test_codec_matches_the_processor_and_round_trips(hf_folders):
    _, processor, folder, _ = hf_folders
    codec = zoo.load(str(folder)).codec
    pixels = np.random.RandomState(3).randint(0, 256, (4, SIDE, SIDE, 3), dtype=np.uint8)
    want = processor([Image.fromarray(p) for p in pixels], return_tensors="pt")["input_ids"]  # (4, 64)
    got = codec.levels_to_tokens(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert torch.equal(got, want)
    ids = torch.randint(0, CLUSTERS, (SIDE * SIDE,), generator=torch.Generator().manual_seed(4))
    image = codec.decode(ids)  # (3, 8, 8) in [0, 1]: every pixel a cluster colour
    assert codec.encode(image) == ids.tolist()
    assert codec.prefix_length(3) == 3 * SIDE  # one token per pixel: 3 rows
    assert codec_from_dict(codec.to_dict()).to_dict() == codec.to_dict()


def test_samples_and_completes_a_photo_through_the_image_member(hf_folders, tmp_path):
    m = zoo.load(str(hf_folders[2]))
    images = m.generate(num_samples=3, seed=0, top_k=5, temperature=0.9, out=tmp_path / "s.png")
    assert images.shape == (3, 3, SIDE, SIDE) and (tmp_path / "s.png").is_file()
    assert Image.open(tmp_path / "s.png").size[0] >= 3 * 64  # each image shown at least 64 pixels wide
    photo = np.random.RandomState(5).randint(0, 256, (30, 50, 4), dtype=np.uint8)  # RGBA, not square
    Image.fromarray(photo, "RGBA").save(tmp_path / "photo.png")
    samples = m.sample({"primer": str(tmp_path / "photo.png"), "rows": 4, "num_samples": 2, "seed": 0,
                        "out": str(tmp_path)})
    assert any("resized and centre-cropped" in line and "50x30" in line for line in samples.lines)
    primer, _ = load_primer(m.codec, tmp_path / "photo.png")
    done = m.codec.images_to_tokens(samples.value)  # (2, 64): both keep the primer's top 4 rows
    assert torch.equal(done[:, :4 * SIDE], primer[:4 * SIDE].expand(2, -1))


def test_export_and_reload_keep_the_logits(hf_folders, tmp_path):
    from zoo.hub.export import export

    m = zoo.load(str(hf_folders[2]))
    export(m, tmp_path / "exp", dtype="float32")
    back = zoo.load(str(tmp_path / "exp"))
    x = torch.randint(0, CLUSTERS, (1, SIDE * SIDE))
    assert isinstance(back.codec, ColourClusterCodec)
    torch.testing.assert_close(back.model(x), m.model(x), atol=0, rtol=0)


def test_start_token_config_and_refusals(tmp_path):
    with pytest.raises(ValueError, match="tie_weights=False"):
        GPTConfig(vocab_size=16, start_token=True)
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, start_token=True,
                          tie_weights=False))
    assert model.transformer.wte.weight.shape[0] == 17 and model.lm_head.weight.shape[0] == 16
    with pytest.raises(HubError, match="preprocessor_config.json"):
        folder = tmp_path / "no_processor"
        transformers.ImageGPTForCausalImageModeling(transformers.ImageGPTConfig(
            vocab_size=5, n_positions=4, n_embd=8, n_layer=1, n_head=2)).save_pretrained(folder)
        zoo.load(str(folder))


def test_fine_tunes_on_an_image_folder_with_lora_and_exports(cached, tmp_path):
    """zoo-train init_from=imagegpt-small data=image_folder (LoRA): the data is encoded with the source's clusters;
    the export re-measures the run's val loss and reloads with the colour-cluster codec."""
    from helpers import TINY_RUN, compose_train

    from zoo.hub.export import export_checkpoint
    from zoo.train import run
    from zoo.training.checkpoint import read_checkpoint

    pics = tmp_path / "pics"
    pics.mkdir()
    rs = np.random.RandomState(6)
    for i in range(24):  # any size: brought to the model's 8×8
        Image.fromarray(rs.randint(0, 256, (12, 10, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    overrides = [*TINY_RUN, "init_from=imagegpt-small", "data=image_folder", f"data.root={pics}", "data.height=8",
                 "data.width=8", "data.batch_size=4", f"run_dir={tmp_path / 'ft'}", "lora.rank=2"]
    summary = run(compose_train(overrides), overrides=overrides)
    meta = read_checkpoint(summary["checkpoint"])["zoo"]
    assert meta["codec"]["type"] == "colour_clusters" and meta["lora"]["rank"] == 2
    out = export_checkpoint(summary["checkpoint"], tmp_path / "exp", dtype="float32")
    back = zoo.load(str(out))
    assert isinstance(back.codec, ColourClusterCodec) and back.card["metric_value"] > 0
    assert back.generate(num_samples=2, seed=0).shape == (2, 3, SIDE, SIDE)


def test_zoo_serve_offers_an_unconditional_image_model_without_labels_or_guidance(cached):
    pytest.importorskip("fastapi", reason="zoo-serve needs the [serve] extra")
    from fastapi.testclient import TestClient

    from zoo.serve import ServeSettings, create_app, load_models

    with TestClient(create_app(load_models(["imagegpt-small"]), ServeSettings(timeout_s=60))) as client:
        listed = client.get("/v1/models").json()["data"][0]
        assert listed["member"] == "image" and list(listed["inputs"]) == ["num_samples"]
        assert "guidance" not in listed["options"] and "top_k" in listed["options"]
        r = client.post("/v1/generate", json={"model": "imagegpt-small", "num_samples": 2, "seed": 0, "top_p": 0.9})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["shape"] == [2, 3, SIDE, SIDE]
