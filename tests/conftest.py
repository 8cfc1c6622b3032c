"""Shared fixtures: every test starts from a fresh global configuration and an empty store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import autotrace
from autotrace.tracer import _S


@pytest.fixture(autouse=True)
def fresh_autotrace() -> Iterator[None]:
    """Reset autotrace to an always-sampling, empty state around each test."""
    autotrace.shutdown(2.0)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    autotrace.clear_traces()
    autotrace.metrics.reset()
    _S.errors.clear()
    yield
    autotrace.shutdown(2.0)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    autotrace.clear_traces()


def all_spans() -> list[autotrace.Span]:
    """Every span in the global store, trace by trace."""
    return [s for trace in autotrace.get_trace_store().traces() for s in trace]
