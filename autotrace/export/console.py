"""A console exporter for development: one readable line per span, children indented."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from .._errors import internal_error
from ..spans import Span
from ._base import Exporter

__all__ = ["ConsoleExporter", "format_spans"]

_MAX_ATTRIBUTES = 4
_MAX_VALUE = 40


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _line(span: Span, depth: int) -> str:
    duration = (span.duration_ns or 0) / 1e6
    status = span.status
    state = status.code.name
    if status.description:
        state += f" ({_short(status.description)})"
    attrs = list(span._attrs.items())
    shown = " ".join(f"{k}={_short(v)}" for k, v in attrs[:_MAX_ATTRIBUTES])
    if len(attrs) > _MAX_ATTRIBUTES:
        shown += f" +{len(attrs) - _MAX_ATTRIBUTES} more"
    kind = "" if span.kind.name == "INTERNAL" else f" [{span.kind.name.lower()}]"
    text = f"{span.trace_id[:8]} {'  ' * depth}{span.name}{kind} {duration:.2f} ms {state}"
    return f"{text}  {shown}" if shown else text


def format_spans(spans: Sequence[Span]) -> list[str]:
    """Lines for ``spans``: each trace as a tree (children under their parent, by start time).

    A span whose parent is not among ``spans`` (another batch, another service)
    starts a tree of its own.
    """
    by_id = {(s._trace_id, s._span_id): s for s in spans}
    children: dict[tuple[int, int], list[Span]] = {}
    roots: list[Span] = []
    for s in spans:
        parent = (s._trace_id, s._parent_id) if s._parent_id is not None else None
        if parent is not None and parent in by_id and by_id[parent] is not s:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    lines: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[Span, int]] = [(r, 0) for r in sorted(roots, key=lambda s: s._start, reverse=True)]
    while stack:
        s, depth = stack.pop()
        if id(s) in seen:  # a cycle in hand-made ids must not loop forever
            continue
        seen.add(id(s))
        lines.append(_line(s, depth))
        kids = children.get((s._trace_id, s._span_id), [])
        stack.extend((k, depth + 1) for k in sorted(kids, key=lambda k: k._start, reverse=True))
    return lines


class ConsoleExporter(Exporter):
    """Prints each batch as a span tree on ``stream`` (``sys.stderr`` at the time of writing by default).

    Example line: ``5b8efff7   tokenize 0.41 ms UNSET  gen_ai.usage.input_tokens=3``
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._counts = {"exported": 0, "failed": 0}

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """Write one line per span; True once written."""
        try:
            text = "".join(line + "\n" for line in format_spans(spans))
            stream = self.stream if self.stream is not None else sys.stderr
            with self._lock:
                stream.write(text)
                stream.flush()
        except Exception as exc:
            internal_error("console export", exc)
            self._counts["failed"] += len(spans)
            return False
        self._counts["exported"] += len(spans)
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Nothing to release."""

    def after_fork(self) -> None:
        """In a forked child: a new lock (and counters from zero)."""
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        """Counters: spans printed and spans that could not be printed."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"ConsoleExporter({self.stream!r})"
