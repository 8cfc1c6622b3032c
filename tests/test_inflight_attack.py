"""GET /inflight attacked: what the chain's links keep alive, a parent ending as a child links, tail sampling, load."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import json
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

import autotrace
from autotrace import _inflight, _tail, decorators, span, traced, tracer
from autotrace.config import TraceConfig
from autotrace.propagation import attach
from autotrace.server import ServerHandle, start_in_background
from autotrace.spans import Span
from tests.server_helpers import fetch
from tests.test_inflight import filed, well_formed


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """The real server on a free loopback port, without a token."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    with start_in_background(port=0) as handle:
        yield handle


def spans_alive() -> int:
    """Span objects alive now (with the collector off: only what references keep)."""
    return sum(1 for o in gc.get_objects() if type(o) is Span)


def test_a_stored_parent_keeps_no_child_dropped_past_max_spans_per_trace() -> None:
    """Spans dropped past max_spans_per_trace are freed: a stored parent lets go of its latest child at its end."""
    autotrace.configure(TraceConfig(sample_rate=1.0, max_spans_per_trace=5))
    depth = 300

    def deeper(n: int) -> None:
        with span(f"level {n}"):
            if n:
                deeper(n - 1)

    @traced("request")
    def request() -> None:
        for _ in range(10):
            with span("step"):
                pass
        deeper(depth)  # every level past the first spans is dropped (the trace is full)

    gc.collect()
    gc.disable()
    try:
        before = spans_alive()
        contextvars.copy_context().run(request)
        store = autotrace.get_trace_store()
        stored = sum(len(trace) for trace in store.traces())
        assert stored == 5 and store.dropped_spans == 10 + depth + 1 + 1 - 5
        # Before: the request (stored) held `level 300` (dropped), which held `level 299`... all 301 alive.
        assert spans_alive() - before == stored
    finally:
        gc.enable()


def test_a_child_left_entered_makes_no_reference_cycle() -> None:
    """A child entered and ended by hand but never left: its trace is freed at once when cleared (no cycle)."""

    def request() -> None:
        with span("request"):
            child = span("child")
            child.__enter__()  # its token (which holds the parent as the value before) stays on it
            child.end()
            with span("second") as second:
                second.set_attribute("k", "v")

    gc.collect()
    gc.disable()
    try:
        before = spans_alive()
        for _ in range(3):
            contextvars.copy_context().run(request)
        assert spans_alive() - before == 9
        autotrace.clear_traces()
        # Before: request -> child (its latest child, linked) -> child's token -> request, a cycle.
        assert spans_alive() == before
    finally:
        gc.enable()


def _line_of(code: Any, text: str) -> int:
    """The line of ``code`` whose source holds ``text`` (exactly one)."""
    lines = [line for line in {n for _, _, n in code.co_lines() if n} if text in _source_line(code, line)]
    assert len(lines) == 1, (code.co_name, lines)
    return lines[0]


def _source_line(code: Any, line: int) -> str:
    if code.co_filename == "<autotrace @traced>":
        return decorators._ASYNC_SOURCE.splitlines()[line - 1]
    with open(code.co_filename) as f:
        return f.read().splitlines()[line - 1]


@pytest.mark.parametrize("how", ["span", "traced", "async", "start"])
def test_a_child_starting_as_its_parent_ends_in_another_thread_leaves_the_parents_attributes(how: str) -> None:
    """A parent ending in another thread as its child links itself (a tracer's line event between): attributes kept."""
    at_line = threading.Event()
    parent_ended = threading.Event()

    def pause(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == code.co_filename and frame.f_code.co_firstlineno == code.co_firstlineno:
            if event == "line" and frame.f_lineno == line and not at_line.is_set():
                at_line.set()  # the parent ends now, in the main thread
                assert parent_ended.wait(10)
            return pause
        return None

    @traced("child")
    def traced_child() -> None:
        pass

    @traced("child")
    async def async_child() -> None:
        pass

    if how == "span":
        code, text = tracer.span.__code__, "._attr0 = s"
    elif how == "start":
        code, text = tracer.start.__code__, "._attr0 = s"
    elif how == "traced":
        code, text = traced_child.__code__, "._attr0 = s"
    else:
        code, text = async_child.__code__, "._attr0 = _at_s"
    line = _line_of(code, text)  # (before: the store, on the line after its check)

    def child() -> None:
        sys.settrace(pause)
        try:
            if how in ("span", "start"):
                with span("child"):
                    pass
            elif how == "traced":
                traced_child()
            else:
                asyncio.run(async_child())
        finally:
            sys.settrace(None)

    parent = Span("parent") if how == "start" else span("parent")  # (a hand-built parent: through start())
    assert isinstance(parent, Span)
    parent.__enter__()
    parent.set_attribute("model", "m-1")
    worker = threading.Thread(target=contextvars.copy_context().run, args=(child,))
    worker.start()
    try:
        assert at_line.wait(10)
        parent.__exit__(None, None, None)
        if how == "start":
            autotrace.record_span(parent)
    finally:
        parent_ended.set()
        worker.join()
    assert dict(parent.attributes) == {"model": "m-1"}
    exported = [
        s
        for rs in autotrace.export_traces()["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        if s["name"] == "parent"
    ]
    assert [s["attributes"] for s in exported] == [[{"key": "model", "value": {"stringValue": "m-1"}}]]


def test_reading_inflight_leaves_a_provisional_trace_as_it_was(server: ServerHandle) -> None:
    """A provisional (tail sampling) root: listed unsampled with its chain; a read of /inflight does not share it."""
    autotrace.configure(TraceConfig(sample_rate=0.0, keep_errors=True))
    seen: dict[str, Any] = {}

    @traced("provisional")
    def provisional() -> None:
        with span("inner"):
            buf = autotrace.current_span()._trace  # type: ignore[union-attr]
            before = (buf.touched, buf.shared, dict(_tail._SHARED))
            reply = fetch(server.url, "/inflight")
            assert reply.status == 200
            seen["records"] = [r for r in reply.json()["inflight"] if r["name"] == "provisional"]
            seen["states"] = (before, (buf.touched, buf.shared, dict(_tail._SHARED)))

    provisional()
    provisional()  # (the first root after configure() is sampled by a rule of its own)
    (record,) = seen["records"]
    assert record["sampled"] is False and [c["name"] for c in record["chain"]] == ["provisional", "inner"]
    before, after = seen["states"]
    assert before == after == (False, False, {})
    assert autotrace.get_trace_store().traces() == []  # fast, no failure: discarded as if never looked at


def test_inflight_read_from_several_threads_over_http_while_roots_come_and_go(server: ServerHandle) -> None:
    """4 readers (3 over HTTP) while 8 threads start and end nested roots for 3 s: all well formed, none left."""
    autotrace.configure(TraceConfig(sample_rate=0.5))
    stop = threading.Event()
    failures: list[BaseException] = []
    answers = [0]

    @traced("leaf")
    def leaf(n: int) -> int:
        return n

    @traced("middle")
    def middle(n: int) -> int:
        with span("block") as s:
            s.set_attribute("n", n)
            return leaf(n) + (middle(n - 1) if n else 0)

    @traced("gathered")
    async def gathered(n: int) -> int:
        await asyncio.sleep(0)
        return middle(n)

    @traced("async root")
    async def async_root() -> int:
        return sum(await asyncio.gather(*(gathered(i) for i in range(3))))

    @traced("stream")
    def stream() -> Iterator[int]:
        yield leaf(1)
        yield leaf(2)

    @traced("threaded")
    def threaded() -> None:
        t = threading.Thread(target=contextvars.copy_context().run, args=(middle, 2))
        t.start()
        t.join()

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:  # pragma: no cover - the failure this test looks for
                failures.append(exc)

        return run

    def work() -> None:
        while not stop.is_set():
            middle(3)
            asyncio.run(async_root())
            with span("span root"):
                sum(stream())
            threaded()

    def read_http() -> None:
        while not stop.is_set():
            reply = fetch(server.url, "/inflight?min_age=0")
            assert reply.status == 200, reply.body
            body = json.loads(reply.body)
            for record in body["inflight"]:
                well_formed(record)
            answers[0] += 1

    def read_here() -> None:
        while not stop.is_set():
            for record in _inflight.inflight():
                well_formed(record)
                json.dumps(record)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    threads = [threading.Thread(target=guarded(work)) for _ in range(8)]
    threads += [threading.Thread(target=guarded(read_http)) for _ in range(3)]
    threads.append(threading.Thread(target=guarded(read_here)))
    for t in threads:
        t.start()
    try:
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sys.setswitchinterval(old)
    assert failures == [] and answers[0] > 3
    assert _inflight.inflight() == [] and filed() == [] and _inflight.OPEN == {}
    _inflight.prune()
    assert [r for r in (*_inflight.ROOTS, *_inflight.KEPT) if _inflight._is_open(r)] == []


@pytest.mark.parametrize("how", ["traced", "span"])
def test_recursion_10000_deep_lists_a_bounded_chain(how: str) -> None:
    """A request 10,000 calls deep, read at the bottom: the root and the innermost CHAIN_MAX - 1, the rest counted."""
    seen: list[dict[str, Any]] = []
    depth = 10_000

    @traced("deep")
    def deep_traced(n: int) -> None:
        if n:
            deep_traced(n - 1)
        else:
            seen.extend(_inflight.inflight())

    def deep_span(n: int) -> None:
        with span("deep"):
            if n:
                deep_span(n - 1)
            else:
                seen.extend(_inflight.inflight())

    worker = threading.Thread(target=deep_traced if how == "traced" else deep_span, args=(depth - 1,))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))  # (the interpreter's: put back, or a later test overflows the C stack)
    threading.stack_size(256 * 1024 * 1024)
    try:
        worker.start()
        worker.join()
    finally:
        threading.stack_size(0)
        sys.setrecursionlimit(limit)
    (record,) = seen
    well_formed(record)
    assert len(record["chain"]) == _inflight.CHAIN_MAX and record["chain_skipped"] == depth - _inflight.CHAIN_MAX
    assert _inflight.inflight() == []


@pytest.mark.parametrize("flags", ["01", "00"])
@pytest.mark.parametrize("how", ["async", "async method", "partial", "generator", "async generator"])
def test_every_kind_of_root_below_a_remote_parent_is_listed(how: str, flags: str) -> None:
    """A traced call under a traceparent from elsewhere is a local root, sampled or not, whatever it wraps (as sync)."""
    seen: list[dict[str, Any]] = []

    def look() -> None:
        seen.extend(r for r in _inflight.inflight() if r["name"] == "remote root")

    @traced("remote root")
    async def plain_async() -> None:
        look()

    class Handler:
        @traced("remote root")
        async def method(self) -> None:
            look()

    @traced("remote root")
    def stream() -> Iterator[int]:
        look()
        yield 1

    @traced("remote root")
    async def async_stream() -> Any:
        look()
        yield 1

    async def drain() -> None:
        async for _ in async_stream():
            pass

    partial = traced("remote root")(functools.partial(look))
    with attach({"traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"}):
        if how == "async":
            asyncio.run(plain_async())
        elif how == "async method":
            asyncio.run(Handler().method())
        elif how == "partial":
            partial()
        elif how == "generator":
            assert list(stream()) == [1]
        else:
            asyncio.run(drain())
    (record,) = seen
    well_formed(record)
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and record["sampled"] is (flags == "01")
    assert record["span_id"] != "00f067aa0ba902b7"  # its own span, below the remote one
    assert _inflight.inflight() == [] and _inflight.OPEN == {}


def test_a_read_follows_the_chains_of_the_oldest_roots_it_shows_only(server: ServerHandle) -> None:
    """2,000 open roots 64 spans deep, ?limit=5: all counted, only 5 chains followed (a read's memory stays small)."""
    opened: list[Span] = []

    def open_deep() -> None:
        for depth in range(64):
            s = span(f"level {depth}")
            s.__enter__()
            assert isinstance(s, Span)
            opened.append(s)

    for _ in range(2000):
        contextvars.copy_context().run(open_deep)
    try:
        tracemalloc.start()  # (it sees the server's thread too)
        try:
            reply = fetch(server.url, "/inflight?limit=5")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 12_000_000, peak  # (before: all 128,000 chain links built, ~37 MB)
        body = reply.json()
        assert reply.status == 200 and body["count"] == 2000 and body["truncated"] is True
        assert [len(r["chain"]) for r in body["inflight"]] == [_inflight.CHAIN_MAX] * 5
        for record in body["inflight"]:
            well_formed(record)
            assert record["chain"][-1]["name"] == "level 63" and record["chain_skipped"] == 0
    finally:
        for s in reversed(opened):
            s.end()
    assert _inflight.inflight() == []
