"""GET /traces/summary, GET /traces/{trace_id} and GET /stats against the real server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import autotrace
from autotrace import span
from autotrace.server import ServerHandle, start_in_background
from tests.otlp_check import validate
from tests.server_helpers import fetch


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """The real server over the global store, on a free loopback port, without a token."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, service_name="svc-a"))
    with start_in_background(port=0) as handle:
        yield handle


def _store() -> dict[str, str]:
    """Three traces: a fast ok one, a slow one with attributes, a failing one; returns their ids by role."""
    with span("GET /fast", kind="server", attributes={"http.route": "/fast", "user": "alice"}) as fast:
        with span("cache.lookup"):
            pass
    with span("POST /slow", kind="server", attributes={"http.route": "/slow", "user": "bob"}) as slow:
        with span("model.generate", attributes={"gen_ai.request.model": "tiny-llm", "tokens": 12}):
            time.sleep(0.06)
    try:
        with span("POST /fail", kind="server", attributes={"user": "carol"}) as fail:
            with span("decode"):
                raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    return {"fast": fast.trace_id, "slow": slow.trace_id, "fail": fail.trace_id}


def summary(server: ServerHandle, query: str = "") -> Any:
    """The parsed answer of GET /traces/summary?query (asserting a 200)."""
    reply = fetch(server.url, "/traces/summary" + ("?" + query if query else ""))
    assert reply.status == 200, reply.body
    return reply.json()


def names(doc: Any) -> list[str]:
    """Root names of a summary answer, in its order."""
    return [t["name"] for t in doc["traces"]]


def test_summary_records_newest_first(server: ServerHandle) -> None:
    """One small record per trace, newest first, with root name, service, counts, duration and key attributes."""
    ids = _store()
    doc = summary(server)
    assert names(doc) == ["POST /fail", "POST /slow", "GET /fast"]
    assert doc["matched"] == doc["stored"] == 3
    fail, slow = doc["traces"][0], doc["traces"][1]
    assert fail["trace_id"] == ids["fail"] and fail["error_count"] == 2 and fail["span_count"] == 2
    assert slow["service"] == "svc-a" and slow["duration"] >= 0.06 and slow["duration_ns"] >= 60_000_000
    assert slow["attributes"] == {"http.route": "/slow", "user": "bob"}
    assert slow["sampling"] is None and int(slow["start_unix_nano"]) > 0


def test_summary_filters(server: ServerHandle) -> None:
    """q (words over names, keys, values), attr=k=v (repeatable), durations, status and service each narrow the list."""
    _store()
    assert names(summary(server, "q=TINY-llm")) == ["POST /slow"]  # a child's attribute value, any case
    assert names(summary(server, "q=cache")) == ["GET /fast"]  # a child's name
    assert names(summary(server, "q=user+carol")) == ["POST /fail"]  # every word must occur
    assert names(summary(server, "attr=user=bob")) == ["POST /slow"]
    assert names(summary(server, "attr=tokens=12&attr=user=bob")) == ["POST /slow"]
    assert names(summary(server, "attr=tokens=12&attr=user=alice")) == []
    assert names(summary(server, "min_duration=0.05")) == ["POST /slow"]
    assert "POST /slow" not in names(summary(server, "max_duration=0.05"))
    assert names(summary(server, "status=error")) == ["POST /fail"]
    assert names(summary(server, "status=ok")) == ["POST /slow", "GET /fast"]
    assert len(summary(server, "service=svc-a")["traces"]) == 3
    assert summary(server, "service=other")["traces"] == []
    limited = summary(server, "limit=1&q=post")
    assert names(limited) == ["POST /fail"] and limited["matched"] == 2


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("min_duration=abc", "min_duration"),
        ("max_duration=-1", "max_duration"),
        ("min_duration=nan", "min_duration"),
        ("min_duration=2&max_duration=1", "min_duration"),
        ("attr=novalue", "attr"),
        ("attr==x", "attr"),
        ("status=broken", "status"),
        ("limit=-3", "limit"),
        ("q=a&q=b", "q"),
        ("service=", "service"),
        ("sort=duration", "sort"),
        ("q=" + "x" * 600, "q"),
    ],
)
def test_summary_bad_values_are_json_400(server: ServerHandle, query: str, named: str) -> None:
    """A bad filter value is a JSON 400 whose message names the parameter, never a 500."""
    reply = fetch(server.url, "/traces/summary?" + query)
    assert reply.status == 400, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert named in reply.json()["error"]


def test_summary_etag_and_304(server: ServerHandle) -> None:
    """An unchanged store answers 304 to If-None-Match; a new trace or other filters change the tag."""
    _store()
    first = fetch(server.url, "/traces/summary?limit=10")
    etag = first.headers["etag"]
    again = fetch(server.url, "/traces/summary?limit=10", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    other = fetch(server.url, "/traces/summary?limit=10&status=error", headers={"If-None-Match": etag})
    assert other.status == 200
    with span("new"):
        pass
    changed = fetch(server.url, "/traces/summary?limit=10", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.json()["traces"][0]["name"] == "new"


def test_one_trace_as_otlp_json(server: ServerHandle) -> None:
    """GET /traces/{id} answers that trace alone as schema-valid OTLP/JSON; upper-case ids are accepted."""
    ids = _store()
    reply = fetch(server.url, "/traces/" + ids["slow"].upper())
    assert reply.status == 200
    doc = reply.json()
    validate(doc)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["name"] for s in spans} == {"POST /slow", "model.generate"}
    assert {s["traceId"] for s in spans} == {ids["slow"]}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/traces/" + "ab" * 16, 404),
        ("/traces/" + "0" * 32, 400),
        ("/traces/xyz", 400),
        ("/traces/" + "a" * 33, 400),
        ("/traces/%FF%FE", 404),
        ("/traces/" + "ab" * 16 + "?limit=1", 400),
    ],
)
def test_one_trace_bad_or_absent_id(server: ServerHandle, path: str, status: int) -> None:
    """An absent trace is a JSON 404; a malformed id or a query is a JSON 400; never a 500."""
    _store()
    reply = fetch(server.url, path)
    assert reply.status == status, reply.body
    assert reply.json()["status"] == status


def test_stats_per_span_name(server: ServerHandle) -> None:
    """GET /stats: per span name count, errors, percentiles, max and self time in seconds, with the slowest trace."""
    ids = _store()
    with span("POST /slow", kind="server"):
        pass  # a second, faster POST /slow
    doc = fetch(server.url, "/stats").json()
    # Sampling everything, every call is stored: both sources agree on the counts.
    assert doc["source"] == "all" and doc["traces"] == 4 and doc["spans"] == 7
    rows = {r["name"]: r for r in doc["names"]}
    slow = rows["POST /slow"]
    assert slow["count"] == 2 and slow["errors"] == 0 and slow["source"] == "all" and slow["stored_count"] == 2
    assert slow["max"] >= 0.06 and slow["p50"] < 0.06 and slow["p99"] == slow["max"]
    assert slow["slowest_trace_id"] == ids["slow"]
    # The root's own time excludes its child's sleep; the child's self time is its whole duration.
    assert slow["self_time"] < 0.03 and rows["model.generate"]["self_time"] == rows["model.generate"]["max"]
    assert rows["decode"]["errors"] == 1
    assert fetch(server.url, "/stats?x=1").status == 400


def test_viewer_routes_need_the_token_and_are_not_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The new routes sit behind the token like /traces, and requests to them record no span."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    ids = _store()
    with start_in_background(port=0, token="t0ken") as handle:
        for path in ("/traces/summary", "/traces/" + ids["fast"], "/stats"):
            assert fetch(handle.url, path).status == 401
            assert fetch(handle.url, path, headers={"Authorization": "Bearer t0ken"}).status == 200
            assert fetch(handle.url, path, headers={"Sec-Fetch-Site": "cross-site"}).status == 403
        assert autotrace.trace_count() == 3  # no SERVER span for any of those requests


def test_sampling_reason_and_a_growing_trace(server: ServerHandle) -> None:
    """The root's autotrace.sampling.kept is the record's sampling; a span joining a trace updates its record."""
    with span("kept", attributes={"autotrace.sampling.kept": "slow", "http.route": "/k"}) as root:
        pass
    first = summary(server)["traces"][0]
    assert first["sampling"] == "slow" and first["attributes"] == {"http.route": "/k"} and first["span_count"] == 1
    with span("late", parent=root.get_span_context()):
        pass
    again = summary(server)["traces"][0]
    assert again["trace_id"] == root.trace_id and again["span_count"] == 2


def test_self_time_counts_overlapping_children_once() -> None:
    """Self time is the parent's duration minus the union of its children's intervals, clipped to the parent."""
    from autotrace import _summary

    class S:
        def __init__(self, sid: int, parent: int | None, start: int, end: int) -> None:
            self._span_id, self._parent_id, self._start, self._end = sid, parent, start, end

    spans = [S(1, None, 0, 100), S(2, 1, 10, 40), S(3, 1, 30, 60), S(4, 1, 90, 150), S(5, 2, 10, 20)]
    assert _summary._self_times(spans) == [100 - 50 - 10, 20, 30, 60, 10]
    assert _summary.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert _summary.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert _summary.percentile([5.0], 95) == 5.0
