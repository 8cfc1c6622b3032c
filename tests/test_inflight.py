"""GET /inflight's bookkeeping: every root filed by the code that runs it, no other thread's frames read."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import _inflight, decorators, span, traced
from autotrace.config import TraceConfig
from autotrace.context import CURRENT
from autotrace.propagation import attach
from autotrace.server import ServerHandle, start_in_background
from autotrace.spans import Span
from tests.server_helpers import fetch

HEX = set("0123456789abcdef")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """The real server on a free loopback port, without a token."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    with start_in_background(port=0) as handle:
        yield handle


def named(name: str) -> list[dict[str, Any]]:
    """The open roots called ``name``, read as /inflight reads them."""
    return [r for r in _inflight.inflight() if r["name"] == name]


def wait_for(check: Callable[[], bool]) -> None:
    """Wait (up to 10 s) until ``check()`` holds."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def well_formed(record: dict[str, Any]) -> None:
    """One /inflight record as documented: ids in hex, ages, and for a sampled root its chain from the root."""
    assert set(record) == {
        "name",
        "trace_id",
        "span_id",
        "start_time_unix_nano",
        "age_seconds",
        "sampled",
        "chain",
        "chain_skipped",
    }, record
    assert isinstance(record["name"], str) and record["name"]
    assert len(record["trace_id"]) == 32 and set(record["trace_id"]) <= HEX
    assert len(record["span_id"]) == 16 and set(record["span_id"]) <= HEX
    assert type(record["start_time_unix_nano"]) is int and record["age_seconds"] >= 0
    assert type(record["chain_skipped"]) is int and record["chain_skipped"] >= 0
    if record["sampled"] is True:
        chain = record["chain"]
        assert 1 <= len(chain) <= _inflight.CHAIN_MAX
        assert chain[0]["span_id"] == record["span_id"]
        for link in chain:
            assert set(link) == {"name", "span_id", "age_seconds"} and len(link["span_id"]) == 16
            assert link["age_seconds"] >= 0
    else:
        assert record["sampled"] is False and record["chain"] == [] and record["chain_skipped"] == 0


def filed() -> list[Any]:
    """Everything filed as open right now: by the sync @traced wrappers, and in OPEN."""
    return [entry for _, _, roots in list(_inflight._WATCHED.values()) for entry in list(roots)] + list(_inflight.OPEN)


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_sync_root_blocked_in_a_thread_is_listed_with_its_whole_chain(rate: float) -> None:
    """A blocked sync @traced request: listed with a growing age; sampled, its chain runs through a span() block too."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    entered = threading.Event()
    release = threading.Event()

    @traced("handle")
    def handle() -> None:
        with span("step"):
            load()

    @traced("load")
    def load() -> None:
        entered.set()
        release.wait(30)

    worker = threading.Thread(target=handle)
    worker.start()
    try:
        assert entered.wait(10)
        (first,) = named("handle")
        time.sleep(0.02)
        (second,) = named("handle")
        well_formed(second)
        assert second["age_seconds"] > first["age_seconds"] and second["trace_id"] == first["trace_id"]
        assert second["sampled"] is (rate == 1.0)
        if rate == 1.0:  # the frames of the old reader saw the @traced calls only: ["handle", "load"]
            assert [c["name"] for c in second["chain"]] == ["handle", "step", "load"]
            ages = [c["age_seconds"] for c in second["chain"]]
            assert ages == sorted(ages, reverse=True)
    finally:
        release.set()
        worker.join()
    assert named("handle") == [] and filed() == []


def test_async_and_span_roots_show_the_chain_to_their_innermost_span() -> None:
    """Sampled async and span() roots listed only themselves as their chain; now the open spans below them too."""
    entered = threading.Barrier(3)
    release = threading.Event()

    @traced("async inner")
    async def async_inner() -> None:
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)

    @traced("async root")
    async def async_root() -> None:
        await async_inner()

    @traced("traced inner")
    def traced_inner() -> None:
        entered.wait(10)
        release.wait(30)

    def span_root() -> None:
        with span("span root"), span("span child"):
            traced_inner()

    threads = [threading.Thread(target=asyncio.run, args=(async_root(),)), threading.Thread(target=span_root)]
    for t in threads:
        t.start()
    try:
        entered.wait(10)
        chains = {r["name"]: [c["name"] for c in r["chain"]] for r in _inflight.inflight()}
        assert chains == {
            "async root": ["async root", "async inner"],
            "span root": ["span root", "span child", "traced inner"],
        }
    finally:
        release.set()
        for t in threads:
            t.join()
    assert _inflight.inflight() == []


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_two_threads_in_the_same_function_are_both_listed(rate: float) -> None:
    """Two calls of one @traced function at once, in two threads: two roots, each its own trace, both gone after."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    both = threading.Barrier(3)
    release = threading.Event()

    @traced("same")
    def same() -> None:
        both.wait(10)
        release.wait(30)

    threads = [threading.Thread(target=same) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        both.wait(10)
        records = named("same")
        assert len(records) == 2 and records[0]["trace_id"] != records[1]["trace_id"]
        for record in records:
            well_formed(record)
            assert record["sampled"] is (rate == 1.0)
    finally:
        release.set()
        for t in threads:
            t.join()
    assert named("same") == [] and filed() == []


def test_unsampled_roots_are_listed_while_metrics_are_on() -> None:
    """Unsampled sync roots are listed with metrics on (their start is the metrics'); with them off, none is."""
    seen: list[list[dict[str, Any]]] = []

    @traced("quiet")
    def quiet() -> None:
        seen.append(named("quiet"))

    autotrace.configure(TraceConfig(sample_rate=0.0))
    quiet()
    autotrace.configure(TraceConfig(sample_rate=0.0, metrics=False))
    quiet()
    assert [len(records) for records in seen] == [1, 0]
    assert seen[0][0]["sampled"] is False


@pytest.mark.parametrize("flags", ["01", "00"])
def test_a_sync_root_below_a_remote_parent_is_listed_with_the_remote_trace(flags: str) -> None:
    """A @traced call under a traceparent from elsewhere is a local root: listed in that trace, sampled or not."""
    seen: list[dict[str, Any]] = []

    @traced("GET /remote")
    def handle() -> None:
        seen.extend(named("GET /remote"))

    with attach({"traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"}):
        handle()
    (record,) = seen
    well_formed(record)
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and record["sampled"] is (flags == "01")
    assert named("GET /remote") == [] and filed() == []


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_keyboard_interrupt_in_the_body_leaves_nothing_filed(rate: float) -> None:
    """A KeyboardInterrupt raised in the traced body goes on to the caller and leaves nothing listed or filed."""
    autotrace.configure(TraceConfig(sample_rate=rate))

    @traced("interrupted")
    def interrupted() -> None:
        assert len(named("interrupted")) == 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert named("interrupted") == [] and filed() == [] and CURRENT.get() is None


@pytest.mark.parametrize("rate", [1.0, 0.0])
@pytest.mark.parametrize("where", ["set", "reset"])
def test_a_signal_at_the_context_switch_leaves_nothing_filed(
    monkeypatch: pytest.MonkeyPatch, rate: float, where: str
) -> None:
    """A signal handler's exception raised as the span is made current, or as that is undone: nothing stays filed."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    real_set, real_reset = CURRENT.set, CURRENT.reset

    def set_then_raise(value: Any) -> Any:
        token = real_set(value)
        if value is not None:
            raise KeyboardInterrupt  # as a handler would, just after the C call returned
        return token

    def reset_then_raise(token: Any) -> None:
        real_reset(token)
        raise KeyboardInterrupt

    @traced("signalled")
    def signalled() -> None:
        pass

    if where == "set":
        monkeypatch.setattr(decorators, "_cv_set", set_then_raise)
    else:
        monkeypatch.setattr(decorators, "_cv_reset", reset_then_raise)
    with pytest.raises(KeyboardInterrupt):
        signalled()
    monkeypatch.undo()
    assert named("signalled") == [] and filed() == [] and CURRENT.get() is None


def test_no_other_threads_frames_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """/inflight lists a blocked sync root without sys._current_frames (it read each frame's f_locals there)."""
    entered = threading.Event()
    release = threading.Event()

    @traced("blocked")
    def blocked() -> None:
        entered.set()
        release.wait(30)

    def refuse() -> Any:
        raise AssertionError("sys._current_frames() called")

    worker = threading.Thread(target=blocked)
    worker.start()
    try:
        assert entered.wait(10)
        monkeypatch.setattr(sys, "_current_frames", refuse)
        (record,) = named("blocked")
        assert record["chain"][0]["name"] == "blocked"
    finally:
        release.set()
        worker.join()
    package = pathlib.Path(autotrace.__file__).parent
    readers = [
        p.name
        for p in package.glob("*.py")
        if p.name != "_errors.py" and ("_current_frames" in p.read_text() or "f_locals" in p.read_text())
    ]
    assert readers == []


def test_inflight_read_in_a_loop_while_threads_start_and_end_nested_calls(server: ServerHandle) -> None:
    """/inflight read nonstop while 8 threads run nested traced calls (sampled or not): no error, every record whole."""
    stop = threading.Event()
    failures: list[BaseException] = []
    reads = 0

    @traced("leaf")
    def leaf(n: int) -> int:
        return n

    @traced("middle")
    def middle(n: int) -> int:
        with span("block"):
            return leaf(n) + (middle(n - 1) if n else 0)

    @traced("top")
    async def top(n: int) -> int:
        return middle(n)

    def work(i: int) -> None:
        try:
            while not stop.is_set():
                middle(i % 4 + 1)
                asyncio.run(top(2))
                with span("outer"):
                    leaf(i)
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            failures.append(exc)

    autotrace.configure(TraceConfig(sample_rate=0.5))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: reads land mid-start and mid-end
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for record in _inflight.inflight():
                well_formed(record)
            reads += 1
        reply = fetch(server.url, "/inflight")
        assert reply.status == 200
        for record in reply.json()["inflight"]:
            well_formed(record)
    finally:
        sys.setswitchinterval(old)
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and reads > 10
    assert _inflight.inflight() == [] and filed() == []


def test_ended_traces_are_freed_at_once_with_no_cycle() -> None:
    """The chain's links (a span to its latest child) make no reference cycle: a cleared trace is freed without gc."""

    @traced("parent")
    def parent() -> None:
        with span("child") as s:
            s.set_attribute("k", "v")  # its own attributes, packed at its end where the link lives
        child()

    @traced("child")
    def child() -> None:
        with span("grandchild"):
            pass

    def spans_alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is Span)

    gc.collect()
    gc.disable()
    try:
        before = spans_alive()
        for _ in range(10):
            contextvars.copy_context().run(parent)
        assert spans_alive() == before + 40
        autotrace.clear_traces()
        assert spans_alive() == before
    finally:
        gc.enable()


def test_a_parents_attributes_survive_the_link_to_its_children() -> None:
    """A parent with 1, 2 or 3 attributes of its own and children: its attributes are exactly what was set."""
    for n in (0, 1, 2, 3):
        with span(f"parent {n}") as parent:
            for k in range(n):
                parent.set_attribute(f"k{k}", k)
            with span("child"):
                pass
        assert dict(parent.attributes) == {f"k{k}": k for k in range(n)}
    # As the exporters write them (the packed slots read directly, see _otlp_json).
    exported = {
        s["name"]: {a["key"] for a in s.get("attributes", [])}
        for rs in autotrace.export_traces()["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    }
    assert {name: keys for name, keys in exported.items() if name.startswith("parent")} == {
        f"parent {n}": {f"k{k}" for k in range(n)} for n in (0, 1, 2, 3)
    }


def test_functions_made_and_dropped_leave_nothing_watched() -> None:
    """Each sync @traced function's dict of open roots is let go with the function (decorators made per request)."""
    gc.collect()
    before = len(_inflight._WATCHED)

    def make_and_call() -> None:
        @traced("short-lived")
        def short_lived() -> None:
            pass

        short_lived()

    for _ in range(200):
        make_and_call()
    gc.collect()
    assert len(_inflight._WATCHED) == before
