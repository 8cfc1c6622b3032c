"""autotrace.testing.capture_spans: a public helper for users' own tests."""

from __future__ import annotations

import threading

import pytest

import autotrace
from autotrace import span, traced
from autotrace.testing import capture_spans


def test_capture_collects_in_end_order_and_helpers() -> None:
    """Spans are collected in the order they end; names/by_name/one help assertions."""

    @traced("outer")
    def outer() -> None:
        with span("inner"):
            pass

    with capture_spans() as spans:
        outer()
    assert spans.names() == ["inner", "outer"]
    assert spans.one("outer").span_id == spans.by_name("inner")[0].parent_span_id
    with pytest.raises(AssertionError, match="expected one span named 'missing'"):
        spans.one("missing")


def test_capture_stops_after_block_and_nests() -> None:
    """Nothing is captured after the block; nested captures both see inner spans."""
    with capture_spans() as outer_spans:
        with span("a"):
            pass
        with capture_spans() as inner_spans:
            with span("b"):
                pass
    with span("c"):
        pass
    assert outer_spans.names() == ["a", "b"]
    assert inner_spans.names() == ["b"]


def test_capture_sees_other_threads() -> None:
    """Spans that end in other threads during the block are captured too."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    with capture_spans() as spans:
        t = threading.Thread(target=lambda: span("in-thread").__enter__().__exit__(None, None, None))
        t.start()
        t.join()
    assert spans.names() == ["in-thread"]
