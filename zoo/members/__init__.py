"""Members: one module per modality, the place that knows how its samples are drawn, rendered and saved.

    text.py        prompts -> text (streaming, stop strings, sliding window); the text renderer
    image.py       class grids and completions (PNG), labels, primers; image_io.py writes the grids
    music.py       MIDI + WAV + piano roll + mel spectrogram; music_render.py renders them
    text2image.py  captions -> image grids
    base.py        `SampleSet`, the `SampleRenderer` protocol and the renderer registry

Importing `zoo.members` imports every built-in member (music when its extra is installed), so each has
registered its renderer.
"""

from zoo.members import image, text, text2image  # noqa: F401  (each registers its renderer)

try:  # the music member needs the `music` extra (pretty_midi); text and image work without it
    from zoo.members import music  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "pretty_midi":
        raise
from zoo.members.base import RENDERERS, SampleRenderer, SampleSet, get_renderer, register_renderer

__all__ = ["RENDERERS", "SampleRenderer", "SampleSet", "get_renderer", "register_renderer"]
