"""Stress: readers and clearing readers race with recording threads; no span is exported twice or lost."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

import autotrace
import autotrace.server as server
from autotrace import span
from autotrace.otlp import encode_traces
from tests.otlp_check import spans_of, validate

pytestmark = pytest.mark.slow  # stress: deselect with -m 'not slow'; the normal test command runs it

WRITERS = 4
TRACES_PER_WRITER = 3_000
SPANS_PER_TRACE = 3
READERS = 2
CLEARERS = 2


def _write(n: int) -> None:
    for i in range(n):
        with span("root", attributes={"i": i}):
            with span("child"):
                pass
            with span("child2"):
                pass


def _race(clear_once: Callable[[], list[dict[str, Any]]], read_once: Callable[[], None] | None) -> None:
    """Run writers, readers and clearers together; check every span came out of exactly one clear."""
    stop = threading.Event()
    taken: list[list[dict[str, Any]]] = []
    failures: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
                stop.set()

        return run

    def reader() -> None:
        while read_once is not None and not stop.is_set():
            read_once()

    clearing = threading.Event()
    took_some = threading.Event()

    def clearer() -> None:
        while not stop.is_set():
            batch = clear_once()
            taken.append(batch)
            clearing.set()
            if batch:
                took_some.set()
            time.sleep(0.001)

    def writer() -> None:
        clearing.wait(timeout=60)  # start once the clearers are running
        rounds = TRACES_PER_WRITER // 100
        for r in range(rounds):
            _write(100)
            if r == rounds // 2:
                # Halfway, make sure a clear has taken spans while writes go on:
                # the scheduler alone may let the writers finish first (seen on 3.10).
                took_some.wait(timeout=60)
            time.sleep(0)  # let the other threads in often

    writers = [threading.Thread(target=guard(writer)) for _ in range(WRITERS)]
    others = [threading.Thread(target=guard(reader)) for _ in range(READERS)]
    others += [threading.Thread(target=guard(clearer)) for _ in range(CLEARERS)]
    for t in others + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in others:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in writers + others), "a thread hung"
    assert not failures, failures
    taken.append(clear_once())  # whatever is left

    seen = [(s["traceId"], s["spanId"]) for batch in taken for s in batch]
    expected = WRITERS * TRACES_PER_WRITER * SPANS_PER_TRACE
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} spans were exported twice"
    assert len(seen) == expected, f"{expected - len(seen)} spans were lost across clears"
    assert sum(1 for batch in taken if batch) >= 2, "the clearers should have taken spans during the writes"
    stats = autotrace.get_trace_store().stats()
    assert stats["dropped_spans"] == 0 and stats["evicted_traces"] == 0


def test_store_export_clear_races_with_writers() -> None:
    """export(clear=True) racing writers and plain readers hands out every span exactly once."""
    store = autotrace.configure(sample_rate=1.0, max_traces=100_000)

    def clear_once() -> list[dict[str, Any]]:
        doc = store.export(clear=True)
        return spans_of(doc)

    def read_once() -> None:
        store.export(limit=50)
        store.traces(limit=10)
        store.stats()

    _race(clear_once, read_once)


def test_store_take_races_with_writers() -> None:
    """take() racing writers hands out every span exactly once, and exports stay valid OTLP."""
    store = autotrace.configure(sample_rate=1.0, max_traces=100_000)
    checked = []

    def clear_once() -> list[dict[str, Any]]:
        doc = encode_traces(store.take())
        if len(checked) < 3 and doc["resourceSpans"]:
            validate(doc)
            checked.append(True)
        return spans_of(doc)

    _race(clear_once, None)


def test_http_traces_clear_races_with_writers() -> None:
    """GET /traces?clear=true racing writers and plain GET /traces readers returns every span exactly once."""
    store = autotrace.configure(sample_rate=1.0, max_traces=100_000)
    handle = server.start_in_background("127.0.0.1", 0)
    try:
        url = handle.url.rstrip("/")

        def get(query: str) -> dict[str, Any]:
            with urllib.request.urlopen(f"{url}/traces?{query}", timeout=30) as resp:
                assert resp.status == 200
                return json.loads(resp.read())  # type: ignore[no-any-return]

        def clear_once() -> list[dict[str, Any]]:
            return spans_of(get("clear=true"))

        def read_once() -> None:
            get("limit=20")

        _race(clear_once, read_once)
        assert store.trace_count() == 0
    finally:
        handle.stop()
