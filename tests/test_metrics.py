"""Metrics over every call (sampled or not), GET /metrics, GET /stats and GET /inflight, on a real server."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import autotrace
from autotrace import span, traced
from autotrace.config import TraceConfig
from autotrace.server import ServerHandle, start_in_background
from tests.server_helpers import fetch


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """The real server on a free loopback port, without a token."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    with start_in_background(port=0) as handle:
        yield handle


def nearest_rank(values: list[int], q: float) -> int:
    """The percentile rule /stats states: the value at rank ceil(q * n) (1-based) of the sorted values."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def rows(doc: dict[str, Any], name: str, status: str | None = None) -> list[dict[str, Any]]:
    """The snapshot's span rows for ``name`` (and ``status_code``)."""
    return [r for r in doc["spans"] if r["name"] == name and (status is None or r["status_code"] == status)]


def test_every_call_counted_at_rate_0_1_with_percentiles_within_2_percent(server: ServerHandle) -> None:
    """1,000 calls at sample rate 0.1, 100 raising: exact counts, error label, p50/p95/p99 within 2% of exact."""
    autotrace.configure(TraceConfig(sample_rate=0.1))

    @traced("work")
    def work(i: int) -> None:
        time.sleep(0.001 + (i % 20) * 0.0002)
        if i % 10 == 0:
            raise ValueError(i)

    measured: list[int] = []
    for i in range(1000):
        t0 = time.perf_counter_ns()
        try:
            work(i)
        except ValueError:
            pass
        measured.append(time.perf_counter_ns() - t0)  # a superset of what the wrapper times
    snap = autotrace.metrics.snapshot()
    assert sum(r["count"] for r in rows(snap, "work")) == 1000
    assert [r["count"] for r in rows(snap, "work", "error")] == [100]
    assert [r["count"] for r in rows(snap, "work", "unset")] == [900]
    stored = sum(1 for t in autotrace.get_trace_store().traces() for s in t if s.name == "work")
    assert 0 < stored < 300  # sampled at 0.1: the metrics did not come from the stored spans
    stats = {r["name"]: r for r in fetch(server.url, "/stats").json()["names"]}["work"]
    assert stats["count"] == 1000 and stats["errors"] == 100 and stats["source"] == "all"
    assert stats["stored_count"] == stored
    # The test's clock reads each call from outside the wrapper's, so each of its durations is at
    # least the wrapper's: the wrapper's percentile is at most the test's. It is at least the
    # test's a few ranks lower: a call whose outside reading was stretched (another thread took
    # the GIL between the wrapper's end and the test's, a preemption) moves up at most one rank.
    # Up to 5 such calls of the 1,000 are allowed; the 2% is the histogram's own error.
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        high = nearest_rank(measured, q) / 1e9
        low = nearest_rank(measured, q - 5 / len(measured)) / 1e9
        assert low * 0.98 <= stats[key] <= high * 1.02, (key, stats[key], low, high)
    assert stats["max"] <= max(measured) / 1e9


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_endpoint_parsed_by_prometheus(server: ServerHandle) -> None:
    """GET /metrics: Prometheus' parser reads every family; buckets cumulative; _count equals the +Inf bucket."""
    hostile = 'evil "name"\nwith \\ backslash and ünïcödé'

    @traced(hostile)
    def f() -> None:
        pass

    @traced
    def stream() -> Iterator[int]:
        yield from range(3)

    for _ in range(5):
        f()
    list(stream())
    with span("a block", kind="client"):
        pass
    reply = fetch(server.url, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = _families(reply.body.decode("utf-8"))
    for name in (
        "autotrace_span_duration_seconds",
        "autotrace_stream_time_to_first_item_seconds",
        "autotrace_stream_time_per_item_seconds",
        "autotrace_stream_items",
    ):
        assert families[name].type == "histogram"
    for fam in families.values():
        if fam.type != "histogram":
            assert fam.type == "counter"  # per-exporter ones have no sample without an exporter
            continue
        series: dict[tuple[Any, ...], list[Any]] = {}
        for sample in fam.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            series.setdefault(key, []).append(sample)
        for samples in series.values():
            buckets = [s for s in samples if s.name.endswith("_bucket")]
            counts = [s.value for s in buckets]
            assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
            (count,) = [s.value for s in samples if s.name.endswith("_count")]
            assert count == counts[-1]
    spans = families["autotrace_span_duration_seconds"].samples
    mine = [s for s in spans if s.name.endswith("_count") and s.labels["span_name"] == hostile]
    assert [(s.labels["span_kind"], s.labels["status_code"], s.value) for s in mine] == [("internal", "unset", 5.0)]
    assert any(s.labels["span_name"] == "a block" and s.labels["span_kind"] == "client" for s in spans)
    items = [s for s in families["autotrace_stream_items"].samples if s.name.endswith("_sum")]
    assert [(s.labels["span_name"], s.value) for s in items] == [
        ("test_metrics_endpoint_parsed_by_prometheus.<locals>.stream", 3.0)
    ]
    assert fetch(server.url, "/metrics", method="POST").status == 405
    assert fetch(server.url, "/metrics?x=1").status == 400
    assert {s.labels["reason"] for s in families["autotrace_spans_dropped"].samples} == {
        "store_limit",
        "export_queue_full",
    }
    assert autotrace.trace_count() == 7  # f's 5, the stream, the block: none from the requests themselves


def test_stream_time_to_first_item_and_per_item() -> None:
    """A traced generator with known sleeps: time to first item and mean gap within tolerance, items exact."""
    autotrace.configure(TraceConfig(sample_rate=0.0))  # unsampled streams count too

    @traced("tokens")
    def tokens() -> Iterator[int]:
        time.sleep(0.05)
        yield 0
        for i in range(1, 5):
            time.sleep(0.02)
            yield i

    assert list(tokens()) == [0, 1, 2, 3, 4]
    (row,) = [s for s in autotrace.metrics.snapshot()["streams"] if s["name"] == "tokens"]
    assert row["items"]["count"] == 1 and row["items"]["sum"] == 5
    ttft, gap = row["time_to_first_item"]["max"], row["time_per_item"]["max"]
    assert 0.05 <= ttft < 0.05 * 1.02 + 0.5  # at least the sleep; the upper bound leaves room for a loaded machine
    assert 0.02 * 0.98 <= gap < 0.02 * 1.02 + 0.5
    (duration,) = rows(autotrace.metrics.snapshot(), "tokens")
    assert duration["count"] == 1 and duration["max"] >= 0.05 + 4 * 0.02


def test_threads_and_asyncio_tasks_count_exactly() -> None:
    """Threads and asyncio tasks recording into the same series: no update lost."""
    autotrace.configure(TraceConfig(sample_rate=0.5))

    @traced("shared")
    def shared() -> None:
        pass

    @traced("shared")
    async def shared_async() -> None:
        await asyncio.sleep(0)

    def worker() -> None:
        for _ in range(3000):
            shared()

    async def tasks() -> None:
        async def one() -> None:
            for _ in range(200):
                await shared_async()
                with span("shared"):
                    await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(10)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert sum(r["count"] for r in rows(autotrace.metrics.snapshot(), "shared")) == 4 * 3000 + 10 * 200 * 2


def test_cardinality_cap_with_5000_distinct_names(caplog: pytest.LogCaptureFixture) -> None:
    """5,000 span names built from request ids: the series stay within the cap; the rest count under _other."""
    cap = 50
    autotrace.configure(TraceConfig(sample_rate=0.5, metrics_max_series=cap))
    for i in range(5000):
        with span(f"request {i}"):
            pass
    snap = autotrace.metrics.snapshot()
    named = [r for r in snap["spans"] if r["name"].startswith("request ")]
    other = [r for r in snap["spans"] if r["name"] == "_other"]
    assert len({r["name"] for r in named}) <= cap
    assert sum(r["count"] for r in named + other) == 5000
    assert snap["health"]["series_overflow"] == sum(r["count"] for r in other) >= 5000 - cap
    assert sum("max_series" in r.getMessage() for r in caplog.records) <= 1  # logged once per process


def test_series_overflow_counts_every_span_under_other_a_decorators_calls_included() -> None:
    """The overflow counter is the spans counted under _other: each call of a decorator past the cap too."""
    autotrace.configure(TraceConfig(sample_rate=0.0, metrics_max_series=1))
    with span("first"):  # takes the one place, unless a decorator of an earlier test holds it
        pass
    before = autotrace.metrics.snapshot()["health"]["series_overflow"]

    @traced("past the cap")
    def late() -> None:
        pass

    for _ in range(10):
        late()
    for _ in range(3):
        with span("also past"):
            pass
    snap = autotrace.metrics.snapshot()
    assert snap["health"]["series_overflow"] - before == 13
    assert snap["health"]["series_overflow"] == sum(r["count"] for r in rows(snap, "_other"))
    text = autotrace.metrics.prometheus_text()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "autotrace_metrics_series_overflow"]
    assert [s.value for s in family.samples] == [snap["health"]["series_overflow"]]


def test_metrics_off_by_configure_and_environment() -> None:
    """configure(metrics=False) stops recording for decorators made before; AUTOTRACE_METRICS=false reads as off."""

    @traced("quiet")
    def quiet() -> None:
        pass

    quiet()
    autotrace.configure(TraceConfig(sample_rate=0.0, metrics=False))
    for _ in range(10):
        quiet()
        with span("quiet"):
            pass
    assert [r["count"] for r in rows(autotrace.metrics.snapshot(), "quiet")] == [1]
    assert TraceConfig.from_env({"AUTOTRACE_METRICS": "false"}).metrics is False
    assert TraceConfig.from_env({"AUTOTRACE_METRICS_MAX_SERIES": "7"}).metrics_max_series == 7
    with pytest.raises(ValueError, match="AUTOTRACE_METRICS"):
        TraceConfig.from_env({"AUTOTRACE_METRICS": "perhaps"})
    with pytest.raises(ValueError, match="metrics_max_series"):
        TraceConfig(metrics_max_series=0)
    autotrace.configure(TraceConfig(sample_rate=0.0))
    quiet()
    autotrace.metrics.reset()
    assert rows(autotrace.metrics.snapshot(), "quiet") == []
    quiet()
    assert [r["count"] for r in rows(autotrace.metrics.snapshot(), "quiet")] == [1]


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_inflight_lists_a_request_blocked_in_a_thread(server: ServerHandle, rate: float) -> None:
    """/inflight: a blocked request shows with growing age and (sampled) its innermost span; gone once it ends."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    release = threading.Event()
    entered = threading.Event()

    @traced("handle request")
    def handle() -> None:
        load()

    @traced("load weights")
    def load() -> None:
        entered.set()
        release.wait(30)

    worker = threading.Thread(target=handle)
    worker.start()
    try:
        assert entered.wait(10)
        first = [r for r in fetch(server.url, "/inflight").json()["inflight"] if r["name"] == "handle request"]
        time.sleep(0.05)
        doc = fetch(server.url, "/inflight").json()
        second = [r for r in doc["inflight"] if r["name"] == "handle request"]
        assert len(first) == len(second) == 1 and second[0]["age_seconds"] > first[0]["age_seconds"]
        record = second[0]
        assert record["sampled"] is (rate == 1.0) and len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
        if rate == 1.0:
            assert [c["name"] for c in record["chain"]] == ["handle request", "load weights"]
        assert fetch(server.url, "/inflight?min_age=3600").json()["inflight"] == []
    finally:
        release.set()
        worker.join()
    assert [r for r in fetch(server.url, "/inflight").json()["inflight"] if r["name"] == "handle request"] == []


def test_inflight_lists_span_roots_and_async_roots_oldest_first(server: ServerHandle) -> None:
    """span() roots (sampled and not) and async @traced roots show while open, oldest first."""
    autotrace.configure(TraceConfig(sample_rate=0.0))
    gate = threading.Event()
    opened = threading.Barrier(3)

    def in_span(name: str) -> None:
        with span(name):
            opened.wait(10)
            gate.wait(30)

    @traced("async root")
    async def async_root() -> None:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)

    first = threading.Thread(target=in_span, args=("unsampled block",))
    first.start()
    time.sleep(0.01)
    autotrace.configure(TraceConfig(sample_rate=1.0))
    second = threading.Thread(target=in_span, args=("sampled block",))
    second.start()
    third = threading.Thread(target=asyncio.run, args=(async_root(),))
    try:
        opened.wait(10)
        third.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = [r["name"] for r in fetch(server.url, "/inflight").json()["inflight"]]
            if "async root" in names:
                break
            time.sleep(0.01)
        assert names == ["unsampled block", "sampled block", "async root"]
    finally:
        gate.set()
        for t in (first, second, third):
            t.join()
    assert fetch(server.url, "/inflight").json()["inflight"] == []


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_inflight_bad_min_age_is_a_json_400(server: ServerHandle, value: str) -> None:
    """A bad ?min_age= is a JSON 400 naming it, never a 500."""
    reply = fetch(server.url, "/inflight?min_age=" + value)
    assert reply.status == 400 and "min_age" in reply.json()["error"]


def test_new_routes_need_the_token_and_are_not_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics and /inflight sit behind the token like /traces; requests to them record no span."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    with start_in_background(port=0, token="t0ken") as handle:
        for path in ("/metrics", "/inflight"):
            assert fetch(handle.url, path).status == 401
            assert fetch(handle.url, path, headers={"Authorization": "Bearer t0ken"}).status == 200
            assert fetch(handle.url, path, headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert autotrace.trace_count() == 0
    assert autotrace.metrics.snapshot()["spans"] == []


def test_import_autotrace_does_not_import_prometheus_client() -> None:
    """The metrics need no dependency: prometheus_client is for the tests only."""
    import subprocess
    import sys

    code = "import sys, autotrace, autotrace.metrics, autotrace.server; print('prometheus_client' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_reset_frees_the_cap_for_span_names_and_keeps_decorators_counting() -> None:
    """reset() forgets span() names (the cap counts anew) while a decorator made before keeps its series."""

    @traced("kept")
    def kept() -> None:
        pass

    kept()
    autotrace.configure(TraceConfig(sample_rate=0.0, metrics_max_series=20))
    for i in range(100):
        with span(f"id {i}"):
            pass
    assert any(r["name"] == "_other" for r in autotrace.metrics.snapshot()["spans"])
    autotrace.metrics.reset()
    with span("fresh"):
        pass
    kept()
    assert {r["name"]: r["count"] for r in autotrace.metrics.snapshot()["spans"]} == {"fresh": 1, "kept": 1}


def test_requests_from_elsewhere_are_timed_and_listed_sampled_or_not(server: ServerHandle) -> None:
    """span() below a remote parent (a request with a traceparent): timed, and a local root for /inflight."""
    from autotrace.propagation import extract

    for flags in ("01", "00"):
        autotrace.metrics.reset()
        parent = extract({"traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"})
        with span("GET /remote", kind="server", parent=parent):
            (record,) = [r for r in autotrace._inflight.inflight() if r["name"] == "GET /remote"]
            assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and record["sampled"] is (flags == "01")
        assert [r["count"] for r in rows(autotrace.metrics.snapshot(), "GET /remote")] == [1]
        assert [r for r in autotrace._inflight.inflight() if r["name"] == "GET /remote"] == []


def test_many_roots_left_open_keep_span_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of span() roots left open do not make each new root rescan them all (amortized pruning)."""
    from autotrace import _inflight
    from autotrace.context import CURRENT

    opened = [span(f"open {i % 10}") for i in range(5000)]
    for s in opened:
        s.__enter__()
        CURRENT.set(None)  # as if each ran in a task of its own
    looked = 0
    real = _inflight._is_open

    def counting(obj: Any) -> bool:
        nonlocal looked
        looked += 1
        return real(obj)

    monkeypatch.setattr(_inflight, "_is_open", counting)
    for _ in range(5000):
        with span("short"):
            pass
    assert looked < 5 * 5000  # rescanning the open ones at every prune would be ~5,000 per 1,024 roots
    monkeypatch.undo()
    assert len(_inflight.inflight()) == 5000
    for s in opened:
        s.end()
    assert _inflight.inflight() == []


def test_names_past_the_cap_do_not_recount_the_series_table() -> None:
    """Past the cap each new span name costs the same: the series are not counted again per lookup."""
    autotrace.configure(TraceConfig(sample_rate=0.0, metrics_max_series=1000))
    for i in range(1000):
        with span(f"warm {i}"):
            pass
    steps = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal steps
        if event == "call" and frame.f_code.co_filename.endswith("_metrics.py"):
            steps += 1

    sys.setprofile(count)
    try:
        for i in range(200):
            with span(f"request {i}"):
                pass
    finally:
        sys.setprofile(None)
    # A few calls per span (the lookup, a fold now and then), not one per series in the table.
    assert steps < 200 * 5, steps
    assert autotrace.metrics.snapshot()["health"]["series_overflow"] >= 200


def _raise_at(n: int) -> Any:
    """A profile hook raising, as a signal handler would, when the n-th call it sees has returned."""
    seen = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal seen
        if event not in ("c_return", "return") or frame.f_code.co_name == "<genexpr>":
            return  # (signal handlers run after a call; a closing generator would only report it as unraisable)
        seen += 1
        if seen == n:
            sys.setprofile(None)
            raise TimeoutError("deadline")

    return hook


def _free_in_another_thread(lock: Any) -> bool:
    """Whether another thread can take the lock within a second (no thread left holding it)."""
    got: list[bool] = []

    def take() -> None:
        got.append(lock.acquire(timeout=1))
        if got[-1]:
            lock.release()

    t = threading.Thread(target=take)
    t.start()
    t.join()
    return got == [True]


@pytest.mark.parametrize("where", ["fold", "reset", "snapshot", "prune"])
def test_a_signal_anywhere_in_a_locked_step_leaves_the_lock_free(where: str) -> None:
    """A deadline raised after any call in a fold, reset, read or prune propagates and leaves no lock held."""
    from autotrace import _inflight, _metrics

    acts = {
        "fold": lambda: _metrics.series("signal", 1).fold(),
        "reset": autotrace.metrics.reset,
        "snapshot": autotrace.metrics.snapshot,
        "prune": _inflight.prune,
    }
    raised = 0
    for n in range(1, 400):
        h = _metrics.series("signal", 1)
        h.append(5)
        sys.setprofile(_raise_at(n))
        try:
            acts[where]()
        except TimeoutError:
            raised += 1
        else:
            break  # past the last point: the step ran whole
        finally:
            sys.setprofile(None)
        for lock in (_metrics._LOCK, _metrics._TABLE, _inflight._PRUNING):
            assert _free_in_another_thread(lock), (where, n)
    assert raised > 0


def test_reset_frees_the_series_of_decorators_no_longer_alive() -> None:
    """Decorators made and dropped (a plugin reloaded, a test suite) do not use up the series cap for good."""
    import gc

    autotrace.configure(TraceConfig(sample_rate=0.0, metrics_max_series=20))
    for i in range(50):

        @traced(f"short-lived {i}")
        def f() -> None:
            pass

        f()
        del f
        gc.collect()
        autotrace.metrics.reset()
    with span("after"):
        pass
    assert [r["name"] for r in autotrace.metrics.snapshot()["spans"]] == ["after"]
