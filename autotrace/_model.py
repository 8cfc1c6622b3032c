"""The span model's value types: kinds, status, span context, events, links, and ids.

Plain immutable values (enums and named tuples) and the functions that draw,
parse and derive ids. Nothing here knows about spans being recorded, so every
other module can build on it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "DETACHED",
    "INVALID_SPAN_CONTEXT",
    "Link",
    "SpanContext",
    "SpanEvent",
    "SpanKind",
    "Status",
    "StatusCode",
    "continued_trace_id",
    "new_span_id",
    "new_trace_id",
    "parse_id",
    "trace_state_of",
    "unsampled_context",
]

_getrandbits = random.getrandbits
_MASK64 = (1 << 64) - 1


class SpanKind(enum.IntEnum):
    """What a span represents, with the integer values of OTLP's SpanKind."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5

    @classmethod
    def coerce(cls, value: SpanKind | str | int) -> SpanKind:
        """Return the member for a member, its lower-case name or its integer value."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(m.name.lower() for m in cls)
        raise ValueError(f"kind must be a SpanKind or one of {names}; got {value!r}")


class StatusCode(enum.IntEnum):
    """A span's outcome, with the integer values of OTLP's Status.StatusCode."""

    UNSET = 0
    OK = 1
    ERROR = 2


class Status(NamedTuple):
    """A status code and, for ERROR only, a description."""

    code: StatusCode = StatusCode.UNSET
    description: str | None = None


_UNSET_STATUS = Status()


class SpanContext(NamedTuple):
    """The part of a span that crosses process boundaries (W3C trace context).

    ``sampled`` and ``random`` are the two trace flags W3C Trace Context
    defines (0x01, and 0x02 of Level 2: the trace id's right 7 bytes are
    random); ``trace_flags`` is the byte they make.
    """

    trace_id: int
    span_id: int
    sampled: bool = True
    is_remote: bool = False
    trace_state: str = ""
    random: bool = False

    @property
    def trace_flags(self) -> int:
        """The W3C trace-flags byte: sampled (0x01) and random trace id (0x02)."""
        return (0x01 if self.sampled else 0) | (0x02 if self.random else 0)

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 lower-case hex characters."""
        return self.trace_id.to_bytes(16, "big").hex()

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 lower-case hex characters."""
        return self.span_id.to_bytes(8, "big").hex()

    @property
    def is_valid(self) -> bool:
        """True when neither id is zero."""
        return self.trace_id != 0 and self.span_id != 0


INVALID_SPAN_CONTEXT = SpanContext(0, 0, False)


class SpanEvent(NamedTuple):
    """A timestamped annotation on a span (``add_event``), such as ``exception``."""

    name: str
    attributes: Mapping[str, Any]
    timestamp: int  # unix nanoseconds
    dropped_attributes_count: int = 0


class Link(NamedTuple):
    """A reference from a span to another span, possibly in another trace."""

    context: SpanContext
    attributes: Mapping[str, Any] = {}
    dropped_attributes_count: int = 0

    @property
    def trace_id(self) -> str:
        """The linked trace id as hex."""
        return self.context.trace_id_hex

    @property
    def span_id(self) -> str:
        """The linked span id as hex."""
        return self.context.span_id_hex


class _Detached:
    """Marks a hand-built Span: it is stored by record_span(), not by end()."""

    __slots__ = ("token",)

    def __init__(self, token: Any = None) -> None:
        self.token = token


DETACHED = _Detached()


class _TraceId(int):
    """A trace id continued from a parent context, carrying that trace's W3C state.

    Every local descendant of a span copies the span's ``_trace_id`` object as
    it is (the hot path does nothing else with it), so a trace state and a
    random flag received with a remote parent reach every span below it for
    free: no slot, no lookup, no branch per span. A plain int, the common
    case (every trace started here), means "random id, no trace state".
    """

    trace_state: str
    random: bool


def continued_trace_id(trace_id: int, trace_state: str = "", random: bool = True) -> int:
    """``trace_id`` as a span keeps it: a plain int when random without trace state, else a _TraceId."""
    if random and not trace_state:
        return int(trace_id)
    tid = _TraceId(trace_id)
    tid.trace_state = trace_state
    tid.random = random
    return tid


def trace_state_of(trace_id: int) -> tuple[str, bool]:
    """The trace state and random flag a span's ``_trace_id`` carries (see _TraceId)."""
    if trace_id.__class__ is int:
        return "", True
    return getattr(trace_id, "trace_state", ""), getattr(trace_id, "random", True)


def new_span_id() -> int:
    """Return a random non-zero 64-bit span id."""
    return _getrandbits(64) or 1


def new_trace_id() -> int:
    """Return a random non-zero 128-bit trace id."""
    return _getrandbits(128) or 1


def parse_id(value: int | str, bits: int, what: str) -> int:
    """A ``bits``-bit id from an int or a hex string; ValueError/TypeError naming ``what`` otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if len(text) != bits // 4 or any(ch not in "0123456789abcdef" for ch in text):
            raise ValueError(f"{what} must be {bits // 4} hex characters; got {value!r}")
        number = int(text, 16)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise TypeError(f"{what} must be an int or a hex string; got {type(value).__name__}")
    if not 0 < number < 1 << bits:
        raise ValueError(f"{what} must be a non-zero {bits}-bit id; got {value!r}")
    return number


def _mix(x: int) -> int:
    """splitmix64's finaliser: spreads a 64-bit seed over 64 well-mixed bits."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def unsampled_context(seed: int) -> SpanContext:
    """The ids of an unsampled trace started by @traced from its 64-bit seed.

    The seed is the trace id's low 64 bits (those OpenTelemetry samples on,
    drawn at random: the context says so); the high half and the span id are
    derived from it, so they are the same every time they are asked for and
    cost nothing when nobody asks.
    """
    high = _mix(seed) or 1
    span_id = _mix(seed ^ 0x5DEECE66D) or 1
    return SpanContext((high << 64) | seed, span_id, False, False, "", True)
