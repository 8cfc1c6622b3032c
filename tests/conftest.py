"""Shared fixtures: every test starts from a fresh global configuration and an empty store."""

from __future__ import annotations

import os
import time
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


def exit_code_of_forked(pid: int, seconds: float) -> int:
    """The exit code of a forked child, failing the test (child killed) if it has not ended in ``seconds``:
    what a child hung on a lock held at fork time does."""
    deadline = time.monotonic() + seconds
    while True:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(code)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on a lock held at fork time")
        time.sleep(0.05)
