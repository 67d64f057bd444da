"""Members: one object per modality, the one place that knows how its models are sampled, saved and shown.

    base.py        `Member` (the contract), `Samples`, `SampleSet`, the registry `member_for` and plug-ins
    text.py        prompts -> text (streaming, stop strings, sliding window)
    image.py       class grids and completions (PNG), labels, primers; image_io.py writes the grids
    music.py       MIDI + WAV + piano roll + mel spectrogram; music_render.py renders them
    text2image.py  captions -> image grids

Importing `zoo.members` registers every built-in member and loads the members of other packages
(entry-point group `zoo.members`), so that their models and codecs are registered before any config is
checked or checkpoint read (docs/adding_a_model.md).
"""

from zoo.members import image, music, text, text2image  # noqa: F401  (each registers its member)
from zoo.members.base import (
    ENTRY_POINT_GROUP,
    MEMBERS,
    Member,
    Samples,
    SampleSet,
    load_plugins,
    member_for,
    output_path,
    register_member,
)

__all__ = ["ENTRY_POINT_GROUP", "MEMBERS", "Member", "SampleSet", "Samples", "load_plugins", "member_for",
           "output_path", "register_member"]

load_plugins()  # at import: a plug-in's model type must be known before a config naming it is checked
