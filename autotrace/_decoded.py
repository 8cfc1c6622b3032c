"""What both OTLP decoders share: the error refusing a request, its spans, a Span rebuilt slot by slot."""

from __future__ import annotations

from typing import Any

from .otlp import Origin
from .spans import Link, Span, SpanEvent, SpanKind, Status, continued_trace_id

__all__ = ["MAX_VALUE_DEPTH", "Decoded", "ReceiveError", "build_span"]

MAX_VALUE_DEPTH = 16
"""How deep array and kvlist attribute values may nest: deeper ones could not be encoded back (a span is rejected)."""

_MAX_REASONS = 5  # distinct rejection reasons named in one partialSuccess message

_KINDS = {m.value: m for m in SpanKind}


class ReceiveError(Exception):
    """A request the receiver refuses as a whole: ``status`` (400, 411, 413, 415) and a message naming why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Decoded:
    """The spans of one request, with how many were rejected and why."""

    __slots__ = ("reasons", "rejected", "spans")

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejected = 0
        self.reasons: list[str] = []

    def reject(self, count: int, reason: str) -> None:
        """Count ``count`` spans refused for ``reason``."""
        self.rejected += count
        if reason not in self.reasons and len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def message(self) -> str:
        """The reasons, for ``partialSuccess.errorMessage``."""
        return f"{self.rejected} spans rejected: " + "; ".join(self.reasons)


def build_span(
    name: str,
    kind: SpanKind,
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    flags: int,
    trace_state: str,
    start: int,
    end: int,
    attributes: dict[str, Any],
    events: list[SpanEvent],
    links: list[Link],
    dropped: list[int],
    status: Status,
    where: Origin | None,
) -> Span:
    """A finished Span made slot by slot, as the tracer does: nothing re-validated, truncated or re-timed."""
    s = object.__new__(Span)
    s._name = name
    s._kind = kind
    # Span flags (otlp.py): random trace id (0x02) when known (0x100), parent remote (0x200);
    # a span sent without them reads as a trace with a random id.
    random = not flags & 0x100 or bool(flags & 0x02)
    s._trace_id = continued_trace_id(trace_id, trace_state, random)
    s._sid = span_id
    s._parent_id = parent_id
    s._extra = None  # before the folded fields below are set (see Span.__slots__)
    s._t0 = start
    s._t1 = end if end >= start else start
    s._attr_data = attributes
    s._token = None
    s._trace = None
    s._status = status
    if events:
        s._events = events
    if links:
        s._links = links
    if dropped[0] or dropped[1] or dropped[2]:
        s._dropped = dropped
    if flags & 0x200:
        s._remote_parent = True
    if where is not None:
        s._extra_for_write().origin = where
    return s
