"""Helpers for users' own tests: capture the spans a block of code produces.

with autotrace.testing.capture_spans() as spans:
    handler()
assert [s.name for s in spans] == ["tokenize", "handler"]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ._state import CaptureProcessor
from .spans import Span
from .tracer import add_processor, force_sampling, remove_processor

__all__ = ["CapturedSpans", "capture_spans"]


class CapturedSpans(list[Span]):
    """The finished spans of a ``capture_spans()`` block, in the order they ended."""

    def names(self) -> list[str]:
        """The span names, in order."""
        return [s.name for s in self]

    def by_name(self, name: str) -> list[Span]:
        """The spans with this name."""
        return [s for s in self if s.name == name]

    def one(self, name: str) -> Span:
        """The only span with this name (AssertionError otherwise)."""
        found = self.by_name(name)
        assert len(found) == 1, f"expected one span named {name!r}, found {len(found)}: {self.names()}"
        return found[0]


class _Collector(CaptureProcessor):
    """Appends every finished span to a CapturedSpans list."""

    def __init__(self, into: CapturedSpans) -> None:
        self.into = into
        self.lock = threading.Lock()

    def on_end(self, span: Span) -> None:
        with self.lock:
            self.into.append(span)


@contextmanager
def capture_spans() -> Iterator[CapturedSpans]:
    """Collect every span that ends inside the block, whatever the sample rate.

    While the block runs, every new trace is sampled (in all threads); spans
    also reach the store and exporters as usual.
    """
    spans = CapturedSpans()
    collector = _Collector(spans)
    add_processor(collector)
    force_sampling(+1)
    try:
        yield spans
    finally:
        force_sampling(-1)
        remove_processor(collector)
