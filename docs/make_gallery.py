"""Regenerate docs/gallery/: one sample from each shipped checkpoint, as shown in the README.

    python docs/make_gallery.py                 # writes docs/gallery/ (about a minute on one CPU thread)
    python docs/make_gallery.py --out /tmp/g    # anywhere else
    python docs/make_gallery.py --only music    # one entry (text, digits, captions, music); the others untouched

Everything comes from `zoo.load(name).generate(...)` with fixed seeds, so a rerun with the same weights
and torch version reproduces the files. The folder is kept small (README-sized pictures, a short clip):
the .wav is only written when it stays under `MAX_WAV_BYTES`.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import torch

import zoo

log = logging.getLogger("make_gallery")

GALLERY = Path(__file__).resolve().parent / "gallery"
MAX_WAV_BYTES = 300_000
WAV_RATE = 8_000  # Hz: enough for a sine-synth chorale, keeps the clip small
TEXT_PROMPTS = ("The with statement", "The assert statement", "Class definitions")
DIGIT_LABELS = list(range(10))
STYLE_GUIDANCE = 2.0  # music-transformer-styles: guidance of the gallery samples
CAPTIONS = ("a 3 on the left and a 7 on the right", "a 9 on the left and a 0 on the right",
            "a 4 on the left and a 2 on the right", "a 5 on the left", "a 6 on the right")


def gpt_text(out: Path) -> Path:
    m = zoo.load("gpt-pydoc")
    parts = ["# gpt-pydoc samples", "",
             "`zoo.load(\"gpt-pydoc\").generate(prompt, max_new_tokens=100, temperature=0.8, top_k=40, seed=0)`", ""]
    for prompt in TEXT_PROMPTS:
        text = m.generate(prompt, max_new_tokens=100, temperature=0.8, top_k=40, seed=0)
        parts += [f"prompt `{prompt}`:", "", "```text", text, "```", ""]
    path = out / "gpt_pydoc.md"
    path.write_text("\n".join(parts))
    return path


def digit_grid(out: Path) -> Path:
    path = out / "image_gpt_digits.png"
    zoo.load("image-gpt-digits").generate(labels=DIGIT_LABELS, num_samples=8, guidance=2.0, seed=0, out=path)
    return path


def caption_grid(out: Path) -> list[Path]:
    path = out / "text2image_digits.png"
    zoo.load("text2image-digits").generate(list(CAPTIONS), num_samples=8, guidance=3.0, seed=0, out=path)
    legend = out / "text2image_digits.txt"
    legend.write_text("rows, top to bottom (guidance 3, 8 samples each):\n" + "".join(f"{c}\n" for c in CAPTIONS))
    return [path, legend]


def _music_files(pm, out: Path, stem: str, seconds: float = 12.0, ogg: bool = False) -> list[Path]:
    """`stem`.mid and .png of the whole piece, .wav of its first `seconds` (kept under MAX_WAV_BYTES), or with
    `ogg` the same audio as Ogg Vorbis (a tenth of the bytes: the gallery holds a clip per style)."""
    from zoo.members.music_render import piano_roll_png, render_wav, write_midi

    paths = [write_midi(pm, out / f"{stem}.mid"), piano_roll_png(pm, out / f"{stem}.png")]
    clip = copy.deepcopy(pm)  # cut to the opening so the clip stays small
    for inst in clip.instruments:
        inst.notes = [n for n in inst.notes if n.start < seconds]
        for n in inst.notes:
            n.end = min(n.end, seconds)
    wav = render_wav(clip, out / f"{stem}.wav", sample_rate=WAV_RATE)
    if ogg:
        import soundfile

        wave, sr = soundfile.read(str(wav), dtype="float32")
        wav.unlink()
        wav = out / f"{stem}.ogg"
        soundfile.write(str(wav), wave, sr, format="OGG", subtype="VORBIS")
    if wav.stat().st_size > MAX_WAV_BYTES:
        log.warning("%s is %d bytes (> %d): not kept", wav, wav.stat().st_size, MAX_WAV_BYTES)
        wav.unlink()
    else:
        paths.append(wav)
    return paths


def music(out: Path) -> list[Path]:
    pm = zoo.load("music-transformer-bach").generate(max_new_tokens=512, seed=0)
    return _music_files(pm, out, "music_transformer_bach")


def jsb(out: Path) -> list[Path]:
    """128 sixteenth steps (8 bars) of four-voice chorale from the JSB grid model."""
    pm = zoo.load("music-transformer-jsb").generate(max_new_tokens=512, seed=0)
    return _music_files(pm, out, "music_transformer_jsb", seconds=20.0, ogg=True)


def styles(out: Path) -> list[Path]:
    """One piece per style from the style-conditioned model, guidance as in its card."""
    m = zoo.load("music-transformer-styles")
    paths = []
    for name in m.codec.styles:
        pm = m.generate(style=name, guidance=STYLE_GUIDANCE, max_new_tokens=512, seed=0)
        paths += _music_files(pm, out, f"music_transformer_styles_{name}", seconds=15.0, ogg=True)
    return paths


# --only NAME -> the function writing that entry, in the README's order
ENTRIES = {"text": gpt_text, "digits": digit_grid, "captions": caption_grid, "music": music, "jsb": jsb,
           "styles": styles}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GALLERY, help="output folder (default docs/gallery)")
    parser.add_argument("--only", choices=sorted(ENTRIES), action="append",
                        help="regenerate only this entry (repeatable; default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in args.only or ENTRIES:
        result = ENTRIES[name](args.out)
        written += result if isinstance(result, list) else [result]
    for p in written:
        print(f"{p}  ({p.stat().st_size:,} bytes)")
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
