"""Music Transformer: config, causality, cached == recomputed decoding with the relative kernel,
sliding-window sampling, training recipes end to end, valid MIDI out, and zoo-sample for music.

Cached and full decoding are compared in float64 (the two differ only by summation order there), so
greedy tokens must be identical and logits agree to 1e-10.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile
import torch
from helpers import TINY, compose_train, run_cli
from PIL import Image

from zoo.codecs.jsb import JSBGridCodec
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import load_midi, notes_to_midi
from zoo.members import member_for
from zoo.members.music import ids_to_midi
from zoo.models.base import MODELS, build_model
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
from zoo.sampling import SamplingConfig, generate, generate_sliding
from zoo.train import run

PERF = PerformanceCodec()


def tiny(seed: int = 0, std: float = 0.3, dtype: torch.dtype = torch.float64, **overrides) -> MusicTransformer:
    """A small random model in eval mode; weights redrawn with `std` so greedy decoding is varied."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=PERF.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32, dropout=0.0) | overrides
    model = MusicTransformer(MusicTransformerConfig(**cfg)).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model


def assert_valid_midi(path: Path) -> list[pretty_midi.Note]:
    """The file re-opens with pretty_midi, every note is in range with positive length, and at the
    message level every note-on is closed by a note-off of the same channel and pitch."""
    pm = pretty_midi.PrettyMIDI(str(path))
    notes = [n for inst in pm.instruments for n in inst.notes]
    for n in notes:
        assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.end > n.start, n
    for track in mido.MidiFile(str(path)).tracks:
        sounding: Counter = Counter()
        for msg in track:
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[msg.channel, msg.note] += 1
            elif msg.type in ("note_on", "note_off"):
                assert sounding[msg.channel, msg.note] > 0, f"note-off without note-on: {msg}"
                sounding[msg.channel, msg.note] -= 1
        assert not +sounding, f"note-ons never closed: {dict(+sounding)}"
    return notes


# ------------------------------------------------------------------------------------------ model
def test_registered_with_music_defaults_and_validated():
    assert MODELS["music_transformer"] == (MusicTransformerConfig, MusicTransformer)
    cfg = MusicTransformerConfig()
    assert (cfg.bias, cfg.kernel, cfg.position, cfg.max_relative_position) == ("relative", "auto", "none",
                                                                              cfg.block_size)
    model = build_model("music_transformer", dict(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16))
    assert model.model_type == "music_transformer"
    assert "transformer.wpe.weight" not in model.state_dict()  # no absolute positions
    assert model.state_dict()["transformer.h.1.attn.er"].shape == (2, 32, 8)  # (H, L, D) per layer
    with pytest.raises(ValueError, match="bias='none' with position='none' gives the model no position"):
        MusicTransformerConfig(bias="none")
    with pytest.raises(ValueError, match="max_relative_position is only used with bias='relative'"):
        MusicTransformerConfig(bias="none", position="learned", max_relative_position=8)
    with pytest.raises(ValueError, match=r"kernel='relativ' is not accepted; choose one of"):
        MusicTransformerConfig(kernel="relativ")
    with pytest.raises(ValueError, match=r"unknown music_transformer config key\(s\) \['n_layers'\]"):
        build_model("music_transformer", dict(n_layers=2))


@pytest.mark.parametrize("overrides", [{}, dict(max_relative_position=5), dict(bias="none", position="learned")])
def test_causality_future_tokens_leave_past_logits_unchanged(overrides):
    model = tiny(**overrides)
    x = torch.randint(3, PERF.vocab_size, (2, 40))
    y = x.clone()
    y[:, 25:] = torch.randint(3, PERF.vocab_size, (2, 15))
    a, b = model(x), model(y)
    assert torch.equal(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


@pytest.mark.parametrize("max_rel", [None, 7])
def test_cached_decoding_equals_full_recomputation_through_sampling(max_rel):
    model = tiny(max_relative_position=max_rel)
    prompts = [[1, 300, 70, 266], [1], [1, 300, 60, 190, 262, 72]]  # different lengths in one batch
    cached = generate(model, prompts, max_new_tokens=30, temperature=0)
    full = generate(model, prompts, max_new_tokens=30, temperature=0, use_cache=False)
    assert cached == full
    assert all(len(r) == 30 for r in cached) and len({t for r in cached for t in r}) > 5  # varied, not stuck
    # the logits themselves, step by step
    seq = torch.tensor([prompts[2] + cached[2]])
    reference = model(seq)  # (1, T, V)
    cache = model.new_cache(1)
    steps = [model.prefill(seq[:, :6], cache=cache)]
    steps += [model.decode_step(seq[:, t:t + 1], cache=cache) for t in range(6, seq.shape[1] - 1)]
    torch.testing.assert_close(torch.stack(steps, 1), reference[:, 5:-1], atol=1e-10, rtol=1e-10)


def test_sliding_window_continues_past_the_context_on_voice_boundaries(monkeypatch):
    import zoo.sampling.loop as sampling  # generate_sliding calls the loop module's generate

    model = tiny(vocab_size=50, block_size=32)
    calls: list[list[list[int]]] = []  # per window: the context of each row

    def spy(m, prompts, cfg, **kw):
        calls.append([list(p) for p in prompts])
        return generate(m, prompts, cfg, **kw)

    monkeypatch.setattr(sampling, "generate", spy)
    prompt = [1, *range(4, 12)]
    cfg = SamplingConfig(max_new_tokens=100, temperature=1.0, seed=3)
    out = generate_sliding(model, [prompt, prompt], cfg, align=4)
    assert [len(r) for r in out] == [100, 100]
    assert calls[0] == [prompt, prompt] and len(calls) > 2  # several windows
    done = len(prompt) + sum(32 - len(c[0]) for c in calls[:1])  # sequence length before window 1
    for contexts in calls[1:]:
        for row, ctx in zip(out, contexts):
            full = prompt + row
            # the tail of the sequence so far, at most half the context, starting a whole number of
            # 4-token steps into the framed sequence (token t is voice t mod 4 in every window)
            assert 0 < len(ctx) <= 16 and (done - len(ctx)) % 4 == 0
            assert full[done - len(ctx):done] == ctx
        done += 32 - len(contexts[0])
    monkeypatch.setattr(sampling, "generate", generate)
    assert generate_sliding(model, [prompt], cfg, align=4) == generate_sliding(model, [prompt], cfg, align=4)  # seeded
    stopped = generate_sliding(model, [prompt], SamplingConfig(max_new_tokens=100, temperature=1.0, seed=3,
                                                           stop_tokens=tuple(range(50))), align=4)
    assert len(stopped[0]) == 1  # every id is a stop token: one token, then the row ends


# ------------------------------------------------------------------------------------------ samples
@pytest.mark.parametrize("codec", [PERF, JSBGridCodec()], ids=["performance", "jsb"])
def test_samples_decode_to_valid_midi_that_reopens(codec, tmp_path):
    model = tiny(vocab_size=codec.vocab_size, block_size=64, std=0.1)
    rows = generate_sliding(model, [[codec.bos_id]] * 3, SamplingConfig(max_new_tokens=150, seed=0), align=1)
    total = 0
    for i, ids in enumerate(rows):
        pm = ids_to_midi(codec, [codec.bos_id, *ids])
        path = tmp_path / f"s{i}.mid"
        pm.write(str(path))
        notes = assert_valid_midi(path)
        total += len(notes)
        assert len(notes) == sum(len(inst.notes) for inst in pm.instruments)
    assert total > 0
    with pytest.raises(ValueError, match="not a music codec"):
        ids_to_midi(object.__new__(type("T", (), {"type_name": "char"})), [1])


def song(path: Path, seconds: float = 4.0) -> Path:
    """A little C-major arpeggio of 8th notes, written as a MIDI file."""
    pitches = [60, 64, 67, 72, 67, 64] * int(seconds)
    notes = np.array([(i * 0.25, i * 0.25 + 0.24, p, 80) for i, p in enumerate(pitches) if i * 0.25 < seconds])
    notes_to_midi(notes).write(str(path))
    return path


def options(**kw) -> dict:
    base = dict(num_samples=2, max_new_tokens=40, temperature=1.0, top_k=None, top_p=None, min_p=None,
                repetition_penalty=1.0, seed=0, primer=None, render_audio=True, out="samples")
    return base | kw


def sample_command(model, codec, opts: dict) -> None:
    """What zoo-sample does with the options: ask the codec's member, print what it reports."""
    print(member_for(codec).sample(model, codec, opts).describe())


def test_sample_command_continues_a_primer_cropped_to_the_context(tmp_path, capsys):
    model = tiny(block_size=64, std=0.1)
    primer = song(tmp_path / "song.mid", seconds=8.0)
    primer_notes = PERF.decode_notes(PERF.encode(primer))
    assert len(PERF.encode(primer)) > 64  # longer than the whole context: must be cropped
    sample_command(model, PERF, options(primer=str(primer), out=str(tmp_path / "out"), max_new_tokens=80))
    printed = capsys.readouterr().out
    assert "the model sees its last 32" in printed and "sliding window" in printed
    for i in range(2):
        stem = tmp_path / "out" / f"song_continued_{i:02d}"
        for suffix in (".mid", ".wav"):
            assert str(stem.with_suffix(suffix)) in printed
        assert_valid_midi(stem.with_suffix(".mid"))
        out_notes = PERF.extract_notes(load_midi(stem.with_suffix(".mid")))
        # the output is the primer (exactly, up to the codec's grid) followed by the continuation
        np.testing.assert_allclose(out_notes[:len(primer_notes)], primer_notes, atol=1e-3)
        assert out_notes[len(primer_notes):, 0].min(initial=np.inf) >= primer_notes[:, 1].max() - 1e-3
        audio, sr = soundfile.read(stem.with_suffix(".wav"))
        assert sr == 22050 and np.abs(audio).max() > 0.5  # the primer alone makes it non-silent
        with Image.open(stem.with_name(stem.name + "_roll.png")) as im:
            assert im.format == "PNG"


def test_sample_command_from_scratch_without_audio(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sample_command(tiny(block_size=64, std=0.1), PERF, options(render_audio=False, num_samples=1))
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["sample_00.mid"]  # default ./samples
    assert "samples/sample_00.mid" in capsys.readouterr().out


def test_sample_command_errors(tmp_path):
    model = tiny(block_size=64)
    junk = tmp_path / "notes.mid"
    junk.write_text("this is not a MIDI file\n")
    with pytest.raises(ValueError, match=r"primer='.*notes\.mid' cannot be used: .*not a readable MIDI file"):
        sample_command(model, PERF, options(primer=str(junk)))
    with pytest.raises(ValueError, match=r"primer='.*missing\.mid' cannot be used: MIDI file not found"):
        sample_command(model, PERF, options(primer=str(tmp_path / "missing.mid")))
    with pytest.raises(ValueError, match="`prompt` does not apply to music models"):
        sample_command(model, PERF, options(prompt="C major"))
    with pytest.raises(ValueError, match=r"`labels` does not apply to music models \(got labels=\[3\]\)"):
        sample_command(model, PERF, options(labels=[3]))
    with pytest.raises(ValueError, match="primer= needs a model of MIDI performance events.*'jsb_grid'"):
        sample_command(tiny(vocab_size=50), JSBGridCodec(), options(primer=str(song(tmp_path / "s.mid"))))
    with pytest.raises(ValueError, match=r"guidance=2 needs a conditional model \(classes, styles or captions\); "
                                         "MusicTransformer takes no condition"):
        sample_command(model, PERF, options(guidance=2.0))
    with pytest.raises(ValueError, match="style='bach': this model is not style-conditioned"):
        sample_command(model, PERF, options(style="bach"))
    with pytest.raises(ValueError, match="top_p must be in"):
        sample_command(model, PERF, options(top_p=1.5))


# ------------------------------------------------------------------------------------------ training
def jsb_fixture(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def piece(steps: int) -> list:
        grid = np.stack([rng.integers(lo, lo + 12, steps) for lo in (67, 60, 52, 40)], 1)
        return grid.tolist()

    path.write_text(json.dumps({"train": [piece(48), piece(40)], "valid": [piece(24)], "test": [piece(20)]}))
    return path


MUSIC_TINY = [o for o in TINY if not o.startswith("model.block_size")] + ["model.block_size=64"]


@pytest.mark.parametrize("experiment", ["music_transformer_bach", "music_transformer_jsb"])
def test_experiment_fast_dev_run_writes_playable_samples(experiment, tmp_path):
    data = ([f"data.path={jsb_fixture(tmp_path / 'jsb.json')}"] if experiment.endswith("jsb")
            else ["data.max_files=5", f"data.cache_dir={tmp_path / 'cache'}"])
    cfg = compose_train([f"experiment={experiment}", "trainer=debug", f"run_dir={tmp_path / 'run'}", *MUSIC_TINY,
                         "samples.max_new_tokens=80", *data])
    assert cfg.model.type == "music_transformer" and cfg.model.bias == "relative" and cfg.model.kernel == "auto"
    summary = run(cfg)
    assert math.isfinite(summary["metrics"]["train/loss"]) and math.isfinite(summary["metrics"]["val/loss"])
    samples = summary["samples"]
    assert len(samples.audio) == 2 and len(samples.images) == 4 and len(samples.texts) == 2
    for wav in samples.audio:
        assert_valid_midi(wav.with_suffix(".mid"))
        _, sr = soundfile.read(wav)
        assert sr == 22050
    for png in samples.images:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size == (1000, 400)  # piano roll and mel spectrogram


# ------------------------------------------------------------------------------------------ command line
@pytest.mark.slow
def test_cli_sample_with_primer_and_bad_primer(tmp_path):
    cfg = compose_train(["experiment=music_transformer_bach", f"run_dir={tmp_path / 'run'}", *MUSIC_TINY,
                         "trainer.max_steps=1", "data.max_files=4", f"data.cache_dir={tmp_path / 'cache'}",
                         "samples.max_new_tokens=8"])
    ckpt = run(cfg)["checkpoint"]
    primer = song(tmp_path / "song.mid")
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", f"primer={primer}", "num_samples=2", "max_new_tokens=100",
                 f"out={tmp_path / 'out'}", "seed=0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(2):
        for suffix in (".mid", ".wav", "_roll.png"):
            path = tmp_path / "out" / f"song_continued_{i:02d}{suffix}"
            assert path.is_file() and str(path) in r.stdout
        assert_valid_midi(tmp_path / "out" / f"song_continued_{i:02d}.mid")
    bad = tmp_path / "cover.mid"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not midi")
    r = run_cli(["zoo-sample", f"checkpoint={ckpt}", f"primer={bad}"], cwd=tmp_path)
    assert r.returncode != 0 and "cover.mid" in r.stderr and "not a readable MIDI file" in r.stderr
    assert "Traceback" not in r.stderr
