"""Metrics defects found by attack: cancellation labels, hostile names in /metrics, reads racing folds."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import autotrace
from autotrace import _inflight, _metrics, span, traced
from autotrace.config import TraceConfig
from autotrace.server import ServerHandle, start_in_background
from tests.conftest import exit_code_of_forked
from tests.server_helpers import fetch


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """The real server on a free loopback port, without a token."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    with start_in_background(port=0) as handle:
        yield handle


def _by_status(name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in autotrace.metrics.snapshot()["spans"]:
        if row["name"] == name:
            out[row["status_code"]] = out.get(row["status_code"], 0) + row["count"]
    return out


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_cancelled_call_is_labelled_alike_sampled_or_not(rate: float) -> None:
    """A cancelled call is no error (as its sampled span's status): the same label at rate 0 and 1, on every path."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    autotrace.metrics.reset()

    @traced("cancel.root")
    async def root() -> None:
        await asyncio.sleep(30)

    @traced("cancel.child")
    async def child() -> None:
        await asyncio.sleep(30)

    @traced("cancel.parent")
    async def parent() -> None:
        await child()

    @traced("cancel.sync")
    def sync() -> None:
        raise asyncio.CancelledError

    async def in_span() -> None:
        with span("cancel.span"):
            await asyncio.sleep(30)

    async def main() -> None:
        for make in (root, parent, in_span):
            task = asyncio.ensure_future(make())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(asyncio.CancelledError):
            sync()

    asyncio.run(main())
    for name in ("cancel.root", "cancel.child", "cancel.parent", "cancel.sync", "cancel.span"):
        assert _by_status(name) == {"unset": 1}, (name, rate)


def _scrape(url: str) -> tuple[str, list[Any]]:
    reply = fetch(url, "/metrics")
    assert reply.status == 200, reply.body[:200]
    text = reply.body.decode("utf-8")
    return text, list(text_string_to_metric_families(text))


def _assert_well_formed(text: str, families: list[Any]) -> None:
    """HELP and TYPE once per family, no label set twice in a family, histograms consistent."""
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps))
    for family in families:
        seen = set()
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, key
            seen.add(key)


def test_metrics_with_lone_surrogate_names_is_200_without_duplicate_series(server: ServerHandle) -> None:
    """A span name with a lone surrogate cannot be UTF-8: /metrics answered 500; now shown as its \\udc80 text, once."""
    autotrace.configure(TraceConfig(sample_rate=0.0))
    for name in ("bad\udc80name", "bad\\udc80name", "bad\udc80name", 'q"\\\n\r\x00é'):
        with span(name):
            pass
    text, families = _scrape(server.url)
    _assert_well_formed(text, families)
    counts = {
        s.labels["span_name"]: s.value
        for f in families
        if f.name == "autotrace_span_duration_seconds"
        for s in f.samples
        if s.name.endswith("_count")
    }
    # The surrogate and its spelled-out text show alike: one series holding the three calls.
    assert counts == {"bad\\udc80name": 3, 'q"\\\n\r\x00é': 1}


def test_very_long_span_names_are_cut_in_every_reader(server: ServerHandle) -> None:
    """A 100,000-character span() name is shown cut at max_name_length (it was written whole on 23 lines per series)."""
    autotrace.configure(TraceConfig(sample_rate=0.0))
    base = "x" * 100_000
    for tail in ("a", "b"):
        with span(base + tail):
            pass
    text, families = _scrape(server.url)
    _assert_well_formed(text, families)
    assert max(len(line) for line in text.splitlines()) < 1200
    cut = base[:1024]
    assert [r["count"] for r in autotrace.metrics.snapshot()["spans"] if r["name"].startswith("x")] == [2]
    assert autotrace.metrics.stats_by_name()[cut]["count"] == 2
    stats = fetch(server.url, "/stats").json()["names"]
    assert [r["count"] for r in stats if r["name"].startswith("x")] == [2]


def test_what_a_reader_holds_is_not_changed_by_a_later_fold() -> None:
    """Readers get copies taken under the fold lock: a hot-path fold in another thread cannot tear a scrape mid-read."""
    autotrace.configure(TraceConfig(sample_rate=0.0))
    with span("held"):
        pass
    held = [h for h in _metrics.fold_all() if h.name == "held"]
    before = [(x.count, list(x.le), dict(x.fine)) for x in held[0].hists]
    done = threading.Event()

    def record() -> None:
        for _ in range(_metrics.FOLD_AT + 10):  # past FOLD_AT: this thread folds on its own
            with span("held"):
                pass
        done.set()

    thread = threading.Thread(target=record)
    thread.start()
    thread.join()
    assert done.is_set()
    assert [(x.count, list(x.le), dict(x.fine)) for x in held[0].hists] == before


def _queued() -> int:
    """The most observations queued (not folded) in any one series."""
    return max((len(h) + len(h.ok) + len(h.streams) for h in list(_metrics.M.series.values())), default=0)


class _DropAll:
    """A custom sampler that samples nothing."""

    def should_sample(self, trace_id: int, parent: Any, name: str) -> bool:
        """Drop every span."""
        return False


def test_queues_stay_bounded_with_no_reader_on_every_path() -> None:
    """Calls that raise, spans set OK, custom-sampler roots and renamed streams fold past FOLD_AT with no scrape."""
    n = 3 * _metrics.FOLD_AT
    autotrace.configure(TraceConfig(sample_rate=0.0))

    @traced("raises.root")
    def raises() -> None:
        raise ValueError

    @traced("raises.async")
    async def araises() -> None:
        raise ValueError

    @traced("renamed.stream")
    def stream() -> Iterator[int]:
        autotrace.current_span().update_name("renamed.other")
        yield 1

    async def many_async() -> None:
        for _ in range(n):
            with pytest.raises(ValueError):
                await araises()

    for _ in range(n):
        with pytest.raises(ValueError):
            raises()
        with span("raises.parent"):
            with pytest.raises(ValueError):
                raises()  # an unsampled child
    asyncio.run(many_async())
    assert _queued() <= _metrics.FOLD_AT + 1
    autotrace.configure(TraceConfig(sample_rate=1.0))
    for _ in range(n):
        with span("set.ok") as s:
            s.set_status(autotrace.StatusCode.OK)
        list(stream())
    assert _queued() <= _metrics.FOLD_AT + 1
    autotrace.configure(TraceConfig(sampler=_DropAll()))

    @traced("custom.dropped")
    def dropped() -> None:
        pass

    for _ in range(n):
        dropped()
    assert _queued() <= _metrics.FOLD_AT + 1
    counts = {r["name"]: r["count"] for r in autotrace.metrics.stats_by_name().values()}
    assert counts["raises.root"] == 2 * n and counts["set.ok"] == n and counts["custom.dropped"] == n


def _open_names(url: str, want: int) -> list[tuple[str, bool]]:
    """The (name, sampled) pairs /inflight lists, once ``want`` roots show (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        doc = fetch(url, "/inflight").json()
        found = sorted((r["name"], r["sampled"]) for r in doc["inflight"])
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_inflight_shows_every_kind_of_root_by_its_own_name(server: ServerHandle, rate: float) -> None:
    """Past the series cap /inflight named unsampled roots "_other" (their series): each root shows its own name."""
    autotrace.configure(TraceConfig(sample_rate=rate, metrics_max_series=1))
    with span("fills the cap"):
        pass
    gate = threading.Event()
    started = threading.Barrier(4)

    @traced("sync root")
    def sync_root() -> None:
        started.wait(10)
        gate.wait(30)

    @traced("async root")
    async def async_root() -> None:
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)

    def span_root() -> None:
        with span("span root"):
            started.wait(10)
            gate.wait(30)

    threads = [
        threading.Thread(target=sync_root),
        threading.Thread(target=asyncio.run, args=(async_root(),)),
        threading.Thread(target=span_root),
    ]
    for t in threads:
        t.start()
    try:
        started.wait(10)
        sampled = rate == 1.0
        assert _open_names(server.url, 3) == [
            ("async root", sampled),
            ("span root", sampled),
            ("sync root", sampled),
        ]
    finally:
        gate.set()
        for t in threads:
            t.join()


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_inflight_lists_stream_and_capture_roots(server: ServerHandle, rate: float) -> None:
    """Traced generators, async generators and capture_args roots were missing from /inflight while they ran."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    gate = threading.Event()
    started = threading.Barrier(4)

    @traced("capture root", capture_args=True)
    def capture_root(x: int) -> None:
        started.wait(10)
        gate.wait(30)

    @traced("stream root")
    def stream_root() -> Iterator[int]:
        yield 1
        started.wait(10)
        gate.wait(30)
        yield 2

    @traced("async stream root")
    async def async_stream_root() -> Any:
        yield 1
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
        yield 2

    async def consume() -> None:
        async for _ in async_stream_root():
            pass

    threads = [
        threading.Thread(target=capture_root, args=(1,)),
        threading.Thread(target=lambda: list(stream_root())),
        threading.Thread(target=asyncio.run, args=(consume(),)),
    ]
    for t in threads:
        t.start()
    try:
        started.wait(10)
        sampled = rate == 1.0
        assert _open_names(server.url, 3) == [
            ("async stream root", sampled),
            ("capture root", sampled),
            ("stream root", sampled),
        ]
    finally:
        gate.set()
        for t in threads:
            t.join()
    assert _open_names(server.url, 0) == []


def test_inflight_answer_is_bounded_and_limit_checked(server: ServerHandle) -> None:
    """5,000 leaked span() roots made /inflight list all (megabytes); it lists the oldest `limit`, counts all."""
    autotrace.configure(TraceConfig(sample_rate=0.0))  # one clock for every start: a strict order
    leaked = []

    def leak(i: int) -> None:
        s = span(f"leaked {i}")
        s.__enter__()  # never left: a root that never ends
        leaked.append(s)

    for i in range(5000):
        contextvars.copy_context().run(leak, i)
    doc = fetch(server.url, "/inflight").json()
    assert doc["count"] == 5000 and doc["truncated"] is True and len(doc["inflight"]) == 1000
    ages = [r["start_time_unix_nano"] for r in doc["inflight"]]
    assert ages == sorted(ages)
    small = fetch(server.url, "/inflight?limit=3").json()
    assert (
        small["count"] == 5000
        and len(small["inflight"]) == 3
        and [r["name"] for r in small["inflight"]] == ["leaked 0", "leaked 1", "leaked 2"]
    )
    every = fetch(server.url, "/inflight?limit=100000").json()
    assert len(every["inflight"]) == 5000 and every["truncated"] is False
    for bad in ("0", "-1", "1.5", "nan", "1e3", "100001", "9" * 5000, "%00", "", "\u0663"):
        reply = fetch(server.url, "/inflight?limit=" + urllib.parse.quote(bad))
        assert reply.status == 400 and "limit" in reply.json()["error"], bad
    for s in leaked:
        s.__exit__(None, None, None)


def test_inflight_read_while_spans_end_in_other_threads_never_raises() -> None:
    """/inflight read spans that ended (packed, slots gone) mid-read in another thread: AttributeError, a 500."""
    autotrace.configure(TraceConfig(sample_rate=1.0))
    stop = threading.Event()

    @traced("deep")
    def deep(n: int) -> int:
        return deep(n - 1) if n else 0

    def work() -> None:
        while not stop.is_set():
            deep(20)
            with span("block"):
                pass

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: reads land mid-end
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3000):
            _inflight.inflight()
    finally:
        sys.setswitchinterval(old)
        stop.set()
        for t in threads:
            t.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_fork_while_a_thread_holds_the_metrics_locks_leaves_the_child_folding() -> None:
    """A child forked while a thread folds and prunes: its queues and ROOTS stay bounded, reads do not wait."""
    autotrace.configure(TraceConfig(sample_rate=0.0))
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with _metrics._LOCK, _metrics._TABLE, _inflight._PRUNING:  # a fold, a new series and a prune at once
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a hang is killed by the parent
            status = 1
            try:
                for _ in range(3 * _metrics.FOLD_AT):
                    with span("in child"):
                        pass
                with span("a new name"):  # a new series: the table lock
                    pass
                for _ in range(3 * _inflight.ROOTS_PRUNE_AT):
                    contextvars.copy_context().run(lambda: span("root").__enter__().__exit__(None, None, None))
                began = time.monotonic()
                counts = {r["name"]: r["count"] for r in autotrace.metrics.stats_by_name().values()}
                ok = _queued() <= _metrics.FOLD_AT + 1 and len(_inflight.ROOTS) <= _inflight.ROOTS_PRUNE_AT + 1
                ok = ok and time.monotonic() - began < 5.0  # the read did not wait for the lock
                ok = ok and counts["in child"] == 3 * _metrics.FOLD_AT and counts["a new name"] == 1
                status = 0 if ok else 3
            finally:
                os._exit(status)
    finally:
        release.set()
        holder.join(10)
    assert exit_code_of_forked(pid, 60) == 0


def test_inflight_chain_of_a_deep_recursion_is_bounded(server: ServerHandle) -> None:
    """A request 300 traced calls deep listed all 300 in its chain: the root and the innermost 63, the rest counted."""
    autotrace.configure(TraceConfig(sample_rate=1.0))
    entered = threading.Event()
    release = threading.Event()

    @traced("level")
    def level(n: int) -> None:
        if n:
            level(n - 1)
        else:
            entered.set()
            release.wait(30)

    worker = threading.Thread(target=level, args=(299,))
    worker.start()
    try:
        assert entered.wait(10)
        (record,) = fetch(server.url, "/inflight").json()["inflight"]
        assert len(record["chain"]) == _inflight.CHAIN_MAX and record["chain_skipped"] == 300 - _inflight.CHAIN_MAX
        assert record["chain"][0]["span_id"] == record["span_id"]
        ages = [c["age_seconds"] for c in record["chain"]]
        assert ages == sorted(ages, reverse=True)  # root first, innermost last
    finally:
        release.set()
        worker.join()


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_calls_open_across_reset_are_counted_sampled_or_not(rate: float) -> None:
    """reset() dropped the series an open span() or stream held: unsampled, what they recorded at their end was lost."""
    autotrace.configure(TraceConfig(sample_rate=rate))

    @traced("stream across reset")
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    with span("done before reset"):
        pass
    with span("open across reset"):
        it = stream()
        next(it)
        autotrace.metrics.reset()
    assert list(it) == [2]
    counts = {name: row["count"] for name, row in autotrace.metrics.stats_by_name().items()}
    assert counts == {"open across reset": 1, "stream across reset": 1}
    streams = [(r["name"], r["items"]["count"]) for r in autotrace.metrics.snapshot()["streams"]]
    assert streams == [("stream across reset", 1)]
    # A series nothing holds any more still goes at reset (freeing the cap).
    autotrace.metrics.reset()
    assert not [key for key in _metrics.M.series if key[0] in ("done before reset", "open across reset")]
