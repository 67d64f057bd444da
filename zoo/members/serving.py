"""What a member shows a server: the request fields it takes (`Option`: JSON type, range, default, help),
the caps on one request (`Limits`), and the refusal of a field (`OptionError`, which zoo-serve answers
with a 422 naming the field, what is accepted and what was received).

A `Member` builds its request schema from these (`Member.request_options`), checks a request
(`Member.check_request`) and turns samples into JSON (`Member.serve`); zoo.serve holds only the HTTP side.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OnText = Callable[[str], None]
Kind = Literal["integer", "number", "string", "boolean", "strings", "labels", "midi", "any"]
MAX_SEED = 2**32 - 1  # JSON numbers are doubles in the browser: keep seeds exact


class OptionError(ValueError):
    """A request field the member cannot use: `field`, why (`message`), what is `accepted` (None: what the
    field's `Option.accepted` says), what was `received`."""

    def __init__(self, field: str, message: str, accepted: Any = None, received: Any = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.accepted, self.received = field, message, accepted, received


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Caps on what one request may ask for (zoo-serve's `limits.*`)."""

    max_new_tokens: int = 512  # text
    max_music_tokens: int = 2048  # music events
    max_num_samples: int = 16
    max_images: int = 64  # labels x num_samples
    max_prompt_chars: int = 4000
    max_stop: int = 8
    max_primer_bytes: int = 1_000_000
    max_body_bytes: int | None = None  # the HTTP body; None: `body_bytes()` sizes it from the caps above

    def body_bytes(self) -> int:
        """The largest request body zoo-serve reads (a 413 past it): `max_body_bytes`, or room for the largest
        inputs the other caps allow: a primer in base64, a prompt and each stop string written wholly in JSON
        escapes (12 bytes a character at worst, a surrogate pair), and 64 KiB for every other field."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        base64_primer = 4 * math.ceil(self.max_primer_bytes / 3)
        return base64_primer + 12 * self.max_prompt_chars * (1 + self.max_stop) + 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Option:
    """One request field of a member: JSON type, range, default; `check` returns the value or raises a 422."""

    name: str
    kind: Kind
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    nullable: bool = False
    max_length: int | None = None  # characters of a string, items of a list
    help: str = ""
    sampling: bool = True  # a sampling option (else a member input)

    def accepted(self) -> str:
        if self.kind in ("integer", "number"):
            lo = "" if self.minimum is None else f"{'(' if self.exclusive_minimum else '['}{_num(self.minimum)}"
            words = "an integer" if self.kind == "integer" else "a number"
            text = f"{words} in {lo}, {_num(self.maximum)}]" if lo and self.maximum is not None else words
        elif self.kind == "string":
            text = f"a string of at most {self.max_length} characters"
        elif self.kind == "boolean":
            text = "true or false"
        elif self.kind == "strings":
            text = f"a list of at most {self.max_length} strings"
        elif self.kind == "labels":
            text = f"a class id or name, or a list of at most {self.max_length} of them"
        elif self.kind == "midi":
            text = "a standard MIDI file, base64-encoded"
        else:
            text = "any JSON value"
        return text + (", or null" if self.nullable and self.kind != "any" else "")

    def check(self, value: Any) -> Any:
        def fail(why: str = "") -> OptionError:
            return OptionError(self.name, why or f"expected {self.accepted()}", self.accepted(), value)

        if value is None:
            if self.nullable:
                return None
            raise fail("null is not accepted")
        if self.kind in ("integer", "number"):
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if not numeric or (self.kind == "integer" and not isinstance(value, int)) or not math.isfinite(value):
                raise fail()
            lo = self.minimum
            low = lo is not None and (value <= lo if self.exclusive_minimum else value < lo)
            if low or (self.maximum is not None and value > self.maximum):
                raise fail(f"{value} is out of range; expected {self.accepted()}")
            return value
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise fail()
            return value
        if self.kind == "string":
            if not isinstance(value, str):
                raise fail()
            if self.max_length is not None and len(value) > self.max_length:
                raise fail(f"{len(value)} characters is too long; expected {self.accepted()}")
            return value
        if self.kind == "strings":
            if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                raise fail("expected a list of non-empty strings")
            if self.max_length is not None and len(value) > self.max_length:
                raise fail(f"{len(value)} items is too many; expected {self.accepted()}")
            return tuple(value)
        if self.kind == "labels":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int | str) and not isinstance(v, bool) for v in items) or not items:
                raise fail()
            if self.max_length is not None and len(items) > self.max_length:
                raise fail(f"{len(items)} labels is too many; expected {self.accepted()}")
            return value
        if self.kind == "any":
            return value
        if not isinstance(value, str):  # midi
            raise fail()
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise fail("not valid base64") from None
        if self.max_length is not None and len(data) > self.max_length:
            raise fail(f"{len(data)} bytes is too large; at most {self.max_length} bytes")
        return data

    def describe(self) -> dict[str, Any]:
        """The option as JSON for GET /v1/models (JSON-Schema-like names)."""
        out: dict[str, Any] = {"type": self.kind, "default": self.default, "nullable": self.nullable,
                               "sampling": self.sampling, "accepted": self.accepted(), "description": self.help}
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# ---- the sampling options every member shares (SamplingConfig's names) ---------------------------
def sampling_options(m: Any, *, max_tokens: int | None, repetition: bool = True) -> list[Option]:
    """max_new_tokens (when `max_tokens` caps it), temperature, top_k, top_p, min_p, repetition_penalty (when
    `repetition`) and seed, with the checkpoint's defaults (`m.generation`)."""
    gen = m.generation
    vocab = getattr(getattr(m.model, "config", None), "vocab_size", None)
    opts = []
    if max_tokens is not None:
        opts.append(Option(name="max_new_tokens", kind="integer", minimum=1, maximum=max_tokens,
                           default=min(int(gen.get("max_new_tokens", 64)), max_tokens),
                           help="tokens to generate (the prompt not counted)"))
    opts += [
        Option(name="temperature", kind="number", minimum=0, maximum=5, default=gen.get("temperature", 1.0),
               help="0 = greedy; higher = more random"),
        Option(name="top_k", kind="integer", minimum=1, maximum=vocab, nullable=True, default=gen.get("top_k"),
               help="keep the k most probable tokens (null = all)"),
        Option(name="top_p", kind="number", minimum=0, exclusive_minimum=True, maximum=1, nullable=True,
               default=gen.get("top_p"), help="nucleus: the smallest set of tokens with this much probability"),
        Option(name="min_p", kind="number", minimum=0, exclusive_minimum=True, maximum=1, nullable=True,
               default=gen.get("min_p"), help="keep tokens with p >= min_p * p_max"),
    ]
    if repetition:
        opts.append(Option(name="repetition_penalty", kind="number", minimum=0, exclusive_minimum=True, maximum=10,
                           default=gen.get("repetition_penalty", 1.0), help="> 1 discourages repeated tokens"))
    opts.append(Option(name="seed", kind="integer", minimum=0, maximum=MAX_SEED, nullable=True, default=None,
                       help="the same seed and options give the same sample (null = random)"))
    return opts


def guidance_option(m: Any) -> Option:
    return Option(name="guidance", kind="number", minimum=0, maximum=20, nullable=True,
                  default=m.generation.get("guidance"),
                  help="classifier-free guidance scale: 1 = none, higher = closer to the condition")


def b64(path: Path) -> str:
    """A file's bytes as base64 text (how files travel in JSON)."""
    return base64.b64encode(path.read_bytes()).decode("ascii")
