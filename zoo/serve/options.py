"""Options plumbing between HTTP and a member: `Adapter` is one loaded model as the server sees it.

Everything about a modality (its request fields, checks, batching and result JSON) is its `Member`'s
(`zoo.members.base.Member.request_options`, `check_request`, `batch_key`, `serve`); the adapter checks a
body against those fields and turns a member's `OptionError` into the server's 422. Any member that
`zoo.load` finds, a plug-in included, is served.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from zoo.members.serving import Limits, OnText, Option, OptionError
from zoo.serve.errors import RequestError, bad_field


class Adapter:
    """One loaded model (a `zoo.load` result) and its member; `options`: the request fields by name."""

    def __init__(self, m: Any, limits: Limits) -> None:
        if m.codec is None:  # e.g. a GPT-2 folder without its vocabulary files
            raise ValueError(f"{m.name or m.model_type}: no codec to read requests and write results with; "
                             "serve a checkpoint or folder that holds its codec (tokenizer) files")
        self.m, self.limits, self.member = m, limits, m.member
        self.options: dict[str, Option] = {o.name: o for o in self.member.request_options(m, limits)}

    @property
    def model(self) -> Any:
        return self.m.model

    @property
    def streams(self) -> bool:
        return self.member.streams

    def describe(self) -> dict[str, Any]:
        card = self.m.card or {}
        p = next(self.model.parameters(), None)
        return {"member": self.member.name, "model_type": self.m.model_type,
                "codec": getattr(self.m.codec, "type_name", None),
                "parameters": sum(q.numel() for q in self.model.parameters()),
                "device": str(p.device) if p is not None else None,
                "dtype": str(p.dtype).removeprefix("torch.") if p is not None else None,
                "quantize": getattr(self.m, "quantize", None),
                "card": {k: card[k] for k in ("metric", "metric_value", "perplexity", "data", "data_license", "steps")
                         if k in card},
                "streams": self.streams, "outputs": list(self.member.outputs),
                "inputs": {n: o.describe() for n, o in self.options.items() if not o.sampling},
                "options": {n: o.describe() for n, o in self.options.items() if o.sampling}}

    def refused(self, e: OptionError) -> RequestError:
        """The member's refusal of a field as the server's 422 (the field's own `accepted` unless it says)."""
        option = self.options.get(e.field)
        accepted = e.accepted if e.accepted is not None or option is None else option.accepted()
        return bad_field(e.field, e.message, accepted, e.received)

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Checked options with defaults filled in; a 422 naming the first bad or unknown field."""
        unknown = sorted(set(body) - set(self.options))
        if unknown:
            raise bad_field(unknown[0], f"not an option of {self.member.name} models", sorted(self.options))
        try:
            opts = {n: o.check(body[n]) if n in body else o.default for n, o in self.options.items()}
            self.member.check_request(self.m, opts, self.limits)
        except OptionError as e:
            raise self.refused(e) from None
        return opts

    def batch_key(self, opts: Mapping[str, Any]) -> Hashable | None:
        """Requests with equal keys may run as one batch; None: this one runs alone."""
        return self.member.batch_key(opts)

    def run(self, batch: Sequence[dict[str, Any]], on_text: OnText | None = None) -> list[dict[str, Any]]:
        """Generate for `batch` (one request unless `batch_key` groups them); one result dict per request."""
        try:
            return self.member.serve(self.m, batch, on_text)
        except OptionError as e:
            raise self.refused(e) from None


def adapter_for(m: Any, limits: Limits) -> Adapter:
    """The adapter of a `zoo.load` result; ValueError (naming the known members) when no member serves it."""
    return Adapter(m, limits)


__all__ = ["Adapter", "Limits", "Option", "RequestError", "adapter_for"]
