"""The music member: the training-time renderer and `MusicMember` (zoo-sample, `zoo.load(...).generate`).

The music codecs of zoo/codecs are served: `midi_performance` (ids -> `PerformanceCodec.decode`, a piano
MIDI), `midi_multitrack` (ids -> `MultitrackCodec.decode`, one instrument per program and the drums) and
`jsb_grid` (ids -> grid -> `JSBGridCodec.to_midi`, four choir voices). Every sample is
written as `.mid`, and, when asked, as `.wav` (zoo.members.music_render.synthesize), a piano-roll `.png`
and (training only) a mel-spectrogram `.png`.

Length. A continuation longer than the model's context is generated with a sliding window
(`zoo.sampling.generate_sliding`): once a row's sequence fills the context, it is cropped to its last half and
generation resumes from there (re-prefilling the kept half), so each new token sees at least half
a context of music. With relative attention and no absolute positions (the Music Transformer
default) the model computes the same function wherever a window starts; a model with learned
absolute positions sees its window restart at position 0, as in training crops. For `jsb_grid` a
window only starts where training crops do (a multiple of 4 tokens into the framed sequence), so
token t of every window is still voice t mod 4.

Generation stops early for a row that emits the codec's EOS (the piece is over).

Styles. A style-conditioned model (`model.num_classes` > 0; the names are the codec's `styles`) samples
`style=` (a name, an id, a list of them, or "all"): `num_samples` pieces per style, written as
`<style>_NN.*`, with classifier-free guidance when `guidance` is set (logits = u + g·(c − u), u the
"no style" prediction). Without `style` such a model samples with no style (the condition it was trained
to read as "any of them"); guidance then has nothing to guide and is not used (a line says so).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import torch

from zoo.codecs.base import Codec
from zoo.codecs.jsb import JSBGridCodec
from zoo.codecs.midi import PerformanceCodec
from zoo.codecs.midi_files import MidiError, load_midi
from zoo.codecs.multitrack import MultitrackCodec
from zoo.members.base import Member, Samples, SampleSet, register_member
from zoo.members.music_render import mel_spectrogram, piano_roll_png, render_wav, write_midi
from zoo.members.serving import Limits, OnText, Option, OptionError, b64, guidance_option, sampling_options
from zoo.sampling import OPTIONS, SamplingConfig, generate_sliding

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # Hz, for rendered audio


def ids_to_midi(codec: Codec, ids: Sequence[int]) -> pretty_midi.PrettyMIDI:
    """Decode any ids of a music codec into a playable PrettyMIDI (special ids are ignored)."""
    if isinstance(codec, PerformanceCodec | MultitrackCodec):
        return codec.decode(ids)
    if isinstance(codec, JSBGridCodec):
        return codec.to_midi(codec.decode(ids))
    raise ValueError(f"not a music codec: {type(codec).__name__} ({codec.type_name!r}); accepted: "
                     f"{PerformanceCodec.type_name!r}, {MultitrackCodec.type_name!r}, {JSBGridCodec.type_name!r}")


def window_alignment(codec: Codec) -> int:
    """Sliding windows start at multiples of this many tokens into the framed sequence (BOS at 0)."""
    return codec.voices if isinstance(codec, JSBGridCodec) else 1


def note_summary(pm: pretty_midi.PrettyMIDI) -> str:
    """'N notes, T s', with the instruments that play when there are several (multitrack samples)."""
    notes = [n for inst in pm.instruments for n in inst.notes]
    playing = [inst for inst in pm.instruments if inst.notes]
    parts = f" in {len(playing)} instruments" if len(playing) > 1 else ""
    return f"{len(notes)} notes{parts}, {pm.get_end_time():.1f} s"


def write_sample(pm: pretty_midi.PrettyMIDI, stem: Path, *, audio: bool = True, mel: bool = False) -> list[Path]:
    """Write `<stem>.mid` and, with `audio`, `<stem>.wav` and `<stem>_roll.png` (and `<stem>_mel.png`
    with `mel`). Returns the paths written, .mid first."""
    paths = [write_midi(pm, stem.with_suffix(".mid"))]
    if audio:
        wav = render_wav(pm, stem.with_suffix(".wav"), sample_rate=SAMPLE_RATE)
        paths += [wav, piano_roll_png(pm, stem.with_name(stem.name + "_roll.png"))]
        if mel:
            import soundfile

            wave, sr = soundfile.read(str(wav), dtype="float32")
            paths.append(mel_png(wave, sr, stem.with_name(stem.name + "_mel.png")))
    return paths


def mel_png(wave: np.ndarray, sr: int, path: Path) -> Path:
    """A 1000 x 400 picture of `zoo.members.music_render.mel_spectrogram(wave, sr)`: time in seconds across,
    mel band up (the raw spectrogram is 80 rows by thousands of frames, unreadable as an image)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = mel_spectrogram(wave, sr)  # (n_mels, frames) uint8, row 0 = highest band
    fig = Figure(figsize=(10, 4), dpi=100)  # no pyplot: no global state, any backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(image, aspect="auto", cmap="magma", interpolation="nearest",
              extent=(0, len(wave) / sr, 0, image.shape[0]))  # origin upper: row 0 drawn at the top
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path


def style_names(codec: Codec) -> list[str]:
    """The codec's style names (a style-conditioned model's class ids, in order); [] if it has none."""
    return list(getattr(codec, "styles", None) or [])


def parse_styles(codec: Codec, style: Any) -> list[int] | None:
    """`style=`: None (no style), "all", a name, an id, or a list of names/ids -> style ids."""
    names = style_names(codec)
    if style is None:
        return None
    if not names:
        raise ValueError(f"style={style!r}: this model is not style-conditioned (its codec has no styles); "
                         "sample it without style=")
    if style == "all":
        return list(range(len(names)))
    items = list(style) if isinstance(style, (list, tuple)) else [style]
    if not items:
        raise ValueError(f"style is an empty list; accepted: {names}, ids 0..{len(names) - 1}, or 'all'")
    ids = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            ids.append(item)
        elif isinstance(item, str) and item in names:
            ids.append(names.index(item))
        elif isinstance(item, str) and item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        else:
            close = difflib.get_close_matches(str(item), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown style {item!r}{hint}; accepted: {names}, ids 0..{len(names) - 1}, or 'all'")
    return ids


def style_conditions(model: Any, codec: Codec, styles: list[int] | None, n: int) -> torch.Tensor | None:
    """The condition (style ids) of `n` rows per style; None without styles (the model's "no style").
    Guidance is `zoo.sampling.generate`'s: rows without a style have nothing to guide towards."""
    if styles is None:
        return None
    k = len(style_names(codec))
    if getattr(model.config, "num_classes", 0) != k:
        raise ValueError(f"the codec names {k} styles but the model has num_classes="
                         f"{getattr(model.config, 'num_classes', 0)}")
    device = next(model.parameters()).device
    return torch.tensor(styles, device=device).repeat_interleave(n)


# ---------------------------------------------------------------------------------------- training
def render(module: Any, datamodule: Any, cfg: SamplingConfig, out_dir: Path, step: int) -> SampleSet:
    """Two short samples for the training log: one from scratch (BOS), one continuing the opening of
    the first validation piece (a quarter of the context). Each is written as .mid, .wav, piano roll
    and mel spectrogram under `out_dir` (`step_<step>_<label>.*`)."""
    model, codec = module.model, module.codec
    align = window_alignment(codec)
    styles = style_names(codec)
    cond = None
    if styles:  # a style-conditioned model: one piece per style from scratch
        prompts = {f"scratch_{name}": [codec.bos_id] for name in styles}
        cond = style_conditions(model, codec, list(range(len(styles))), 1)
    else:
        prompts = {"scratch": [codec.bos_id]}
        val = getattr(datamodule, "sequences", {}).get("val") if datamodule is not None else None
        if val:
            n = max(align, (model.max_len // 4) // align * align) + 1  # BOS + whole steps
            prompts["continue_val0"] = [int(i) for i in val[0][:n]]
    cfg = dataclasses.replace(cfg, stop_tokens=(codec.eos_id,))
    rows = generate_sliding(model, list(prompts.values()), cfg, align=align, cond=cond)
    out = SampleSet()
    for (label, prompt), ids in zip(prompts.items(), rows):
        pm = ids_to_midi(codec, prompt + ids)
        wav, roll, mel = write_sample(pm, out_dir / f"step_{step:06d}_{label}", mel=True)[1:]
        about = f"{len(ids)} new tokens; {note_summary(pm)}"
        out.texts.append((f"[{label}] ", f"{about}; {wav.with_suffix('.mid')}"))
        out.images += [roll, mel]
        out.audio.append(wav)
        out.captions.update({str(wav): f"step {step} [{label}]: {about}",
                             str(roll): f"step {step} [{label}]: piano roll",
                             str(mel): f"step {step} [{label}]: mel spectrogram"})
    return out


# ---------------------------------------------------------------------------------------- sampling
def primer_ids(codec: Codec, path: str | Path) -> list[int]:
    """BOS + the events of a MIDI file; ValueError naming the file if it is not usable."""
    if not isinstance(codec, PerformanceCodec | MultitrackCodec):
        raise ValueError(f"primer= needs a model of MIDI performance events or multitrack MIDI; this checkpoint's "
                         f"codec is {codec.type_name!r} (generate from scratch without primer=)")
    try:
        ids = codec.encode(load_midi(path))
    except (MidiError, FileNotFoundError) as e:
        raise ValueError(f"primer={str(path)!r} cannot be used: {e}. Give a standard MIDI file "
                         "(.mid/.midi) with notes.") from e
    if not ids:
        raise ValueError(f"primer={str(path)!r} has no notes this model's codec keeps "
                         f"(codec options {codec.config()})")
    return [codec.bos_id, *ids]


class MusicMember(Member):
    """Music models (MIDI performance events, multitrack MIDI, JSB grids): `num_samples` pieces from scratch,
    or continuing `primer` (a MIDI file; the output holds the primer and its continuation). Longer than the context, a
    window slides (module docstring). Value: a PrettyMIDI, a list of them when several are drawn.
    `out`: a .mid file (one piece) or a folder (`sample_00.mid`, or `<primer>_continued_00.mid`, ...);
    `render_audio` also writes each piece's .wav and piano-roll .png."""

    name = "music"
    codec_types = ("midi_performance", "midi_multitrack", "jsb_grid")
    model_types = ("music_transformer",)
    inputs = {"primer": None, "style": None, "render_audio": False, "out": None}
    primary = "primer"
    sampling = frozenset(OPTIONS) - {"stop"}
    rejected = {"stop": "a piece ends at the codec's end-of-piece event"}
    outputs = ("midi", "wav", "piano_roll_png")

    def generate(self, model: Any, codec: Codec, inputs: dict[str, Any], sampling: SamplingConfig, *,
                 on_text: Any = None) -> Samples:
        primer = inputs["primer"]
        styles = parse_styles(codec, inputs["style"])
        cond = style_conditions(model, codec, styles, sampling.num_samples)
        prompt = primer_ids(codec, primer) if primer else [codec.bos_id]
        cfg = dataclasses.replace(sampling, stop_tokens=(codec.eos_id,))
        n, ctx, out = cfg.num_samples, model.max_len, Samples(None)
        labels = [style_names(codec)[s] for s in styles for _ in range(n)] if styles else [None] * n
        if styles is None and sampling.guidance is not None and style_names(codec):  # generate samples unguided
            out.lines.append(f"guidance={sampling.guidance:g} not used: no style= given (styles: "
                             f"{', '.join(style_names(codec))})")
        if len(prompt) > ctx // 2:
            out.lines.append(f"primer: {len(prompt) - 1} events; the model sees its last {ctx // 2} "
                             f"(half its context of {ctx})")
        if len(prompt) + cfg.max_new_tokens > ctx:
            out.lines.append(f"max_new_tokens={cfg.max_new_tokens} goes past the context of {ctx} tokens: generating "
                             f"with a sliding window (each window keeps the last {ctx // 2} tokens)")
        rows = generate_sliding(model, [prompt] * len(labels), cfg, align=window_alignment(codec), cond=cond)
        pms = [ids_to_midi(codec, prompt + ids) for ids in rows]
        out.value = pms[0] if len(pms) == 1 else pms
        stem = f"{Path(primer).stem}_continued" if primer else "sample"
        dest = None if inputs["out"] is None else Path(inputs["out"])
        for j, (ids, pm, label) in enumerate(zip(rows, pms, labels)):
            i = j % n
            tag = f" [{label}]" if label else ""
            out.lines.append(f"sample {i}{tag}: {len(ids)} new tokens, {note_summary(pm)}")
            if dest is None:
                continue
            prefix = f"{label}_" if label else ""
            if dest.suffix != ".mid":  # a folder
                named = dest / (f"{label}_{i:02d}" if label and not primer else f"{prefix}{stem}_{i:02d}")
            else:  # one file asked for; several pieces are numbered
                named = dest.with_suffix("") if len(pms) == 1 else dest.with_name(f"{dest.stem}_{prefix}{i:02d}")
            paths = write_sample(pm, named, audio=bool(inputs["render_audio"]))
            out.files += paths
            out.lines += [f"  {p}" for p in paths]
        return out

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        return render(module, datamodule, sampling, out_dir, step)

    # ---- zoo-serve: one piece per request, as MIDI, piano roll and (optionally) WAV ----
    def request_options(self, m: Any, limits: Limits) -> list[Option]:
        styles = style_names(m.codec)
        conditional = [Option(name="style", kind="string", nullable=True, default=None, sampling=False,
                              max_length=64, help=f"the style to play: one of {styles} (null = no style)"),
                       guidance_option(m)] if styles else []
        return [Option(name="primer", kind="midi", nullable=True, default=None, sampling=False,
                       max_length=limits.max_primer_bytes,
                       help="a MIDI file to continue, base64 (null = from the start)"),
                Option(name="audio", kind="boolean", default=True, sampling=False,
                       help="also render a WAV (sine or FluidSynth synthesis)"),
                *conditional, *sampling_options(m, max_tokens=limits.max_music_tokens)]

    def check_request(self, m: Any, opts: dict[str, Any], limits: Limits) -> None:
        if "style" in opts:
            try:
                parse_styles(m.codec, opts["style"])
            except ValueError as e:
                raise OptionError("style", str(e), f"one of {style_names(m.codec)}, or null", opts["style"]) from None
        if opts["primer"] is None:
            return
        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            path = Path(tmp) / "primer.mid"
            path.write_bytes(opts["primer"])
            try:
                primer_ids(m.codec, path)
            except ValueError as e:  # the message names the problem and what a primer must be
                raise OptionError("primer", str(e), received=f"{len(opts['primer'])} bytes") from None

    def serve(self, m: Any, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        return [self._serve_one(m, opts) for opts in batch]

    def _serve_one(self, m: Any, opts: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
            tmp = Path(tmp)
            primer = None
            if opts["primer"] is not None:
                primer = tmp / "primer.mid"
                primer.write_bytes(opts["primer"])
            options = {k: v for k, v in opts.items() if k not in ("primer", "audio")}
            pm = m.sample({**options, "primer": primer, "out": tmp / "sample.mid"}).value
            result = {"midi": b64(tmp / "sample.mid"), "seconds": round(pm.get_end_time(), 3),
                      "notes": sum(len(i.notes) for i in pm.instruments),
                      "piano_roll_png": b64(piano_roll_png(pm, tmp / "roll.png"))}
            if opts["audio"]:
                result["wav"] = b64(render_wav(pm, tmp / "sample.wav"))
            return result


register_member(MusicMember)
