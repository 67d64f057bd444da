"""Members: one module per modality, the place that knows how its samples are drawn, rendered and saved.

    text.py        prompts -> text (streaming, stop strings, sliding window); the text renderer
    image.py       class grids and completions (PNG), labels, primers; image_io.py writes the grids
    music.py       MIDI + WAV + piano roll + mel spectrogram; music_render.py renders them
    text2image.py  captions -> image grids
    base.py        `SampleSet`, the `SampleRenderer` protocol and the renderer registry

Importing `zoo.members` imports every built-in member, so each has
registered its renderer.
"""

from zoo.members import image, music, text, text2image  # noqa: F401  (each registers its renderer)
from zoo.members.base import RENDERERS, SampleRenderer, SampleSet, get_renderer, register_renderer

__all__ = ["RENDERERS", "SampleRenderer", "SampleSet", "get_renderer", "register_renderer"]
