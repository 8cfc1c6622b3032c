"""The one ContextVar that holds the current span (see context.py for what it may hold)."""

from __future__ import annotations

import contextvars
from typing import Any

from ._model import SpanContext, unsampled_context

CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("autotrace.current_span", default=None)


def current_span_context() -> SpanContext | None:
    """The active span's context, or None outside any span."""
    cur = CURRENT.get()
    if cur is None:
        return None
    if cur.__class__ is int:
        return unsampled_context(cur)
    ctx: SpanContext = cur.get_span_context()
    return ctx
