"""What every member shares: the `SampleSet` a renderer produces and the renderer registry.

A member is one modality (text, image, music, text-to-image): its module under `zoo/members/` knows how
samples are drawn, rendered, saved and described. During training, `zoo.training.callbacks.SampleCallback`
asks `get_renderer(codec.type_name)` for the member's `SampleRenderer` and hands the `SampleSet` it returns
to the loggers (`zoo.training.tracking.log_media`). Each member module registers its renderer with
`register_renderer` when it is imported; importing `zoo.members` imports every built-in member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.sampling import SamplingConfig


@dataclass
class SampleSet:
    """What a renderer produced for one step: text rows and/or media files, ready to log."""

    texts: list[tuple[str, str]] = field(default_factory=list)  # (prompt, sample)
    images: list[Path] = field(default_factory=list)  # grids, piano rolls ...: every file is under the run folder
    audio: list[Path] = field(default_factory=list)  # .wav files
    captions: dict[str, str] = field(default_factory=dict)  # str(path of an image or audio file) -> caption
    labelled: list[tuple[Path, str]] = field(default_factory=list)  # one image per condition: (file, class/caption)

    def caption(self, path: str | Path) -> str:
        """The caption of one of `images` / `audio` ("" when it has none)."""
        return self.captions.get(str(path), "")


# (module, datamodule, sampling config, output folder, step) -> SampleSet. `module` is the training
# LightningModule (its `.model` and `.codec` are what a renderer uses); typed Any so that members, which
# sit below training, need no Lightning import.
SampleRenderer = Callable[[Any, Any, SamplingConfig, Path, int], SampleSet]
RENDERERS: dict[str, SampleRenderer] = {}  # codec type -> renderer


def register_renderer(codec_types: Iterable[str], renderer: SampleRenderer) -> SampleRenderer:
    """Make `renderer` draw the training-time samples of every codec type in `codec_types`."""
    for kind in codec_types:
        RENDERERS[kind] = renderer
    return renderer


def get_renderer(codec_type: str) -> SampleRenderer | None:
    """The renderer registered for `codec_type`, None when no member renders it."""
    return RENDERERS.get(codec_type)
