"""The current span, kept in a ContextVar, and ways to carry it where it does not flow.

asyncio tasks copy the context when they are created, so a task started inside
a span sees that span as its parent. Threads start with an empty context: use
``run_in_context`` / ``wrap`` / ``ContextExecutor`` to carry the caller's trace
into a thread or an executor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias, Union

from ._current import CURRENT as _CURRENT
from .spans import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanContext

__all__ = ["current_span", "current_span_context", "use_span"]

_MASK64 = (1 << 64) - 1

# What the ContextVar holds: None outside any span; a Span when sampled; a
# NonRecordingSpan for an unsampled or remote context made current; or a bare
# int, the low 64 bits of an unsampled trace id started by @traced. The int is
# the cheapest thing that still identifies the trace: its ids are derived from
# it only when somebody asks (current_span(), propagation), see below.
Current: TypeAlias = Union[Span, NonRecordingSpan, int, None]
CURRENT = _CURRENT

_INVALID = NonRecordingSpan(INVALID_SPAN_CONTEXT)


def _mix(x: int) -> int:
    """splitmix64's finaliser: spreads a 64-bit seed over 64 well-mixed bits."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def unsampled_context(seed: int) -> SpanContext:
    """The ids of an unsampled trace started by @traced from its 64-bit seed.

    The seed is the trace id's low 64 bits (those OpenTelemetry samples on); the
    high half and the span id are derived from it, so they are the same every
    time they are asked for and cost nothing when nobody asks.
    """
    high = _mix(seed) or 1
    span_id = _mix(seed ^ 0x5DEECE66D) or 1
    return SpanContext((high << 64) | seed, span_id, False, False)


def current_span() -> Span | NonRecordingSpan:
    """The active span, or a non-recording span (ids all zero) outside any span."""
    cur = CURRENT.get()
    if cur is None:
        return _INVALID
    if cur.__class__ is int:
        return NonRecordingSpan(unsampled_context(cur))
    result: Span | NonRecordingSpan = cur
    return result


def current_span_context() -> SpanContext | None:
    """The active span's context, or None outside any span."""
    cur = CURRENT.get()
    if cur is None:
        return None
    if cur.__class__ is int:
        return unsampled_context(cur)
    ctx: SpanContext = cur.get_span_context()
    return ctx


@contextmanager
def use_span(
    span: Span | NonRecordingSpan | SpanContext | None, *, end_on_exit: bool = False
) -> Iterator[Span | NonRecordingSpan]:
    """Make a span, or a context from ``propagation.extract``, current for a block.

    Spans started in the block become its children; with a remote context they
    continue the caller's trace. ``None`` (an invalid header) leaves the
    current context as it is.
    """
    if span is None:
        yield current_span()
        return
    target = NonRecordingSpan(span) if isinstance(span, SpanContext) else span
    token = CURRENT.set(target)
    try:
        yield target
    finally:
        CURRENT.reset(token)
        if end_on_exit:
            target.end()
