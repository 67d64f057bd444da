"""Style-conditioned Music Transformer: the condition in the model (every position, cache, guidance), the
codec's style names, the music21 style corpus (labels, balance, eval windows), sampling by style."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from tests.helpers import TINY, compose_train
from zoo.codecs.base import codec_from_dict
from zoo.codecs.midi import PerformanceCodec
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
from zoo.sampling import SamplingConfig, generate, generate_sliding


def tiny(num_classes: int = 3, **kw) -> MusicTransformer:
    torch.manual_seed(0)
    cfg = MusicTransformerConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                                 num_classes=num_classes, **kw)
    return MusicTransformer(cfg).double().eval()


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("bias,position", [("relative", "none"), ("none", "learned")])
def test_cached_and_static_decoding_keep_the_condition(bias, position):
    m = tiny(bias=bias, position=position)
    x, c = torch.randint(3, 40, (3, 20)), torch.tensor([0, 2, 3])  # 3 = no condition
    full = m(x, cond=c)
    for step in ("decode_step", "decode_step_static"):
        cache = m.new_cache(3, 32)
        outs = [m.prefill(x[:, :8], cond=c, cache=cache)]
        outs += [getattr(m, step)(x[:, t:t + 1], cache=cache, cond=c) for t in range(8, 19)]  # every step
        torch.testing.assert_close(torch.stack(outs, 1), full[:, 7:19], rtol=0, atol=1e-12)
        assert not hasattr(cache, "cond")  # the condition is the model's, never the attention core's


def test_cached_sampling_gives_every_step_its_rows_condition():
    """`generate` passes each row's condition to prefill and to every decode step (and, guided, the model's
    own "no style" to the second half): cached sampling equals recomputing each prefix with its condition."""
    m = tiny()
    with torch.no_grad():
        m.transformer.cls.weight.mul_(100)  # a condition strong enough to decide every token
    cond, prompts = torch.tensor([0, 1, 2]), [[1], [1], [1]]
    for guidance in (None, 2.0):
        cfg = SamplingConfig(max_new_tokens=12, temperature=0.0, guidance=guidance)
        cached = generate(m, prompts, cfg, cond=cond)
        assert cached == generate(m, prompts, cfg, cond=cond, use_cache=False), guidance
        assert len({tuple(r) for r in cached}) == 3  # each style its own piece


def test_the_condition_changes_every_position_and_none_means_the_last_id():
    m = tiny()
    x = torch.randint(3, 40, (2, 12))
    a, b = m(x, cond=torch.tensor([0, 0])), m(x, cond=torch.tensor([1, 1]))
    assert (a - b).abs().amax(-1).min() > 0  # every position sees the style
    torch.testing.assert_close(m(x), m(x, cond=torch.tensor([3, 3])), rtol=0, atol=0)
    assert set(m.state_dict()) - set(tiny(0).state_dict()) == {"transformer.cls.weight"}
    assert m.state_dict()["transformer.cls.weight"].shape == (4, 16)


def test_cond_dropout_only_in_training():
    m = tiny(cond_dropout=0.5)
    x, c = torch.randint(3, 40, (64, 6)), torch.zeros(64, dtype=torch.long)
    assert torch.equal(m(x, cond=c), m(x, cond=c))  # eval: deterministic, no dropout
    m.train()
    torch.manual_seed(1)
    out = m(x, cond=c)
    dropped = torch.isclose(out, m.eval()(x, cond=torch.full((64,), 3))).all(-1).all(-1)
    assert 15 < int(dropped.sum()) < 49  # about half the rows read "no condition"


def test_bad_conditions_are_named():
    with pytest.raises(ValueError, match="unconditional"):
        tiny(0)(torch.ones(1, 3, dtype=torch.long), cond=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"class id\(s\) \[7\] out of range for num_classes=3; accepted: 0..2, or 3"):
        tiny()(torch.ones(1, 3, dtype=torch.long), cond=torch.tensor([7]))
    with pytest.raises(ValueError, match="shape"):
        tiny()(torch.ones(2, 3, dtype=torch.long), cond=torch.tensor([0]))
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        MusicTransformerConfig(num_classes=-1)
    with pytest.raises(ValueError, match="cond_dropout"):
        MusicTransformerConfig(num_classes=2, cond_dropout=1.0)


def test_guidance_matches_the_formula_and_sliding_windows_keep_the_style():
    m = tiny()
    cond, uncond = torch.tensor([1]), m.null_condition(1)
    assert uncond.tolist() == [3]  # the model's own "no style": num_classes
    g = 2.5
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0, guidance=g)
    got = generate(m, [[1]], cfg, cond=cond)[0]
    seq = [1]
    for _ in range(6):  # greedy on u + g (c - u), recomputed from scratch
        x = torch.tensor([seq])
        c, u = m(x, cond=cond)[0, -1], m(x, cond=uncond)[0, -1]
        seq.append(int((u + g * (c - u)).argmax()))
    assert got == seq[1:]
    # Past the context: each window is conditioned on its row's style (rows of different styles differ,
    # and a row equals its own style sampled alone).
    cfg = SamplingConfig(max_new_tokens=50, temperature=0.0, guidance=g)
    both = generate_sliding(m, [[1], [1]], cfg, cond=torch.tensor([0, 2]))
    alone = generate_sliding(m, [[1]], cfg, cond=torch.tensor([2]))
    assert both[1] == alone[0] and len(alone[0]) == 50


# ------------------------------------------------------------------------------------------------ codec
def test_codec_carries_style_names_and_old_state_still_loads():
    codec = PerformanceCodec(styles=["bach", "irish"])
    again = codec_from_dict(json.loads(json.dumps(codec.to_dict())))
    assert again.styles == ["bach", "irish"] and again.num_classes == 2
    plain = PerformanceCodec()
    assert "styles" not in plain.to_dict() and plain.num_classes == 0  # older checkpoints' state, unchanged
    for bad in ([], ["a", "a"], "bach"):
        with pytest.raises(ValueError, match="styles must be"):
            PerformanceCodec(styles=bad)


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def corpus_data(tmp_path_factory):
    pytest.importorskip("music21")
    from zoo.data.music import StyleCorpusDataModule

    dm = StyleCorpusDataModule(styles=["palestrina", "bach"], max_pieces=4, block_size=64, batch_size=8,
                               val_fraction=0.25, test_fraction=0.0,
                               cache_dir=tmp_path_factory.mktemp("cache"))
    dm.setup()
    return dm


def test_style_corpus_labels_batches_and_balance(corpus_data):
    dm = corpus_data
    assert dm.codec.styles == ["palestrina", "bach"] and dm.codec.num_classes == 2
    for split in ("train", "val"):
        assert dm.labels[split] == [["palestrina", "bach"].index(n.split("/")[0]) for n in dm.names[split]]
    assert sorted(set(dm.labels["train"])) == [0, 1]
    # Balanced: each style's training pieces weigh the same in total, whatever their lengths.
    labels = torch.tensor(dm.labels["train"])
    totals = [float(dm._train_weights[labels == s].sum()) for s in (0, 1)]
    assert totals == pytest.approx([1.0, 1.0])
    g = torch.Generator().manual_seed(0)
    batch = dm.make_batch(g, 8)
    assert batch["cond"].shape == (8,) and batch["cond"].dtype == torch.long
    # Each row's condition is the style of the piece its window came from: re-draw and compare.
    g = torch.Generator().manual_seed(0)
    picks = torch.multinomial(dm._train_weights, 8, replacement=True, generator=g).tolist()
    assert batch["cond"].tolist() == [dm.labels["train"][i] for i in picks]
    # Evaluation windows: every window of a validation piece carries that piece's style
    windows = dm.eval_windows("val")
    per_piece = [(label, len(range(0, len(seq) - 1, dm.block_size)))
                 for seq, label in zip(dm.sequences["val"], dm.labels["val"])]
    assert sorted({label for label, _ in per_piece}) == [0, 1]  # both styles, so a mix-up would show
    assert [int(w["cond"]) for w in windows] == [label for label, n in per_piece for _ in range(n)]
    # The condition is the base class's `_cond` hook: the windows are drawn by the shared code, not a copy of it.
    assert not {"make_batch", "eval_windows"} & set(vars(type(dm)))


def test_style_corpus_refuses_unknown_styles_and_codec_disagreement():
    pytest.importorskip("music21")
    from zoo.data.music import StyleCorpusDataModule

    with pytest.raises(ValueError, match="unknown: \\['jazz'\\]"):
        StyleCorpusDataModule(styles=["bach", "jazz"])
    with pytest.raises(ValueError, match="disagrees"):
        StyleCorpusDataModule(styles=["bach"], codec={"styles": ["irish"]})
    with pytest.raises(ValueError, match="max_pieces"):
        StyleCorpusDataModule(styles=["bach"], max_pieces_by_style={"irish": 3})


def test_experiment_config_leaves_num_classes_to_the_codec():  # the trained model's: test_train_then_sample_by_style
    cfg = compose_train(["experiment=music_transformer_styles"])
    assert cfg.model.num_classes is None and cfg.data.styles[0] == "bach" and cfg.samples.guidance == 4.0


# ------------------------------------------------------------------------------------------------ sampling
@pytest.fixture(scope="module")
def styles_run(tmp_path_factory, corpus_data):
    """A tiny style-conditioned run on two styles (trained once for the tests below)."""
    from zoo.train import run

    folder = tmp_path_factory.mktemp("styles") / "run"
    run(compose_train(["experiment=music_transformer_styles", *TINY, "data.styles=[palestrina,bach]",
                       "data.max_pieces=4", "data.val_fraction=0.25", "data.test_fraction=0",
                       f"data.cache_dir={corpus_data.cache_dir}", f"run_dir={folder}", "samples.max_new_tokens=40"]))
    return folder


@pytest.mark.slow
def test_train_then_sample_by_style(tmp_path, styles_run):
    import zoo

    ckpt = styles_run / "checkpoints" / "last.ckpt"
    model = zoo.load(str(ckpt))
    assert model.model.config.num_classes == 2
    pms = model.generate(style=["bach", "palestrina"], guidance=2.0, num_samples=2, max_new_tokens=30, seed=0,
                         out=str(tmp_path / "out"))
    assert len(pms) == 4
    names = sorted(p.name for p in (tmp_path / "out").glob("*.mid"))
    assert names == ["bach_00.mid", "bach_01.mid", "palestrina_00.mid", "palestrina_01.mid"]
    with pytest.raises(ValueError, match="unknown style 'bahc' \\(did you mean 'bach'\\?\\)"):
        model.generate(style="bahc")
    samples = sorted(p.name for p in (styles_run / "samples").glob("*.mid"))
    assert samples == ["step_000004_scratch_bach.mid", "step_000004_scratch_palestrina.mid"]


@pytest.fixture(scope="module")
def shipped_styles():
    """The shipped six-style checkpoint (music-transformer-styles, 1M parameters, default guidance 4)."""
    import zoo

    return zoo.load("music-transformer-styles")


def notes(pm) -> list[tuple]:
    return [(n.pitch, n.velocity, round(n.start, 4), round(n.end, 4)) for i in pm.instruments for n in i.notes]


def spy_prefill(model, monkeypatch) -> list[tuple[int, list | None]]:
    """Records (rows, condition ids) of every prefill: guidance shows as a doubled batch with "no style" ids."""
    calls, real = [], model.prefill

    def prefill(x, *args, cond=None, **kwargs):
        calls.append((x.shape[0], None if cond is None else cond.tolist()))
        return real(x, *args, cond=cond, **kwargs)

    monkeypatch.setattr(model, "prefill", prefill)
    return calls


def test_guidance_is_not_used_without_a_style(shipped_styles, monkeypatch):
    """Without style= the checkpoint's default guidance (4) and an explicit one are not applied: the model
    runs once per row with no condition (no guided second half), and the pieces are those of guidance=1."""
    m = shipped_styles
    assert m.generation["guidance"] == 4.0  # the default that must not apply here
    calls = spy_prefill(m.model, monkeypatch)
    opts = {"max_new_tokens": 24, "num_samples": 2, "seed": 0}
    plain = m.generate(guidance=1, **opts)
    assert calls and all(c == (2, None) for c in calls), calls
    calls.clear()
    for guidance in ({}, {"guidance": 3.0}):  # the checkpoint's default, an explicit one
        got = m.generate(**guidance, **opts)
        assert calls and all(c == (2, None) for c in calls), (guidance, calls)
        assert [notes(pm) for pm in got] == [notes(pm) for pm in plain], guidance
        calls.clear()
    said = m.member.sample(m.model, m.codec, {"guidance": 3.0, "max_new_tokens": 4})
    assert any("guidance=3 not used: no style= given" in line for line in said.lines), said.lines
    calls.clear()
    # ... while with a style the same call is guided: rows doubled, the style then "no style" (id 6)
    m.generate(style="bach", **opts)
    assert calls and all(c == (4, [0, 0, 6, 6]) for c in calls), calls


def test_zoo_sample_style_all_writes_one_piece_per_style(shipped_styles, tmp_path):
    """README's `zoo-sample ... style=all guidance=4 out=samples/`: num_samples pieces per style, named
    <style>_NN.mid, each the piece its own style gives (greedy, so a style sampled alone must match)."""
    from tests.helpers import run_cli

    styles = shipped_styles.codec.styles
    r = run_cli(["zoo-sample", "checkpoint=music-transformer-styles", "style=all", "guidance=4", "out=samples/",
                 "num_samples=2", "max_new_tokens=24", "temperature=0", "render_audio=false"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    written = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert written == sorted(f"{s}_{i:02d}.mid" for s in styles for i in range(2))
    assert all(f"[{s}]" in r.stdout for s in styles), r.stdout
    import pretty_midi

    from_cli = {s: notes(pretty_midi.PrettyMIDI(str(tmp_path / "samples" / f"{s}_00.mid"))) for s in styles}
    # The Python API's style="all": one piece per style, in the codec's order, the same pieces
    pms = shipped_styles.generate(style="all", guidance=4, max_new_tokens=24, temperature=0, out=tmp_path / "api")
    assert len(pms) == len(styles)
    for s in styles:
        alone = shipped_styles.generate(style=s, guidance=4, max_new_tokens=24, temperature=0,
                                        out=tmp_path / "alone" / f"{s}.mid")
        assert notes(pretty_midi.PrettyMIDI(str(tmp_path / "alone" / f"{s}.mid"))) == from_cli[s], s
        assert notes(pretty_midi.PrettyMIDI(str(tmp_path / "api" / f"{s}_00.mid"))) == from_cli[s], s
        assert notes(alone) == notes(pms[styles.index(s)])
    assert len({tuple(n) for n in from_cli.values()}) > 1  # the styles give different pieces


# ------------------------------------------------------------------------------------------------ classifier
def _synthetic(style: int, rng) -> np.ndarray:
    """Style 0: a fast monophonic line; style 1: slow four-note chords. Random key and tempo jitter."""
    key, rows, t = int(rng.integers(0, 12)), [], 0.0
    for _ in range(24):
        if style == 0:
            d = 0.15 * rng.uniform(0.8, 1.2)
            rows.append((t, t + d, 60 + key + int(rng.choice([0, 2, 4, 5, 7])), 80))
        else:
            d = 1.0 * rng.uniform(0.8, 1.2)
            rows += [(t, t + d, 48 + key + p, 70) for p in (0, 7, 12, 16)]
        t += d
    return np.array(rows, dtype=np.float64)


def test_style_classifier_separates_styles_and_ignores_transposition():
    from zoo.eval.style_classifier import NUM_FEATURES, style_features, train_style_classifier

    rng = np.random.default_rng(0)
    pieces = [_synthetic(s, rng) for s in (0, 1) for _ in range(30)]
    labels = [s for s in (0, 1) for _ in range(30)]
    clf = train_style_classifier(pieces, labels, ["line", "chords"], steps=200)
    test = [_synthetic(s, rng) for s in (0, 1) for _ in range(10)]
    assert clf.accuracy(test, [0] * 10 + [1] * 10) == 1.0
    f = style_features(pieces[0])
    assert f.shape == (NUM_FEATURES,) and np.isfinite(f).all()
    up = pieces[0].copy()
    up[:, 2] += 5  # the pitch-class profile is rotated to its strongest class: a transposition keeps it
    np.testing.assert_allclose(style_features(up)[:12], f[:12])
    assert not style_features(np.zeros((0, 4))).any()
    with pytest.raises(ValueError, match="at least 2 styles"):
        train_style_classifier(pieces[:3], [0, 0, 0], ["a", "b"])


@pytest.mark.slow
def test_serve_takes_a_style(styles_run, tmp_path):
    pytest.importorskip("fastapi")
    import pretty_midi
    from fastapi.testclient import TestClient

    import zoo
    from zoo.serve import ServeSettings, create_app, load_models

    models = load_models([f"styles={styles_run / 'checkpoints' / 'last.ckpt'}"])
    with TestClient(create_app(models, ServeSettings(timeout_s=60))) as client:
        entry = {m["name"]: m for m in client.get("/v1/models").json()["data"]}["styles"]
        assert {"style", "primer"} <= set(entry["inputs"]) and "palestrina" in entry["inputs"]["style"]["description"]
        assert entry["options"]["guidance"]["default"] == 4.0  # the checkpoint's default
        ok = client.post("/v1/generate", json={"model": "styles", "style": "bach", "guidance": 2,
                                               "max_new_tokens": 16, "seed": 0, "audio": False})
        assert ok.status_code == 200, ok.text
        (tmp_path / "served.mid").write_bytes(base64.b64decode(ok.json()["result"]["midi"]))
        zoo.load(str(styles_run / "checkpoints" / "last.ckpt")).generate(
            style="bach", guidance=2, max_new_tokens=16, seed=0, out=str(tmp_path / "api.mid"))
        assert notes(pretty_midi.PrettyMIDI(str(tmp_path / "served.mid"))) == \
            notes(pretty_midi.PrettyMIDI(str(tmp_path / "api.mid")))
        # Without a style the default guidance (4) is not used: the piece is the unguided one of the same seed
        unstyled = [client.post("/v1/generate", json={"model": "styles", "max_new_tokens": 12, "seed": 3,
                                                      "audio": False, **g})
                    for g in ({}, {"guidance": None}, {"guidance": 1})]
        assert [r.status_code for r in unstyled] == [200] * 3, unstyled[0].text
        assert len({r.json()["result"]["midi"] for r in unstyled}) == 1
        bad = client.post("/v1/generate", json={"model": "styles", "style": "jazz", "max_new_tokens": 4})
        assert bad.status_code == 422 and "style" in bad.text and "palestrina" in bad.text
