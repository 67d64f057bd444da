"""The member contract: one object per modality that knows how its models are sampled, saved and shown.

A `Member` says which codec types and model types it serves, which inputs it takes besides the
sampling options (a text prompt, class labels, a primer file, an output path ...), and which options of
`zoo.sampling.SamplingConfig` it honours; any other option is rejected by name (`Member.parse`). Its
`generate` draws samples and returns them as `Samples`: the Python value (`zoo.load(...).generate`
returns it), the files written and the lines `zoo-sample` prints. `render_training_samples` is what
`zoo.training.callbacks.SampleCallback` logs during training, as a `SampleSet`.

`zoo-sample`, `Pretrained.generate`, the training callback and export ask `member_for(codec=...)`
instead of switching on names. zoo-serve asks the member too: its request fields (`request_options`,
`zoo.members.serving.Option`), the checks that need the codec (`check_request`), which requests may share
a batch (`batch_key`) and the JSON result (`serve`); the defaults serve any member, plug-ins included.
Built-in members register themselves when `zoo.members` is imported; other packages add theirs through
the entry-point group `zoo.members` (`load_plugins`).
"""

from __future__ import annotations

import difflib
import logging
import tempfile
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from zoo.members.serving import Limits, OnText, Option, b64, guidance_option, sampling_options
from zoo.sampling import OPTIONS, RENAMED, SamplingConfig

log = logging.getLogger(__name__)


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


@dataclass
class Samples:
    """One `Member.generate` call's result.

    value: what `Pretrained.generate` returns (str or list[str] for text, a float image Tensor
        (N, C, H, W) in [0, 1] for images, a PrettyMIDI or a list of them for music, ...).
    files: the files written (empty when no output path was given).
    lines: what `zoo-sample` prints, one entry per line (notes about cropping, files, summaries).
    """

    value: Any
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "\n".join(self.lines)


class Member:
    """Base class of a modality. Subclasses set the class attributes and implement `generate` and
    `render_training_samples`; registering an instance (`register_member`) makes every entry point use it.

    inputs: the member's own inputs and their defaults (for Python callers; zoo-sample passes its own).
    primary: the input that `Pretrained.generate(x)`'s positional argument fills (e.g. "prompt").
    sampling: the `SamplingConfig` options this member honours; `rejected` gives a reason per option
        it does not (shown in the error), the rest get a generic one.
    outputs / streams: the fields of a served result, and whether `serve` streams text to `on_text`.
    """

    name: ClassVar[str] = ""
    codec_types: ClassVar[tuple[str, ...]] = ()
    model_types: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[dict[str, Any]] = {}
    primary: ClassVar[str | None] = None
    sampling: ClassVar[frozenset[str]] = frozenset(OPTIONS)
    rejected: ClassVar[dict[str, str]] = {}
    outputs: ClassVar[tuple[str, ...]] = ("value", "files")
    streams: ClassVar[bool] = False

    def parse(self, options: Mapping[str, Any], *, base: SamplingConfig | None = None,
              explicit: Collection[str] | None = None) -> tuple[dict[str, Any], SamplingConfig]:
        """Split `options` into (inputs with defaults filled in, SamplingConfig over `base`).

        explicit: the options the user actually set (None: all of them). An option this member does not
        take is a ValueError naming it when explicit, and dropped otherwise (zoo-sample's config holds
        the defaults of every member's inputs). Unknown options are errors with the closest match.
        """
        inputs, sampling = dict(self.inputs), {}
        for key, value in options.items():
            if key in self.inputs:
                inputs[key] = value
            elif key in self.sampling:
                sampling[key] = value
            elif explicit is None or key in explicit:
                raise ValueError(self._not_accepted(key, value))
        return inputs, SamplingConfig.from_options(sampling, base)

    def _not_accepted(self, key: str, value: Any) -> str:
        accepted = sorted(self.inputs) + sorted(self.sampling)
        if key in OPTIONS or key in all_inputs():
            why = self.rejected.get(key, f"{self.name} models do not use it")
            return f"`{key}` does not apply to {self.name} models (got {key}={value!r}): {why}. " \
                   f"Accepted: {', '.join(accepted)}"
        close = [RENAMED[key]] if key in RENAMED else difflib.get_close_matches(key, accepted, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown option {key!r}{hint} Accepted for {self.name} models: {', '.join(accepted)}"

    def generate(self, model: Any, codec: Any, inputs: dict[str, Any], sampling: SamplingConfig, *,
                 on_text: Callable[[str], Any] | None = None) -> Samples:
        """Draw samples for `inputs` (from `parse`) and write them where `inputs["out"]` says, if anywhere.
        on_text: receives text as it is generated, for members that stream (zoo-sample prints it)."""
        raise NotImplementedError

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        """Samples for the training log, written under `out_dir`. `module` is the training LightningModule
        (`.model`, `.codec`); typed Any so that members, below training, need no Lightning import."""
        raise NotImplementedError

    def sample(self, model: Any, codec: Any, options: Mapping[str, Any], *, base: SamplingConfig | None = None,
               explicit: Collection[str] | None = None, on_text: Callable[[str], Any] | None = None) -> Samples:
        """`parse` then `generate`: what zoo-sample and `Pretrained.generate` call."""
        inputs, sampling = self.parse(options, base=base, explicit=explicit)
        return self.generate(model, codec, inputs, sampling, on_text=on_text)

    # ---- serving: `m` is a loaded model (`zoo.load`'s Pretrained: .model, .codec, .generation, .sample) ----
    def request_options(self, m: Any, limits: Limits) -> list[Option]:
        """The request fields zoo-serve shows and checks. Default: one per input but `out` (the server
        returns files, it writes none where a client says), typed by its default, then the sampling
        options this member takes, with the checkpoint's defaults (`m.generation`)."""
        fields = [_input_option(name, default, limits) for name, default in self.inputs.items() if name != "out"]
        if "num_samples" in self.sampling:
            fields.append(Option(name="num_samples", kind="integer", minimum=1, maximum=limits.max_num_samples,
                                 default=1, sampling=False, help="samples to draw"))
        if "stop" in self.sampling:
            fields.append(Option(name="stop", kind="strings", default=[], max_length=limits.max_stop,
                                 sampling=False, help="strings that end a sample"))
        if "guidance" in self.sampling:
            fields.append(guidance_option(m))
        shared = sampling_options(m, max_tokens=limits.max_new_tokens if "max_new_tokens" in self.sampling else None)
        return fields + [o for o in shared if o.name in self.sampling]

    def check_request(self, m: Any, opts: dict[str, Any], limits: Limits) -> None:
        """Checks of a request that need several fields or the codec (each field passed its `Option`);
        raise `zoo.members.serving.OptionError` naming the field (without `accepted`, the field's own is
        shown). May normalise `opts` in place."""

    def batch_key(self, opts: Mapping[str, Any]) -> Hashable | None:
        """Requests with equal keys may run as one `serve` call; None (the default): this one runs alone."""
        return None

    def serve(self, m: Any, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        """One JSON-able result per request of `batch` (checked options). Default: each request through
        `m.sample`; `value` as JSON, and the files the member wrote (into a temporary folder) as base64."""
        results = []
        for opts in batch:
            with tempfile.TemporaryDirectory(prefix="zoo-serve-") as tmp:
                out = {"out": f"{tmp}/"} if "out" in self.inputs else {}
                samples = m.sample({**opts, **out})
                files = {str(Path(p).relative_to(tmp)): b64(Path(p)) for p in samples.files if Path(p).is_file()}
                results.append({"value": to_json(samples.value), "files": files})
        return results


def _input_option(name: str, default: Any, limits: Limits) -> Option:
    """A plug-in input's request field, typed by its default (None, a list or a dict: any JSON value)."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(default), "any")
    return Option(name=name, kind=kind, default=default, nullable=kind == "any", sampling=False,
                  max_length=limits.max_prompt_chars if kind == "string" else None, help=f"the member's `{name}`")


def to_json(value: Any) -> Any:
    """A sample's value as JSON: tensors and arrays as nested lists, containers item by item, else str()."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # torch.Tensor, numpy.ndarray
        return value.tolist()
    return str(value)


def output_path(out: str | Path | None, default_name: str) -> Path | None:
    """Where a member writes one file: `out` itself when it has the file's suffix ("digits.png"), else
    `default_name` inside the folder `out` ("samples/" -> samples/samples.png); None: nowhere."""
    if out is None:
        return None
    out = Path(out)
    return out if out.suffix == Path(default_name).suffix else out / default_name


# ---- the registry ----------------------------------------------------------------------------------------
MEMBERS: dict[str, Member] = {}  # member name -> member


def register_member(member: Member | type[Member]) -> Member:
    """Make `member` (an instance, or a class built without arguments) serve its codec and model types."""
    member = member() if isinstance(member, type) else member
    if not member.name or not member.codec_types:
        raise ValueError(f"{type(member).__name__} needs a `name` and at least one of `codec_types`")
    MEMBERS[member.name] = member
    return member


def member_for(codec: Any = None, *, model_type: str | None = None) -> Member:
    """The member serving `codec` (a Codec or its type name), else the one serving `model_type`.

    Raises ValueError naming what was asked and the known members with what they serve (and any plug-in
    that failed to load)."""
    load_plugins()
    kind = codec if isinstance(codec, str) or codec is None else getattr(codec, "type_name", None)
    for member in MEMBERS.values():
        if kind is not None and kind in member.codec_types:
            return member
    for member in MEMBERS.values():
        if model_type is not None and model_type in member.model_types:
            return member
    known = "; ".join(f"{m.name} (codecs {', '.join(m.codec_types)})" for m in MEMBERS.values())
    broken = f". Plug-ins that failed to load: {'; '.join(PLUGIN_ERRORS)}" if PLUGIN_ERRORS else ""
    raise ValueError(f"no zoo member serves codec {kind!r}" + (f" or model type {model_type!r}" if model_type else "")
                     + f"; known members: {known}{broken}. A new modality registers a Member (docs/adding_a_model.md)")


def all_inputs() -> set[str]:
    """Every input name some registered member takes (so that another member can say it does not apply)."""
    return {k for m in MEMBERS.values() for k in m.inputs}


# ---- plug-ins ---------------------------------------------------------------------------------------------
ENTRY_POINT_GROUP = "zoo.members"
PLUGIN_ERRORS: list[str] = []  # "name: error" for each plug-in that failed to load
_loaded = False


def load_plugins() -> None:
    """Load the members of other packages, once: every entry point of the group `zoo.members`.

    An entry point names a `Member` subclass or instance (registered here) or a module that registers
    its member itself. Importing it must also register the plug-in's model (`zoo.models.base.register`)
    and codec (a `zoo.codecs.base.Codec` subclass with a `type_name`), so that checkpoints and exports
    of it load. A plug-in that fails to import is logged and skipped, never fatal to zoo itself.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, Member) or (isinstance(obj, type) and issubclass(obj, Member)):
                register_member(obj)
        except Exception as e:  # a third party's bug must not break zoo-sample for every other model
            PLUGIN_ERRORS.append(f"{ep.name} ({ep.value}): {type(e).__name__}: {e}")
            log.warning("zoo member plug-in %s (%s) failed to load: %s", ep.name, ep.value, e)
