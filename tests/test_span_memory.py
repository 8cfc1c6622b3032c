"""What a stored span and its trace keep in memory: no room reserved that nothing uses."""

from __future__ import annotations

import sys
from typing import Any

import autotrace
from autotrace import span, traced
from autotrace.store import TraceStore

# What a list holding exactly two items takes: a one-span trace's buffer, [trace_id, span].
TWO_ITEMS = sys.getsizeof([0, 0])


def _buffers() -> list[list[Any]]:
    return list(autotrace.get_trace_store()._ring)


@traced
def _leaf() -> None:
    return None


def test_one_span_trace_buffer_has_no_spare_room() -> None:
    """The buffer of a trace of one span, from span() or @traced, is a list of exactly two slots."""
    with span("root"):
        pass
    _leaf()
    a, b = _buffers()
    assert len(a) == len(b) == 2
    assert sys.getsizeof(a) == sys.getsizeof(b) == TWO_ITEMS


def test_store_opened_buffers_have_no_spare_room() -> None:
    """Buffers the store opens itself (a new trace, a trace continued from elsewhere) fit their first span too."""
    store = TraceStore(10)
    for buf in (store._new_trace(5), store._open(6)):
        buf.append(object())
        assert sys.getsizeof(buf) == TWO_ITEMS


def test_larger_traces_still_grow_their_buffer() -> None:
    """A buffer made with room for one span takes any number of them, in the order they ended."""
    with span("root"):
        for i in range(20):
            with span(f"child{i}"):
                pass
    (buf,) = _buffers()
    assert [s.name for s in buf[1:]] == [f"child{i}" for i in range(20)] + ["root"]
