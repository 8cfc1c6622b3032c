"""Exceptions raised by signal handlers inside autotrace's code reach the caller; the context is restored."""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import current_span, span, traced
from autotrace.context import CURRENT
from autotrace.tracer import _S
from tests.conftest import all_spans

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")


class Deadline(Exception):
    """What the test's signal handler raises (an Exception, as TimeoutError is)."""


@pytest.fixture
def alarm_handler() -> Iterator[Callable[[Callable[[int, Any], None]], None]]:
    """Install a SIGALRM handler for the test; restore the previous handler and timer afterwards."""
    old_handler = signal.getsignal(signal.SIGALRM)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout may use SIGALRM: put it back after

    def install(handler: Callable[[int, Any], None]) -> None:
        signal.signal(signal.SIGALRM, handler)

    yield install
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old_handler)
    if old_timer[0] > 0:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)


@traced
def _leaf(i: int) -> int:
    if i % 3 == 0:
        raise ValueError(f"leaf {i} failed")
    return i


@traced
def _middle(i: int) -> int:
    with span("inner") as s:
        s.set_attribute("i", i)
        try:
            return _leaf(i)
        except ValueError:
            return -1


def _under_deadlines(work: Callable[[int], object], seconds: float) -> dict[str, Any]:
    """Run ``work`` under many short SIGALRM deadlines; count the deadlines that reached this frame."""
    counts: dict[str, Any] = {"fired": 0, "caught": 0, "lost": 0, "leaked": 0, "where_lost": []}
    interrupted: list[str] = []
    received: set[int] = set()

    def on_alarm(signum: int, frame: Any) -> None:
        counts["fired"] += 1
        # Where the deadline landed (innermost frames first): named in the failure message if it is lost.
        interrupted[:] = []
        while frame is not None and len(interrupted) < 6:
            interrupted.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        raise TimeoutError(counts["fired"])

    signal.signal(signal.SIGALRM, on_alarm)
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        before = counts["fired"]
        # Each deadline carries its number; it counts as caught wherever it reaches this frame. The
        # outer try takes one that lands in this loop's own bookkeeping (a signal raised by the
        # kernel just before the timer was disarmed is handled at the next check, which can be
        # here): that one was not swallowed either.
        try:
            try:
                # A one-shot timer of 50-450 µs: the handler lands at varying points of the work.
                signal.setitimer(signal.ITIMER_REAL, 0.00005 + (rounds % 9) * 0.00005)
                i = 0
                while counts["fired"] == before:
                    work(i)
                    i += 1
                counts["lost"] += 1  # the handler ran but its exception never got here
                if len(counts["where_lost"]) < 5:
                    counts["where_lost"].append(" < ".join(interrupted))
            except TimeoutError as deadline:
                received.add(deadline.args[0])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except TimeoutError as late:
            received.add(late.args[0])
        rounds += 1
        if CURRENT.get() is not None:
            counts["leaked"] += 1
            CURRENT.set(None)
        if rounds % 50 == 0:
            autotrace.clear_traces()  # so the store never evicts: evicted_traces must then stay exactly 0
    counts["caught"] = len(received)
    return counts


@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="CPython 3.13 lets an exception raised by a signal handler at a while loop's condition escape an "
    "enclosing try/except (reproduced with no autotrace at all), so the harness cannot count the deadlines",
)
def test_every_signal_deadline_reaches_the_caller(alarm_handler: Any) -> None:
    """Under thousands of SIGALRM deadlines around traced calls and spans, none is swallowed, no context leaks."""
    alarm_handler(signal.SIG_DFL)
    # Python itself drops an exception raised inside a garbage-collector callback
    # ("Exception ignored in ..."), and hypothesis leaves one installed once any of
    # its tests ran in this process: no collections while the deadlines fire.
    gc.disable()
    try:
        autotrace.configure(sample_rate=1.0, max_traces=100_000)
        sampled = _under_deadlines(_middle, 1.5)
        assert autotrace.get_trace_store().stats()["evicted_traces"] == 0  # the trace counter kept up with the ring
        autotrace.configure(sample_rate=0.0)  # the non-recording spans' paths too
        unsampled = _under_deadlines(_middle, 0.7)
    finally:
        gc.enable()
    for counts in (sampled, unsampled):
        assert counts["fired"] > 50, counts  # the test did test something
        assert counts["lost"] == 0, counts["where_lost"]
        assert counts["caught"] == counts["fired"], counts
        assert counts["leaked"] == 0, counts
    assert not current_span().is_recording
    assert CURRENT.get() is None
    assert autotrace.tracer.errors() == {}  # a handler's exception is not counted as autotrace's failure
    assert _S.force == 0
    stats = autotrace.get_trace_store().stats()
    counters = [v for v in stats.values() if isinstance(v, int)] + list(stats["tail_sampling"].values())
    assert min(counters) >= 0, stats


def _raise_in_handler(exc_type: type[BaseException]) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        raise exc_type("from the handler")

    return handler


class _SignalsWhenPrinted:
    """A value whose __str__ sends SIGALRM to this process (its handler then raises inside autotrace)."""

    def __str__(self) -> str:
        signal.raise_signal(signal.SIGALRM)
        return "never"


def test_handler_exception_inside_attribute_conversion_propagates(alarm_handler: Any) -> None:
    """A signal handler raising while set_attribute converts a value: the exception reaches the caller."""
    alarm_handler(_raise_in_handler(Deadline))
    with pytest.raises(Deadline), span("outer") as s:
        s.set_attribute("value", _SignalsWhenPrinted())
    assert CURRENT.get() is None
    (stored,) = all_spans()
    assert stored.status.code == autotrace.StatusCode.ERROR
    assert autotrace.tracer.errors() == {}


class _SignalsWhenPrintedError(ValueError):
    """An exception whose message sends SIGALRM (recorded by the span it leaves)."""

    def __str__(self) -> str:
        signal.raise_signal(signal.SIGALRM)
        return "never"


def test_handler_exception_while_recording_an_exception_propagates(alarm_handler: Any) -> None:
    """A handler raising while a leaving exception is recorded: its exception, not the original, reaches the caller."""
    alarm_handler(_raise_in_handler(Deadline))

    @traced
    def fails() -> None:
        raise _SignalsWhenPrintedError()

    with pytest.raises(Deadline):
        fails()
    assert CURRENT.get() is None
    (stored,) = all_spans()  # still ended and stored
    assert stored.end_time_unix_nano is not None
    assert autotrace.tracer.errors() == {}


def test_self_uninstalling_handler_is_still_recognised(alarm_handler: Any) -> None:
    """A handler that puts SIG_DFL back before raising is still known as a handler: its exception propagates."""

    def once(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        raise Deadline("once")

    alarm_handler(once)
    with pytest.raises(Deadline), span("outer") as s:
        s.set_attribute("value", _SignalsWhenPrinted())
    assert CURRENT.get() is None


def test_keyboard_interrupt_inside_recording_propagates(alarm_handler: Any) -> None:
    """A KeyboardInterrupt raised while an exception is being formatted is never swallowed."""
    alarm_handler(_raise_in_handler(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt), span("outer"):
        raise _SignalsWhenPrintedError()
    assert CURRENT.get() is None


def test_own_failures_are_still_contained() -> None:
    """A value whose __str__ fails by itself (no signal) is still autotrace's to contain: nothing is raised."""

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("broken __str__")

    with span("outer") as s:
        s.set_attribute("value", Broken())
    (stored,) = all_spans()
    assert stored.attributes["value"].startswith("<unprintable")
