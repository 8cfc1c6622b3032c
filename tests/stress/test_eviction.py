"""Stress: a million spans into a store of 1,000 traces stays within a fixed memory bound."""

from __future__ import annotations

import collections
import gc
import tracemalloc

import pytest

import autotrace
from autotrace import traced

pytestmark = pytest.mark.slow  # stress: deselect with -m 'not slow'; the normal test command runs it

TOTAL_SPANS = 1_000_000
SPANS_PER_TRACE = 10
MAX_TRACES = 1000
# 1,000 traces x 10 spans measured at about 3 MB with tracemalloc on CPython 3.11;
# the bound leaves room for interpreter noise and other versions.
MEMORY_BOUND = 16 * 1024 * 1024
# Between the first tenth of the run and its end the store is full and only swaps
# traces, so traced memory must not grow with the number of spans recorded.
GROWTH_BOUND = 2 * 1024 * 1024


@traced("leaf")
def leaf() -> None:
    """A cheap child span."""


@traced("root")
def root(newest: collections.deque[int]) -> None:
    """A trace of ten spans: this root and nine leaves."""
    for _ in range(SPANS_PER_TRACE - 1):
        leaf()
    newest.append(autotrace.current_span()._trace_id)  # type: ignore[union-attr]


def test_million_spans_into_1000_traces_bounded_memory_keeps_newest() -> None:
    """1,000,000 spans into max_traces=1000: memory stays under 16 MB and the newest 1,000 traces remain."""
    store = autotrace.configure(sample_rate=1.0, max_traces=MAX_TRACES)
    newest: collections.deque[int] = collections.deque(maxlen=MAX_TRACES)
    traces = TOTAL_SPANS // SPANS_PER_TRACE
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(traces // 10):
            root(newest)
        store.span_count()
        early = tracemalloc.get_traced_memory()[0] - baseline
        for _ in range(traces - traces // 10):
            root(newest)
        store.span_count()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    late = current - baseline
    print(f"store full after 10%: {early / 1e6:.1f} MB, at the end: {late / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB")
    assert peak - baseline < MEMORY_BOUND
    assert late - early < GROWTH_BOUND

    kept = store.traces()
    assert [trace[0]._trace_id for trace in kept] == list(newest), "the store must hold exactly the newest traces"
    assert all(len(trace) == SPANS_PER_TRACE for trace in kept)
    stats = store.stats()
    assert stats["traces"] == MAX_TRACES
    assert stats["spans"] == MAX_TRACES * SPANS_PER_TRACE
    assert stats["evicted_traces"] == traces - MAX_TRACES
    assert stats["dropped_spans"] == 0


def test_runaway_loop_in_one_trace_is_capped_and_counted() -> None:
    """A loop making 200,000 spans in one trace keeps only max_spans_per_trace; the rest are counted as dropped."""
    store = autotrace.configure(sample_rate=1.0, max_spans_per_trace=500)

    @traced("runaway")
    def runaway() -> int:
        for _ in range(200_000):
            leaf()
        return 7

    tracemalloc.start()
    try:
        assert runaway() == 7
        store.span_count()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = store.stats()
    assert stats["traces"] == 1
    assert stats["spans"] == 500
    assert stats["dropped_spans"] == 200_001 - 500
    assert peak < MEMORY_BOUND
