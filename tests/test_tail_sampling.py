"""Tail sampling: traces the head sample left out are kept whole when they fail or run slow, else discarded."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import inspect
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import _tail, span, traced
from autotrace.config import TraceConfig, from_env_skipping_bad
from autotrace.export import OTLPHttpExporter
from autotrace.propagation import extract, inject
from autotrace.server import start_in_background
from autotrace.spans import NonRecordingSpan, Span, StatusCode
from autotrace.store import TraceStore
from autotrace.testing import capture_spans
from autotrace.tracer import _S
from tests.server_helpers import fetch, spans_of

KEPT = "autotrace.sampling.kept"
REMOTE_TRACE = "0af7651916cd43dd8448eb211c80319c"
REMOTE_PARENT = "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    """Zero tail sampling's counts and forget provisional traces left open by an earlier test."""
    _tail.reset()
    yield
    _tail.reset()


def tail(rate: float = 0.0, **overrides: Any) -> TraceStore:
    """Configure tail sampling with both options on (a 0.2 s threshold) at head rate ``rate``."""
    settings: dict[str, Any] = {"keep_errors": True, "keep_slower_than": 0.2, **overrides}
    store = autotrace.configure(TraceConfig(sample_rate=rate, max_traces=100_000, **settings))
    autotrace.clear_traces()
    return store


def counts() -> dict[str, int]:
    """The tail sampling counters, as the store's stats show them."""
    found: dict[str, int] = autotrace.get_trace_store().stats()["tail_sampling"]
    return found


# -- the workload ------------------------------------------------------------------------


@traced
def leaf(fail: bool) -> int:
    if fail:
        raise ValueError("the deepest child failed")
    return 1


@traced
def middle(fail: bool) -> int:
    with span("block"):
        return leaf(fail)


@traced
def request(fail: bool = False, sleep: float = 0.0) -> int:
    """A root with three spans below it; the deepest raises when asked to."""
    total = middle(fail)
    if sleep:
        time.sleep(sleep)
    return total


def run(fail: bool = False, sleep: float = 0.0) -> None:
    try:
        request(fail, sleep)
    except ValueError:
        pass


def assert_whole(trace: list[Span]) -> Span:
    """Every span of one request's trace, each hanging from the right parent; returns the root."""
    by_name = {s.name: s for s in trace}
    assert sorted(by_name) == ["block", "leaf", "middle", "request"]
    assert len(trace) == 4
    root = by_name["request"]
    assert root.parent_span_id is None
    assert by_name["middle"].parent_span_id == root.span_id
    assert by_name["block"].parent_span_id == by_name["middle"].span_id
    assert by_name["leaf"].parent_span_id == by_name["block"].span_id
    assert {s.trace_id for s in trace} == {root.trace_id}
    return root


# -- the cases -------------------------------------------------------------------


def test_fast_successful_traces_leave_nothing_at_rate_zero() -> None:
    """1,000 fast traces that succeed are recorded provisionally and all discarded: the store stays empty."""
    store = tail()
    for _ in range(1000):
        run()
    assert store.trace_count() == 0
    c = counts()
    assert c["discarded"] == 1000
    assert c["kept_error"] == c["kept_slow"] == 0
    assert c["open_traces"] == c["open_spans"] == 0


def test_traces_whose_deepest_child_raises_are_kept_whole() -> None:
    """20 traces whose deepest span raises: all stored, every span with its parent, the root saying why."""
    store = tail()
    for _ in range(20):
        run(fail=True)
        run()  # a successful one between them is still discarded
    traces = store.traces()
    assert len(traces) == 20
    for trace in traces:
        root = assert_whole(trace)
        assert root.attributes[KEPT] == "error"
        assert root.status.code == StatusCode.ERROR
        assert [s.name for s in trace if KEPT in s.attributes] == ["request"]
    c = counts()
    assert (c["kept_error"], c["kept_slow"], c["discarded"]) == (20, 0, 20)


def test_slow_traces_are_kept_whole() -> None:
    """10 traces longer than keep_slower_than: all stored whole with reason "slow"; fast ones are not."""
    store = tail(keep_slower_than=0.05)
    for _ in range(10):
        run(sleep=0.06)
    traces = store.traces()
    assert len(traces) == 10
    for trace in traces:
        root = assert_whole(trace)
        assert root.attributes[KEPT] == "slow"
        assert root.duration_ns is not None and root.duration_ns > 50_000_000
    assert counts()["kept_slow"] == 10


def test_an_exception_event_alone_keeps_the_trace() -> None:
    """A span that recorded an exception without failing (caught by the code) is an error too."""
    store = tail()
    with span("root"):
        with span("caught") as s:
            try:
                raise KeyError("handled")
            except KeyError as exc:
                s.record_exception(exc)
    [trace] = store.traces()
    assert {s.name for s in trace} == {"root", "caught"}
    assert next(s for s in trace if s.name == "root").attributes[KEPT] == "error"


def test_only_the_configured_reason_keeps() -> None:
    """keep_errors alone keeps no slow trace; keep_slower_than alone keeps no failed fast trace."""
    store = tail(keep_slower_than=None)
    run(sleep=0.05)
    assert store.trace_count() == 0
    store = tail(keep_errors=False, keep_slower_than=0.04)
    run(fail=True)
    assert store.trace_count() == 0
    run(sleep=0.05)
    assert store.trace_count() == 1


def test_head_sampled_traces_carry_no_reason() -> None:
    """At rate 1.0 with both options on every trace is sampled as today: no reason, no tail counts."""
    store = tail(1.0)
    run(fail=True)
    assert _S.custom is None and _S.bound == 1 << 64  # the hot path as with tail sampling off
    run()
    traces = store.traces()
    assert len(traces) == 2
    for trace in traces:
        assert_whole(trace)
        assert all(KEPT not in s.attributes for s in trace)
    assert set(counts().values()) == {0}


def test_rate_one_with_both_options_matches_today() -> None:
    """The same workload at rate 1.0 stores the same traces, span for span, with tail sampling on or off."""

    def shape(store: TraceStore) -> list[list[tuple[str, str, bool]]]:
        out = []
        for trace in store.traces():
            ids = {s.span_id: s.name for s in trace}
            out.append(sorted((s.name, ids.get(s.parent_span_id or "", "-"), s.is_sampled) for s in trace))
        return out

    def workload() -> None:
        for i in range(30):
            run(fail=i % 3 == 0, sleep=0.0)

    off = autotrace.configure(TraceConfig(sample_rate=1.0))
    autotrace.clear_traces()
    workload()
    today = shape(off)
    on = tail(1.0)
    workload()
    assert shape(on) == today
    assert len(today) == 30


# -- the exporters --------------------------------------------------------------------------


def test_exactly_the_kept_traces_reach_an_otlp_receiver() -> None:
    """Through the OTLP/HTTP exporter to a loopback receiver: the kept traces arrive, whole and once; no others."""
    receiver_store = TraceStore(max_traces=10_000)
    handle = start_in_background("127.0.0.1", 0, store=receiver_store)
    try:
        exporter = OTLPHttpExporter(handle.url + "/v1/traces", env={})
        tail(exporters=[exporter], keep_slower_than=0.05)
        for i in range(60):
            run(fail=i % 10 == 0, sleep=0.06 if i % 20 == 5 else 0.0)
        assert autotrace.flush(30.0)
        local = {t[0].trace_id: sorted(s.span_id for s in t) for t in autotrace.get_trace_store().traces()}
        assert len(local) == 6 + 3
        doc = fetch(handle.url, "/traces").json()
        received: dict[str, list[str]] = {}
        for s in spans_of(doc):
            received.setdefault(bytes.fromhex(s["traceId"]).hex(), []).append(s["spanId"])
        assert {tid: sorted(ids) for tid, ids in received.items()} == local
        reasons = sorted(
            a["value"]["stringValue"] for s in spans_of(doc) for a in s.get("attributes", []) if a["key"] == KEPT
        )
        assert reasons == ["error"] * 6 + ["slow"] * 3
    finally:
        autotrace.shutdown(5.0)
        handle.stop()


def test_capture_spans_sees_every_span_and_nothing_is_provisional() -> None:
    """Inside capture_spans() everything is sampled, as today: tail sampling has nothing to decide."""
    tail()
    with capture_spans() as spans:
        run()
    assert sorted(spans.names()) == ["block", "leaf", "middle", "request"]
    assert all(s.is_sampled for s in spans)
    assert counts()["discarded"] == 0


# -- propagation ------------------------------------------------------------------------------


def flags(traceparent: str) -> int:
    """The trace flags of a traceparent header (bit 0: sampled)."""
    return int(traceparent.rsplit("-", 1)[1], 16)


def test_outgoing_traceparent_carries_the_head_decision() -> None:
    """A provisional trace sends flags 00 downstream while it runs (kept at its end or not); a sampled one 01."""
    tail()
    seen: list[str] = []
    with span("root") as root:
        seen.append(inject({})["traceparent"])
        assert not root.is_sampled
        with span("child") as child:
            seen.append(inject({})["traceparent"])
            child.set_status(StatusCode.ERROR, "failed")
    assert [flags(tp) & 1 for tp in seen] == [0, 0]
    assert root.is_sampled  # once kept and stored, it counts as recorded
    tail(1.0)
    with span("root"):
        assert flags(inject({})["traceparent"]) & 1 == 1


def test_remote_unsampled_parent_keeps_only_a_failing_local_part() -> None:
    """Under a caller's flags 00: unrecorded unless keep_errors is on and the local part fails."""
    parent = extract({"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_PARENT}-00"})
    store = tail(1.0)  # the head rule is the caller's; the rate plays no part
    with span("server", parent=parent):
        with span("work"):
            time.sleep(0.25)  # slow, but the caller decided: not kept for that
    assert store.trace_count() == 0
    with pytest.raises(RuntimeError):
        with span("server", parent=parent) as server:
            assert flags(inject({})["traceparent"]) & 1 == 0
            with span("work"):
                raise RuntimeError("local failure")
    [trace] = store.traces()
    assert {s.name for s in trace} == {"server", "work"}
    assert (server.trace_id, server.parent_span_id) == (REMOTE_TRACE, REMOTE_PARENT)
    assert server.attributes[KEPT] == "error"
    store = tail(1.0, keep_errors=False)
    with pytest.raises(RuntimeError):
        with span("server", parent=parent) as unrecorded:
            raise RuntimeError("not kept: keep_errors is off")
    assert isinstance(unrecorded, NonRecordingSpan)
    assert store.trace_count() == 0


def test_a_custom_sampler_is_the_head_rule() -> None:
    """With a custom sampler, what it leaves out is recorded provisionally and kept on failure."""

    class Never:
        def should_sample(self, trace_id: int, parent: Any, name: str) -> bool:
            return False

    store = tail(sampler=Never())
    run()
    run(fail=True)
    [trace] = store.traces()
    assert assert_whole(trace).attributes[KEPT] == "error"


# -- kinds of callables, threads, tasks --------------------------------------------------------


def test_every_kind_of_traced_callable_is_kept_on_failure() -> None:
    """Sync (plain and wrapt-wrapped), async, generator and async generator roots: failures kept, others not."""
    store = tail()

    class Model:
        @traced
        def method(self, fail: bool) -> None:
            leaf(fail)

    @traced
    async def coro(fail: bool) -> None:
        leaf(fail)

    @traced
    def gen(fail: bool) -> Iterator[int]:
        yield leaf(fail)

    @traced
    async def agen(fail: bool) -> Any:
        yield leaf(fail)

    async def drain(fail: bool) -> None:
        async for _ in agen(fail):
            pass

    calls: list[Callable[[bool], Any]] = [
        Model().method,
        lambda f: asyncio.run(coro(f)),
        lambda f: list(gen(f)),
        lambda f: asyncio.run(drain(f)),
    ]
    for call in calls:
        for fail in (False, True):
            try:
                call(fail)
            except ValueError:
                pass
    traces = store.traces()
    assert len(traces) == 4
    assert sorted(len(t) for t in traces) == [2, 2, 2, 2]
    assert counts()["discarded"] == 4


def test_a_generator_finished_in_another_thread() -> None:
    """A traced generator started here and failing in another thread: its trace is kept whole there."""
    store = tail()

    @traced("stream")
    def stream() -> Iterator[int]:
        yield leaf(False)
        yield leaf(True)

    it = stream()
    assert next(it) == 1
    errors: list[BaseException] = []

    def rest() -> None:
        try:
            next(it)
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=rest)
    t.start()
    t.join()
    assert len(errors) == 1
    [trace] = store.traces()
    assert sorted(s.name for s in trace) == ["leaf", "leaf", "stream"]
    root = next(s for s in trace if s.name == "stream")
    assert root.attributes[KEPT] == "error"


def test_tasks_outliving_their_root() -> None:
    """A span ending after its root's decision joins a kept trace, and is dropped (counted) for a discarded one."""
    store = tail()

    async def main(fail: bool) -> asyncio.Task[None]:
        release = asyncio.Event()

        async def background() -> None:
            with span("background"):
                await release.wait()

        with span("root") as root:
            task = asyncio.create_task(background())
            await asyncio.sleep(0)  # the task's span starts under the root
            if fail:
                root.set_status(StatusCode.ERROR, "failed")
        release.set()
        await task
        return task

    asyncio.run(main(True))
    [trace] = store.traces()
    assert sorted(s.name for s in trace) == ["background", "root"]
    asyncio.run(main(False))
    assert store.trace_count() == 1
    c = counts()
    assert (c["kept_error"], c["discarded"], c["dropped_spans"]) == (1, 1, 1)


def test_threads_and_tasks_with_mixed_outcomes_give_exact_counts() -> None:
    """8 threads and 200 asyncio tasks, some failing, some slow: exact kept and discarded counts."""
    store = tail(keep_slower_than=0.05)
    per_thread = 50
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            run(fail=(i + n) % 7 == 0)

    async def task(i: int) -> None:
        with span("task") as s:
            await asyncio.sleep(0.06 if i % 25 == 0 else 0)
            with span("step"):
                if i % 10 == 3:
                    s.set_status(StatusCode.ERROR, "task failed")

    async def tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(200)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    failing = sum((i + n) % 7 == 0 for n in range(8) for i in range(per_thread))
    task_errors = sum(i % 10 == 3 for i in range(200))
    task_slow = sum(i % 25 == 0 and i % 10 != 3 for i in range(200))
    c = counts()
    assert c["kept_error"] == failing + task_errors
    assert c["kept_slow"] == task_slow
    assert c["discarded"] == 8 * per_thread + 200 - failing - task_errors - task_slow
    assert store.trace_count() == failing + task_errors + task_slow
    assert c["open_traces"] == 0


# -- bounded memory ---------------------------------------------------------------------------------


def test_ten_thousand_open_provisional_traces_stay_within_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    """10,000 open provisional traces: the spans held stay within the cap, the oldest discarded and counted."""
    assert TraceConfig().max_provisional_spans == 100_000
    store = tail(max_provisional_spans=5_000)
    roots = []
    for _ in range(10_000):
        root = span("open root")
        span("child", parent=root).end()  # a finished span held provisionally
        roots.append(root)
        assert counts()["open_spans"] <= 5_000 or len(roots) % 1000  # checked now and then (costly)
    c = counts()
    assert c["open_spans"] <= 5_000
    assert c["evicted"] > 0
    assert c["open_traces"] + c["evicted"] == 10_000
    assert sum("max_provisional_spans" in r.message for r in caplog.records) == 1
    still_open = c["open_traces"]
    for root in roots:
        root.set_status(StatusCode.ERROR, "too late for the evicted ones")
        root.end()
    c = counts()
    assert c["kept_error"] == still_open  # only those still held can be kept
    assert store.trace_count() == still_open
    assert (c["open_traces"], c["open_spans"]) == (0, 0)


def test_one_provisional_trace_holds_at_most_max_spans_per_trace() -> None:
    """Past max_spans_per_trace a provisional trace drops spans (counted) but still notes a failure among them."""
    store = tail(max_spans_per_trace=10)
    with span("root"):
        for _ in range(20):
            with span("child"):
                pass
        with span("late failure") as s:
            s.set_status(StatusCode.ERROR, "dropped, but noted")
    [trace] = store.traces()
    assert len(trace) <= 11
    assert next(s for s in trace if s.name == "root").attributes[KEPT] == "error"
    assert counts()["dropped_spans"] >= 10


# -- configuration --------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    """AUTOTRACE_KEEP_ERRORS and AUTOTRACE_KEEP_SLOWER_THAN are read; bad values raise naming the variable."""
    config = TraceConfig.from_env({"AUTOTRACE_KEEP_ERRORS": "yes", "AUTOTRACE_KEEP_SLOWER_THAN": "0.25"})
    assert (config.keep_errors, config.keep_slower_than) == (True, 0.25)
    assert (TraceConfig().keep_errors, TraceConfig().keep_slower_than) == (False, None)
    assert TraceConfig.from_env({"AUTOTRACE_MAX_PROVISIONAL_SPANS": "500"}).max_provisional_spans == 500
    for name, value in (
        ("AUTOTRACE_KEEP_ERRORS", "maybe"),
        ("AUTOTRACE_KEEP_SLOWER_THAN", "-1"),
        ("AUTOTRACE_KEEP_SLOWER_THAN", "soon"),
        ("AUTOTRACE_MAX_PROVISIONAL_SPANS", "0"),
    ):
        with pytest.raises(ValueError, match=name):
            TraceConfig.from_env({name: value})
    config, problems = from_env_skipping_bad(
        {"AUTOTRACE_KEEP_ERRORS": "true", "AUTOTRACE_KEEP_SLOWER_THAN": "nan", "AUTOTRACE_SAMPLE_RATE": "0.5"}
    )
    assert (config.keep_errors, config.keep_slower_than, config.sample_rate) == (True, None, 0.5)
    assert len(problems) == 1 and "AUTOTRACE_KEEP_SLOWER_THAN" in problems[0]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("keep_errors", "yes"),
        ("keep_slower_than", -0.1),
        ("keep_slower_than", float("inf")),
        ("keep_slower_than", True),
    ],
)
def test_bad_settings_in_code_raise_naming_them(setting: str, value: Any) -> None:
    """configure() refuses a bad keep_errors or keep_slower_than with a ValueError naming it."""
    with pytest.raises(ValueError, match=setting):
        autotrace.configure(**{setting: value})


# -- the middlewares ----------------------------------------------------------------------------


def wait_decided(total: int, timeout: float = 30.0) -> dict[str, int]:
    """The counts once ``total`` traces were decided (a server ends its span after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        c = counts()
        if c["kept_error"] + c["kept_slow"] + c["discarded"] >= total:
            return c
        if time.monotonic() > deadline:
            raise AssertionError(f"{total} decisions expected within {timeout}s; got {c}")
        time.sleep(0.01)


def test_wsgi_middleware_keeps_failed_requests_only() -> None:
    """Behind the WSGI middleware on a real server: a 500 is kept whole, a 200 discarded, a caller's 00 honoured."""
    from autotrace.wsgi import TracingMiddleware
    from tests.test_wsgi import Server, bottle_app

    store = tail()
    server = Server(TracingMiddleware(bottle_app()))
    try:
        assert server.get("/items/x")[0] == 200
        assert server.get("/boom")[0] == 500
        status, headers, _ = server.get("/items/y", {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_PARENT}-00"})
        assert status == 200 and flags(headers["traceparent"]) & 1 == 0
        c = wait_decided(3)
    finally:
        server.stop()
    assert (c["kept_error"], c["discarded"]) == (1, 2)
    [trace] = store.traces()
    [root] = [s for s in trace if s.parent_span_id is None]
    assert root.name == "GET /boom" and root.attributes[KEPT] == "error"


def test_asgi_middleware_keeps_failed_and_slow_requests() -> None:
    """Behind the ASGI middleware under uvicorn: a 500 and a slow answer are kept, a quick 200 is not."""
    import httpx

    from autotrace.asgi import TracingMiddleware
    from tests.asgi_helpers import Uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        with span("handler"):
            if path == "/slow":
                await asyncio.sleep(0.25)
        code = 500 if path == "/fail" else 200
        await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})

    store = tail()
    with Uvicorn(TracingMiddleware(app)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/ok").status_code == 200
        assert client.get("/fail").status_code == 500
        assert client.get("/slow").status_code == 200
        c = wait_decided(3)
    assert (c["kept_error"], c["kept_slow"], c["discarded"]) == (1, 1, 1)
    reasons = {}
    for trace in store.traces():
        assert {s.name for s in trace} >= {"handler"}
        root = next(s for s in trace if s.parent_span_id is None)
        reasons[root.attributes["url.path"]] = root.attributes[KEPT]
    assert reasons == {"/fail": "error", "/slow": "slow"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_traces_while_the_parent_held_the_lock() -> None:
    """Forked while another thread held tail sampling's lock: the child still keeps a failing trace."""
    tail()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _tail._LOCK:
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if the failing trace was kept
        signal.alarm(20)  # a deadlock here ends the child (killed by SIGALRM) instead of hanging the test
        code = 1
        try:
            run(fail=True)
            code = 0 if autotrace.get_trace_store().trace_count() == 1 else 2
        finally:
            os._exit(code)
    release.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- found by attacking it ---------------------------------------------------------------


class Recorder:
    """A span processor that keeps the names of the spans it gets; the first call may raise ``first``."""

    def __init__(self, first: Callable[[], None] | None = None) -> None:
        self.names: list[str] = []
        self.first = first

    def on_end(self, s: Span) -> None:
        """Note the span; the first time, run ``first`` (a signal sent to this process, say)."""
        self.names.append(s.name)
        first, self.first = self.first, None
        if first is not None:
            first()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Nothing queued."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Nothing to stop."""
        return True


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
@pytest.mark.parametrize("how", ["signal handler", "KeyboardInterrupt"])
def test_a_signal_while_a_kept_trace_is_exported_cuts_none_of_it(how: str) -> None:
    """A handler's exception while a kept trace is exported reaches the caller; every exporter gets it whole."""

    def deadline(signum: int, frame: Any) -> None:
        raise TimeoutError("deadline")

    def send_signal() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1)  # the handler runs before this ends (signals are handled in the main thread)

    first = send_signal if how == "signal handler" else _raise_keyboard_interrupt
    raising, other = Recorder(first), Recorder()
    previous = signal.signal(signal.SIGUSR1, deadline)
    try:
        tail(exporters=[raising, other])
        with pytest.raises(TimeoutError if how == "signal handler" else KeyboardInterrupt):
            run(fail=True)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        autotrace.configure(TraceConfig(sample_rate=0.0))
    whole = ["block", "leaf", "middle", "request"]
    assert sorted(raising.names) == whole
    assert sorted(other.names) == whole
    [trace] = autotrace.get_trace_store().traces()
    assert_whole(trace)
    assert autotrace.tracer.errors() == {}


def test_a_span_started_from_the_context_of_a_provisional_trace_joins_it() -> None:
    """``span(parent=ctx)`` in another thread joins a provisional trace: its failure keeps the trace, whole."""
    tail()

    def failing_worker(ctx: Any) -> None:
        try:
            with span("worker", parent=ctx):
                raise ValueError("failed in a worker thread")
        except ValueError:
            pass

    with span("root") as root:
        t = threading.Thread(target=failing_worker, args=(root.get_span_context(),))
        t.start()
        t.join()
    [trace] = autotrace.get_trace_store().traces()
    by_name = {s.name: s for s in trace}
    assert sorted(by_name) == ["root", "worker"]
    assert by_name["worker"].parent_span_id == by_name["root"].span_id
    assert by_name["worker"].trace_id == by_name["root"].trace_id
    assert by_name["root"].attributes[KEPT] == "error"
    assert counts()["kept_error"] == 1


def test_use_span_of_a_provisional_context_records_provisionally_and_sends_the_head_decision() -> None:
    """Under ``use_span(ctx)`` of a provisional trace, spans join it and send flag 00; it is discarded when fine."""
    from autotrace.context import use_span

    tail()
    sent: list[str] = []

    def worker(ctx: Any) -> None:
        with use_span(ctx), span("worker") as w:
            assert isinstance(w, Span)
            assert not w.is_sampled
            sent.append(inject({})["traceparent"])

    with span("root") as root:
        t = threading.Thread(target=worker, args=(root.get_span_context(),))
        t.start()
        t.join()
    assert sent[0].endswith("-02")  # sampled flag 0, random trace id flag
    assert autotrace.get_trace_store().trace_count() == 0
    assert counts()["discarded"] == 1
    assert counts()["dropped_spans"] == 0
    assert _tail._SHARED == {}  # decided: forgotten


def test_contexts_handed_out_by_provisional_traces_are_held_within_a_bound() -> None:
    """Roots that never end but whose context was asked for hold at most SHARED_MAX entries."""
    tail()
    roots = [span("never ends") for _ in range(_tail.SHARED_MAX + 100)]
    for r in roots:
        r.get_span_context()
    assert len(_tail._SHARED) == _tail.SHARED_MAX


def _end_a_child_held_while_its_root_decides(hold_at: Any, fail: bool) -> Any:
    """End a child in another thread, held in TailSampling.end at the first line where ``hold_at(frame, event)``
    is true while its root (ERROR when ``fail``) ends and decides; the function that lets the child go on."""
    held, decided = threading.Event(), threading.Event()
    code = _tail.TailSampling.end.__code__

    def local(frame: Any, event: str, arg: Any) -> Any:
        if not held.is_set() and hold_at(frame, event):
            held.set()
            decided.wait(30)
        return local

    def hold(frame: Any, event: str, arg: Any) -> Any:
        # A scheduler, not a stand-in: the real code runs, held where another thread may decide.
        return local if frame.f_code is code else None

    with span("root") as root:
        child = span("child")

        def end_child() -> None:
            sys.settrace(hold)
            try:
                child.end()
            finally:
                sys.settrace(None)

        t = threading.Thread(target=end_child)
        t.start()
        assert held.wait(30)
        if fail:
            root.set_status("ERROR")

    def go_on() -> None:
        decided.set()
        t.join()

    return go_on


@pytest.mark.parametrize("fail", [False, True])
def test_a_span_ending_while_its_root_decides_leaves_no_open_trace_behind(fail: bool) -> None:
    """A child filed in another thread just as its root decides: exactly once, and nothing stays listed open."""
    tail()
    lines, first = inspect.getsourcelines(_tail.TailSampling.end)
    # The line right after the span went into the buffer, before the trace is listed as open.
    after_append = first + next(i for i, text in enumerate(lines) if text.strip() == "c = COUNTS")
    decided = _end_a_child_held_while_its_root_decides(
        lambda frame, event: event == "line" and frame.f_lineno == after_append, fail
    )
    decided()
    assert _tail._OPEN == {}
    assert counts()["open_traces"] == 0
    if fail:
        [trace] = autotrace.get_trace_store().traces()
        assert sorted(s.name for s in trace) == ["child", "root"]
        assert counts()["dropped_spans"] == 0
    else:
        assert autotrace.get_trace_store().trace_count() == 0
        assert counts()["dropped_spans"] == 1


def test_filing_spans_at_the_cap_does_not_walk_every_open_trace_each_time() -> None:
    """At the cap, the exact count of held spans (a walk over every open trace) runs now and then, not per span."""
    tail(max_provisional_spans=2_000)
    roots = [span("open root") for _ in range(3_000)]
    walks = 0
    recount = _tail._recount.__code__

    def count_walks(frame: Any, event: str, arg: Any) -> None:
        nonlocal walks
        if event == "call" and frame.f_code is recount:
            walks += 1

    sys.setprofile(count_walks)
    try:
        for root in roots:  # one finished span each: every trace listed, the cap reached at the 1,000th
            span("child", parent=root).end()
    finally:
        sys.setprofile(None)
    c = counts()
    assert c["open_spans"] <= 2_000
    assert c["open_traces"] + c["evicted"] == 3_000
    # Each walk frees room for max_spans/8 spans: ~2,000 spans past the cap need ~16 walks, not ~2,000.
    assert walks <= 100, walks


def test_a_failed_inference_span_built_by_hand_keeps_its_request() -> None:
    """``InferenceSpanBuilder(...).with_error(...).build_and_record()`` in a provisional request: kept, whole."""
    from autotrace import InferenceSpanBuilder

    tail()
    with span("request"):
        InferenceSpanBuilder("inference").with_model("tiny-llm").with_error(
            RuntimeError("out of memory")
        ).build_and_record()
    with span("fine request"):
        assert InferenceSpanBuilder("inference").with_model("tiny-llm").build_and_record() is False  # not stored now
    [trace] = autotrace.get_trace_store().traces()
    by_name = {s.name: s for s in trace}
    assert sorted(by_name) == ["inference", "request"]
    assert by_name["inference"].parent_span_id == by_name["request"].span_id
    assert by_name["inference"].status.code is StatusCode.ERROR
    assert by_name["request"].attributes[KEPT] == "error"
    c = counts()
    assert (c["kept_error"], c["discarded"], c["dropped_spans"]) == (1, 1, 0)


def test_a_hand_built_root_is_kept_when_it_failed_or_ran_slow() -> None:
    """A request recorded by hand alone (InferenceSpanBuilder with its own times): kept on error or slowness."""
    from autotrace import InferenceSpanBuilder

    tail()
    assert InferenceSpanBuilder("failed").with_error(RuntimeError("out of memory")).build_and_record() is True
    assert InferenceSpanBuilder("fine").build_and_record() is False
    assert InferenceSpanBuilder("slow").with_times(1_000_000_000, 2_000_000_000).build_and_record() is True
    kept = {t[0].name: t[0].attributes[KEPT] for t in autotrace.get_trace_store().traces()}
    assert kept == {"failed": "error", "slow": "slow"}
    c = counts()
    assert (c["kept_error"], c["kept_slow"], c["discarded"]) == (1, 1, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_lets_go_of_the_traces_other_threads_had_open() -> None:
    """After fork, the child holds only the provisional trace of the thread that forked, and can still keep it."""
    tail()
    started, release = threading.Event(), threading.Event()

    def other_request() -> None:
        with span("other thread's request"):
            span("done child").end()  # a finished span: the trace holds memory, listed open
            started.set()
            release.wait(30)

    t = threading.Thread(target=other_request)
    t.start()
    started.wait(30)
    try:
        with span("forking request") as mine:
            span("done here").end()
            assert counts()["open_traces"] == 2
            pid = os.fork()
            if pid == 0:  # the child: exit status 0 only if it holds its own trace alone
                code = 1
                try:
                    signal.alarm(20)
                    c = counts()
                    code = 0 if (c["open_traces"], c["open_spans"]) == (1, 2) else 2
                    autotrace.clear_traces()
                    mine.set_status(StatusCode.ERROR, "failed in the child")
                    mine.end()
                    if code == 0 and [len(t) for t in autotrace.get_trace_store().traces()] != [2]:
                        code = 3
                finally:
                    os._exit(code)
    finally:
        release.set()
        t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_trace_kept_after_shutdown_reaches_the_store_only() -> None:
    """flush() and shutdown() do not wait for open provisional traces; one kept afterwards is stored, not exported."""
    recorder = Recorder()
    tail(exporters=[recorder])
    with span("request") as root:
        span("done").end()
        assert autotrace.flush(5.0)
        assert recorder.names == []  # nothing to send yet
        autotrace.shutdown(5.0)
        root.set_status(StatusCode.ERROR, "failed after shutdown")
    [trace] = autotrace.get_trace_store().traces()
    assert sorted(s.name for s in trace) == ["done", "request"]
    assert recorder.names == []


class _FlakyCollector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP protobuf collector: a 503, then a dropped connection, then parsed by opentelemetry-proto."""

    requests: list[Any] = []  # one collector per test (set before serving)

    def do_POST(self) -> None:
        """Answer the next request the way the script says."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        seen = len(self.requests)
        self.requests.append(None)
        if seen == 0:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if seen == 1:  # the connection dropped before any answer: nothing was taken
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.requests[-1] = request
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_kept_traces_through_a_flaky_collector_arrive_once_and_parse_with_opentelemetry_proto() -> None:
    """A 503 and a dropped connection are retried; each kept span arrives once, as valid OTLP, reason on the root."""
    _FlakyCollector.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyCollector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exporter = OTLPHttpExporter(
            f"http://127.0.0.1:{server.server_port}/v1/traces", env={}, encoding="protobuf", backoff_base=0.01
        )
        tail(exporters=[exporter])
        for i in range(6):
            run(fail=i % 2 == 0)
        assert autotrace.flush(30.0)
        assert exporter.stats()["retried"] == 2
    finally:
        autotrace.shutdown(5.0)
        server.shutdown()
        server.server_close()
    spans = [
        s
        for request in _FlakyCollector.requests
        if request is not None
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert len(spans) == len({s.span_id for s in spans}) == 3 * 4
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 3
    for root in roots:
        assert {a.key: a.value.string_value for a in root.attributes}[KEPT] == "error"
    for s in spans:
        assert s.flags & 0x1  # kept: sent as sampled
        if s.parent_span_id:
            assert by_id[s.parent_span_id].trace_id == s.trace_id


@pytest.mark.parametrize("fail", [False, True])
def test_a_root_deciding_while_its_first_child_is_listed_is_not_taken_for_evicted(fail: bool) -> None:
    """A child's first filing in another thread, held just after the trace is marked listed: the root still decides."""
    tail()
    decided = _end_a_child_held_while_its_root_decides(
        # The first line run once the trace says it is listed.
        lambda frame, event: event == "line" and getattr(frame.f_locals.get("buf"), "listed", False),
        fail,
    )
    decided()
    c = counts()
    assert (c["open_traces"], c["evicted"]) == (0, 0)
    if fail:
        [trace] = autotrace.get_trace_store().traces()
        assert sorted(s.name for s in trace) == ["child", "root"]
        assert c["kept_error"] == 1
    else:
        assert c["discarded"] == 1


# -- a @traced root alone in its trace decides in the wrapper ------------------------------


def _metric_counts(name: str) -> dict[str, int]:
    """The metrics' span counts of ``name`` by status code."""
    return {r["status_code"]: r["count"] for r in autotrace.metrics.snapshot()["spans"] if r["name"] == name}


@pytest.mark.parametrize("slow", [0.05, None])
def test_traced_roots_count_once_in_the_metrics_however_their_trace_is_decided(slow: float | None) -> None:
    """Roots alone (fine, failed, slow, renamed, context handed out) or with a child: each decided and counted once."""
    store = tail(keep_slower_than=slow)
    handed: list[Any] = []

    @traced("a traced child")
    def traced_child(fail: bool) -> None:
        if fail:
            raise KeyError("the child failed")

    @traced("lone root")
    def lone(mode: str) -> None:
        s = autotrace.current_span()
        if mode == "fail":
            raise ValueError("failed alone")
        if mode == "status":
            s.set_status(StatusCode.ERROR, "failed without raising")
        elif mode == "slow":
            time.sleep(0.06)
        elif mode == "renamed":
            s.update_name("lone root renamed")
        elif mode == "handed out":
            handed.append(s.get_span_context())
        elif mode == "child":
            span("a child").end()
        elif mode == "traced child":
            traced_child(False)
        elif mode == "failed child":
            try:
                traced_child(True)
            except KeyError:
                pass

    modes = ["fine", "fail", "status", "slow", "renamed", "handed out", "child", "traced child", "failed child"]
    for mode in modes * 3:
        try:
            lone(mode)
        except ValueError:
            pass
    slow_kept = 3 if slow is not None else 0
    c = counts()
    assert (c["kept_error"], c["kept_slow"], c["discarded"]) == (9, slow_kept, 27 - 9 - slow_kept)
    assert (c["open_traces"], c["open_spans"], c["dropped_spans"]) == (0, 0, 0)
    assert _tail._SHARED == {}  # the handed-out contexts were forgotten when their roots decided
    assert all(not ctx.sampled for ctx in handed)
    kept = sorted(
        (root.name, root.attributes[KEPT], len(trace))
        for trace in store.traces()
        for root in trace
        if root.parent_span_id is None
    )
    expected = (
        [("lone root", "error", 1)] * 6 + [("lone root", "error", 2)] * 3 + [("lone root", "slow", 1)] * slow_kept
    )
    assert kept == sorted(expected)
    assert _metric_counts("lone root") == {"unset": 18, "error": 6}
    assert _metric_counts("a traced child") == {"unset": 3, "error": 3}
    assert _metric_counts("lone root renamed") == {"unset": 3}
    assert _metric_counts("a child") == {"unset": 3}


def test_a_fast_fine_traced_root_alone_is_decided_without_filing_it() -> None:
    """A @traced root alone, fast and fine: discarded and counted in the wrapper, no _finish, observe or decide."""
    tail()

    @traced("alone and fine")
    def fine() -> int:
        return 7

    assert fine() == 7  # the series is made at the first call
    called: list[tuple[str, str]] = []

    def note(frame: Any, event: str, arg: Any) -> None:
        if event == "call":  # co_qualname is 3.11+: the file and the name say as much on 3.10
            called.append((os.path.basename(frame.f_code.co_filename), frame.f_code.co_name))

    sys.setprofile(note)
    try:
        result = fine()
    finally:
        sys.setprofile(None)
    assert result == 7
    assert [where for where in called if where[1] != "fine"] == [("decorators.py", "call"), ("_tail.py", "open")]
    assert (counts()["discarded"], autotrace.get_trace_store().trace_count()) == (2, 0)
    assert _metric_counts("alone and fine") == {"unset": 2}


def test_a_span_ending_just_as_a_traced_root_decides_alone_is_not_left_held() -> None:
    """A child ending in another thread between the root's check and its decision: let go, nothing held, once."""
    from autotrace import decorators

    tail()
    lines, first = inspect.getsourcelines(decorators._sync_function)
    # The line of the wrapper's own discard, just after it found the trace untouched.
    discard = first + next(i for i, text in enumerate(lines) if text.strip() == "p.state = _DISCARDED")
    children: list[Any] = []

    def end_child_elsewhere() -> None:
        t = threading.Thread(target=children[0].end)
        t.start()
        t.join()

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == discard:
            end_child_elsewhere()  # filed and listed open: the trace is still open there
        return local

    def at_the_discard(frame: Any, event: str, arg: Any) -> Any:
        # A scheduler, not a stand-in: the real code runs, held where another thread may file a span.
        return local if frame.f_code.co_filename == decorators.__file__ and frame.f_code.co_name == "call" else None

    @traced("root with a late child")
    def root() -> None:
        children.append(span("late child"))  # made here, ended by another thread at the root's decision

    sys.settrace(at_the_discard)
    try:
        root()
    finally:
        sys.settrace(None)
    assert children and not children[0].is_recording
    c = counts()
    assert (c["discarded"], c["kept_error"], c["dropped_spans"]) == (1, 0, 0)
    assert (c["open_traces"], c["open_spans"]) == (0, 0)
    assert _tail._OPEN == {}
    assert autotrace.get_trace_store().trace_count() == 0
    assert _metric_counts("root with a late child") == {"unset": 1}
    assert _metric_counts("late child") == {"unset": 1}


# -- a signal handler's exception in the middle of a decision ----------------------------------


def _interrupt_at(func: Any, text: str, nth: int = 1) -> Any:
    """A trace function raising KeyboardInterrupt before the ``nth`` run of the line of ``func`` holding
    ``text``, as a signal handler's exception arrives between two bytecodes."""
    lines, first = inspect.getsourcelines(func)
    target = first + next(i for i, line in enumerate(lines) if text in line)
    code = func.__code__
    seen = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "line" and frame.f_lineno == target:
            seen += 1
            if seen == nth:
                raise KeyboardInterrupt
        return local

    def glob(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    return glob


def _failing_request_interrupted(tracer: Any) -> str:
    """Run a failing 4-span request whose root's decision ``tracer`` interrupts; its trace id."""
    ids: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with span("interrupted root") as root:
            ids.append(root.trace_id)
            with span("child a"), span("child b"):
                pass
            try:
                leaf(True)
            except ValueError:
                pass
            sys.settrace(tracer)
    sys.settrace(None)
    return ids[0]


def test_a_decision_cut_short_before_it_decides_lets_the_trace_go_counted() -> None:
    """KeyboardInterrupt at the start of a root's decision: it goes on; the trace is let go, counted, nothing held."""
    from autotrace._tail import TailSampling

    tail()
    _failing_request_interrupted(_interrupt_at(TailSampling._decide, "n = _list_len(buf)"))
    got = counts()
    assert (got["interrupted"], got["open_traces"], got["open_spans"]) == (1, 0, 0)
    assert got["kept_error"] + got["discarded"] == 0
    assert autotrace.get_trace_store().trace_count() == 0


def test_a_kept_trace_whose_filing_is_cut_short_is_filed_whole() -> None:
    """KeyboardInterrupt while a kept trace's spans go into the store: it goes on, and every span is stored once."""
    from autotrace._tail import TailSampling

    tail()
    tid = _failing_request_interrupted(_interrupt_at(TailSampling._keep, "store._put(kept, s)", nth=2))
    spans = autotrace.get_trace_store().get_trace(tid) or []
    assert sorted(s.name for s in spans) == sorted(["interrupted root", "child a", "child b", "leaf"])
    assert len({s.span_id for s in spans}) == 4
    assert counts()["kept_error"] == 1


def test_a_trace_cut_short_as_it_is_taken_for_keeping_is_filed_whole() -> None:
    """KeyboardInterrupt just after a trace is marked kept, before its spans are taken: all of them stored once."""
    from autotrace._tail import TailSampling

    tail()
    tid = _failing_request_interrupted(_interrupt_at(TailSampling._keep, "n = _list_len(buf)"))
    spans = autotrace.get_trace_store().get_trace(tid) or []
    assert sorted(s.name for s in spans) == sorted(["interrupted root", "child a", "child b", "leaf"])
    assert len({s.span_id for s in spans}) == 4
    got = counts()
    assert (got["open_traces"], got["interrupted"]) == (0, 0)
