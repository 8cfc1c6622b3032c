"""Stress: a collector polls /traces?clear=true every 50 ms while long requests (0.6 s open spans) run.

Every span, the long requests' roots included, must come out of exactly one poll:
a trace whose early spans were taken while it was still open delivers the rest
later, however many other traces were cleared meanwhile, and nothing is dropped.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

import autotrace
import autotrace.server as server
from autotrace import span
from tests.otlp_check import spans_of

pytestmark = pytest.mark.slow  # stress: deselect with -m 'not slow'; the normal test command runs it

MAX_TRACES = 128
LONG_REQUESTS = 20
UPSTREAM_SECONDS = 0.6
SHORT_PER_POLL = 30  # short traces recorded between two polls
# The upstream call also lasts at least this many polls: 12 x 30 short traces
# taken while the requests are open is well past MAX_TRACES, however slow the machine.
UPSTREAM_POLLS = 12
POLL_SECONDS = 0.05


class _Polls:
    """How many polls have completed, to wait on."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def done(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait_past(self, count: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.count >= count, timeout=30)


def _long_request(i: int, polls: _Polls) -> None:
    """A request: a quick step, a slow upstream call in an open span, a last step; the root ends last."""
    with span("request", kind="server", attributes={"i": i}):
        with span("prepare", attributes={"i": i}):
            pass
        with span("upstream", kind="client", attributes={"i": i}):
            start = polls.count
            time.sleep(UPSTREAM_SECONDS)
            polls.wait_past(start + UPSTREAM_POLLS)
        with span("respond", attributes={"i": i}):
            pass


def _short_trace(n: int) -> None:
    def run() -> None:
        with span("short", attributes={"n": n}):
            pass

    contextvars.Context().run(run)  # a trace of its own, whatever is current in this thread


def test_collector_clearing_every_50ms_gets_every_span_of_long_requests_exactly_once() -> None:
    """20 requests with a 0.6 s upstream span, 30 short traces per poll, /traces?clear=true every 50 ms: all once."""
    store = autotrace.configure(sample_rate=1.0, max_traces=MAX_TRACES)
    handle = server.start_in_background("127.0.0.1", 0)
    url = handle.url.rstrip("/") + "/traces?clear=true"
    polls: list[list[dict[str, Any]]] = []
    polled = _Polls()
    stop = threading.Event()
    failures: list[BaseException] = []

    def poll() -> None:
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200
            polls.append(spans_of(json.loads(resp.read())))

    def collector() -> None:
        try:
            while not stop.is_set():
                poll()
                polled.done()
                time.sleep(POLL_SECONDS)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            polled.done()

    def short_traffic(done: threading.Event) -> None:
        n = 0
        while not done.is_set() and not failures:
            for _ in range(SHORT_PER_POLL):
                _short_trace(n)
                n += 1
            # Wait for a poll that started after these: each poll then takes at most
            # about SHORT_PER_POLL of them, so the store never fills (nothing is
            # evicted) however slow the machine is.
            polled.wait_past(polled.count + 2)
        shorts.append(n)

    shorts: list[int] = []
    requests_done = threading.Event()
    collector_thread = threading.Thread(target=collector)
    traffic = threading.Thread(target=short_traffic, args=(requests_done,))
    requests = [threading.Thread(target=_long_request, args=(i, polled)) for i in range(LONG_REQUESTS)]
    try:
        collector_thread.start()
        traffic.start()
        for t in requests:
            t.start()
        for t in requests:
            t.join(timeout=60)
        requests_done.set()
        traffic.join(timeout=60)
        stop.set()
        collector_thread.join(timeout=60)
        assert not failures, failures
        assert not any(t.is_alive() for t in [*requests, traffic, collector_thread]), "a thread hung"
        for _ in range(2):  # what is left, and the SERVER span of the last poll
            poll()
    finally:
        handle.stop()
    poll_count = len(polls)
    assert poll_count >= UPSTREAM_POLLS, "the collector should have polled many times while the requests ran"

    every = [s for batch in polls for s in batch]
    ids = Counter((s["traceId"], s["spanId"]) for s in every)
    assert [key for key, n in ids.items() if n > 1] == [], "spans delivered twice"

    ours = [s for s in every if s["name"] in ("request", "prepare", "upstream", "respond")]
    by_name = Counter(s["name"] for s in ours)
    assert by_name == dict.fromkeys(("request", "prepare", "upstream", "respond"), LONG_REQUESTS), by_name
    # Each request is one trace: its four spans share the root's trace id.
    traces = Counter(s["traceId"] for s in ours)
    assert sorted(traces.values()) == [4] * LONG_REQUESTS
    # The roots came after their early spans had been taken: in a later poll.
    first_poll: dict[str, int] = {}
    root_poll: dict[str, int] = {}
    for number, batch in enumerate(polls):
        for s in batch:
            if s["name"] == "prepare":
                first_poll[s["traceId"]] = number
            elif s["name"] == "request":
                root_poll[s["traceId"]] = number
    assert sum(root_poll[t] > first_poll[t] for t in root_poll) >= LONG_REQUESTS // 2

    (made,) = shorts
    assert sum(s["name"] == "short" for s in every) == made
    stats = store.stats()
    assert stats["dropped_spans"] == 0 and stats["evicted_traces"] == 0, stats
