"""The one ContextVar that holds the current span (see context.py for what it may hold)."""

from __future__ import annotations

import contextvars
from typing import Any

CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("autotrace.current_span", default=None)
