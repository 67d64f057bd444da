"""Turn MIDI into things to hear and look at: .mid files, .wav audio, piano rolls, mel spectrograms.

Used by `zoo-sample` and the training callback that logs clips. Audio comes from FluidSynth with
the General MIDI SoundFont that pretty_midi ships when pyfluidsynth is installed, else from
pretty_midi's sine-wave synthesizer (always available); either way it is peak-normalised.
WAV files are written with `soundfile` (torchaudio's save needs torchcodec and FFmpeg).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pretty_midi
import torch

log = logging.getLogger(__name__)

PEAK = 0.9  # normalised peak amplitude, a little headroom below full scale


def write_midi(pm: pretty_midi.PrettyMIDI, path: str | Path) -> Path:
    """Write `pm` as a standard MIDI file (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def synthesize(pm: pretty_midi.PrettyMIDI, sample_rate: int = 22050) -> np.ndarray:
    """Mono float32 audio (n_samples,) in [-PEAK, PEAK]; at least one sample (silence for no notes)."""
    try:
        audio = pm.fluidsynth(fs=sample_rate)  # pretty_midi's bundled SoundFont
    except (ImportError, OSError) as e:  # pyfluidsynth or the fluidsynth library is missing
        log.debug("FluidSynth unavailable (%s); using pretty_midi's sine synthesizer", e)
        audio = pm.synthesize(fs=sample_rate)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return np.zeros(1, dtype=np.float32)
    peak = float(np.abs(audio).max())
    return audio * (PEAK / peak) if peak > 0 else audio


def render_wav(pm: pretty_midi.PrettyMIDI, path: str | Path, sample_rate: int = 22050) -> Path:
    """Synthesize `pm` (see `synthesize`) into a 16-bit mono WAV file; returns the path."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), synthesize(pm, sample_rate), sample_rate, subtype="PCM_16")
    return path


def piano_roll_image(pm: pretty_midi.PrettyMIDI, frames_per_second: int = 50, width_inches: float = 10.0,
                     dpi: int = 100) -> np.ndarray:
    """A piano-roll picture, RGB uint8 (H, W, 3): time in seconds across, pitch up, velocity as colour.

    The pitch axis spans the notes played (with a margin), or middle C ± an octave when there are none.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    roll = pm.get_piano_roll(fs=frames_per_second)  # (128, frames), summed velocities
    if roll.shape[1] == 0:
        roll = np.zeros((128, 1))
    played = np.flatnonzero(roll.any(axis=1))
    lo, hi = (max(played[0] - 3, 0), min(played[-1] + 3, 127)) if len(played) else (48, 72)
    fig = Figure(figsize=(width_inches, 4), dpi=dpi)  # no pyplot: no global state, any backend
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    duration = roll.shape[1] / frames_per_second
    ax.imshow(np.clip(roll[lo:hi + 1], 0, 127), aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=127,
              interpolation="nearest", extent=(0, duration, lo - 0.5, hi + 0.5))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def piano_roll_png(pm: pretty_midi.PrettyMIDI, path: str | Path, frames_per_second: int = 50) -> Path:
    """Save `piano_roll_image(pm)` as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(piano_roll_image(pm, frames_per_second)).save(path)
    return path


def mel_spectrogram(audio: np.ndarray, sr: int, n_mels: int = 80, n_fft: int = 1024,
                    hop_length: int = 256, top_db: float = 80.0) -> np.ndarray:
    """Log-mel spectrogram as a grey image, uint8 (n_mels, frames): low frequencies at the bottom row.

    Decibels relative to the loudest bin, clipped at -`top_db`, mapped linearly onto 0..255.
    """
    import torchaudio

    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32).reshape(-1))
    if wave.numel() < n_fft:  # the STFT needs at least one full frame
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=n_fft, hop_length=hop_length,
                                               n_mels=n_mels)(wave)  # (n_mels, frames), power
    db = 10 * torch.log10(mel.clamp_min(1e-10))
    db = (db - db.max()).clamp_min(-top_db)
    image = ((db + top_db) / top_db * 255).round().to(torch.uint8)
    return image.flip(0).numpy()  # row 0 = highest mel band, as an image is drawn
