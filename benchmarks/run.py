"""Measure what autotrace costs the code it wraps, beside wrapt and OpenTelemetry.

Run from the repository root::

    python benchmarks/run.py                    # full run (a few minutes)
    python benchmarks/run.py --quick            # same cases, fewer and shorter rounds (~10 s)
    python benchmarks/run.py --smoke --json x   # every case once or twice (~2 s), bars not judged: for CI
    python benchmarks/run.py --json out.json    # write the JSON elsewhere than benchmarks/results.json
    python benchmarks/run.py --server           # plus the /traces server under 1, 4, 16 clients (~1 min more)
    python benchmarks/run.py --server-only      # that section alone (with --quick or --smoke: shorter)

It prints a Markdown table and one PASS/FAIL line per bar of issue 6, writes every
figure as JSON (to benchmarks/results.json unless --json says otherwise), and
exits with status 1 when a bar fails (never with --smoke).

Every case runs in this one process. Each round visits every case once, in a
shuffled order (so load from other processes hits all cases alike), and each
visit times a calibrated number of loops with the garbage collector disabled
(as ``timeit`` does, for every case alike; the collector is run between
visits). Single-thread cases are timed in CPU time of this process
(``time.process_time``), which does not count time spent waiting for a core
that another process holds (``--wall`` uses wall time). A case's figure is the
median over rounds, with its inter-quartile range. The 2-thread throughput is
measured apart, in wall time, from interleaved pairs of 1-thread and 2-thread
runs (see the comment above ``_thread_run``). The bars are ratios between
cases of the same run, so a busy machine moves them far less than it moves the
absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wrapt

import autotrace
from autotrace import span, traced
from autotrace._state import finish

try:  # OpenTelemetry is optional (the `bench` extra)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    HAVE_OTEL = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_OTEL = False

GEN_ITEMS = 100  # items per traced generator; the span's own cost is spread over them
CHILDREN = 10  # children under one root in the "root + 10 children" case
EXPORT_SPANS = 10_000


def configure(sample_rate: float, max_traces: int = 1000, metrics: bool = True, **settings: Any) -> None:
    """Install a fresh autotrace configuration with an empty store (metrics on, as by default)."""
    autotrace.clear_traces()
    autotrace.configure(
        autotrace.TraceConfig(sample_rate=sample_rate, max_traces=max_traces, metrics=metrics, **settings)
    )
    autotrace.clear_traces()


# Tail sampling on (both options), with a threshold no benchmark call reaches: every
# trace the head rule leaves out is recorded provisionally, then discarded.
TAIL: dict[str, Any] = {"keep_errors": True, "keep_slower_than": 60.0}
DECISION_BATCH = 1000  # provisional traces built (untimed) per timed batch of decisions


def decision_timer(fail: bool) -> Callable[[int], float]:
    """Time only the end of the local root of 11-span provisional traces: the keep/discard decision."""

    def run(loops: int) -> float:
        total = 0.0
        done = 0
        while done < loops:
            roots = []
            for _ in range(min(DECISION_BATCH, loops - done)):
                root = span("root")  # head rate 0: recorded provisionally
                for _ in range(CHILDREN):
                    span("child", parent=root).end()
                if fail:
                    root.set_status("ERROR", "failed")
                root._end = root._start + 1  # type: ignore[union-attr]
                roots.append(root)
            t0 = CLOCK()
            for root in roots:
                finish(root)  # type: ignore[arg-type]
            total += CLOCK() - t0
            done += len(roots)
            autotrace.clear_traces()
        return total

    return gc_off(run)


# -- the functions under test -------------------------------------------------------------


def bare() -> None:
    return None


@wrapt.decorator
def _passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


@_passthrough
def wrapt_passthrough() -> None:
    return None


@traced
def traced_call() -> None:
    return None


@traced
def traced_child() -> None:
    return None


@traced
def traced_root() -> None:
    for _ in range(CHILDREN):
        traced_child()


def bare_root() -> None:
    for _ in range(CHILDREN):
        bare()


async def bare_async() -> None:
    return None


@traced
async def traced_async() -> None:
    return None


def bare_gen() -> Any:
    yield from range(GEN_ITEMS)


@traced
def traced_gen() -> Any:
    yield from range(GEN_ITEMS)


async def bare_agen() -> Any:
    for i in range(GEN_ITEMS):
        yield i


@traced
async def traced_agen() -> Any:
    for i in range(GEN_ITEMS):
        yield i


@dataclass
class Case:
    """One measured thing: ``run(loops)`` returns seconds for ``loops`` repetitions."""

    key: str
    label: str
    run: Callable[[int], float]
    per: str = "call"
    units: int = 1  # operations per loop (items of a generator, calls in a thread test)
    setup: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None
    loops: int = 0
    samples: list[float] = field(default_factory=list)  # ns per operation, one per round

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples)
        q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0], s[0], s[0]]
        return {
            "label": self.label,
            "per": self.per,
            "median_ns": statistics.median(s),
            "q1_ns": q[0],
            "q3_ns": q[2],
            "min_ns": s[0],
            "max_ns": s[-1],
            "rounds": len(s),
            "loops": self.loops,
        }


# CPU time of this process for single-thread cases; main() switches it to wall time on --wall.
CLOCK: Callable[[], float] = time.process_time


def timer(stmt: str, namespace: dict[str, Any]) -> Callable[[int], float]:
    """timeit's loop (no per-iteration function call of ours; GC off while timing)."""
    return lambda loops: timeit.Timer(stmt, timer=CLOCK, globals=namespace).timeit(loops)


def gc_off(fn: Callable[[int], float]) -> Callable[[int], float]:
    """Run a custom timer with the collector off, as timeit runs its loop."""

    def run(loops: int) -> float:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(loops)
        finally:
            if enabled:
                gc.enable()

    return run


_LOOP = asyncio.new_event_loop()


def async_timer(fn: Callable[[], Any]) -> Callable[[int], float]:
    """Await ``fn()`` ``loops`` times inside one already running event loop."""

    async def main(loops: int) -> float:
        perf = CLOCK
        t0 = perf()
        for _ in range(loops):
            await fn()
        return perf() - t0

    return gc_off(lambda loops: _LOOP.run_until_complete(main(loops)))


def agen_timer(fn: Callable[[], Any]) -> Callable[[int], float]:
    """Consume ``fn()`` with ``async for``, ``loops`` times, inside one already running event loop."""

    async def main(loops: int) -> float:
        perf = CLOCK
        t0 = perf()
        for _ in range(loops):
            async for _ in fn():
                pass
        return perf() - t0

    return gc_off(lambda loops: _LOOP.run_until_complete(main(loops)))


# -- 2-thread throughput -----------------------------------------------------------------------
#
# What the ratio means: one fixed amount of work (N calls of a traced function) is done once by one
# thread and once split evenly over two threads that a barrier starts together; the ratio is
# wall time of the 1-thread run / wall time of the 2-thread run, i.e. the throughput two threads
# reach as a fraction of what one reaches. Under the GIL only one thread runs Python at a time, so
# 100% is the ceiling: what is lost is the GIL hand-offs (one every sys.getswitchinterval()) and
# whatever the traced code adds to them, such as a lock a thread can hold while it loses the GIL
# (the other thread then blocks on the lock and both wait). Figures above 100% are noise.
#
# Wall time is what is judged, not CPU time: a thread blocked on a lock or waiting for the GIL is
# idle, so CPU time would hide exactly the loss this measures (the CPU-time ratio is reported
# beside it: the gap between the two is time spent waiting). Wall time moves with the load of
# other processes on a shared machine, so the measurement is made robust, not lenient:
# - the 1-thread and 2-thread runs are made back to back as a pair, alternating which goes first
#   (AB BA AB ...), so slow drift in the load hits both sides of a pair alike;
# - each run is long (~200 ms in a full run), which dwarfs thread start-up and spans dozens of
#   GIL switch intervals; the clock starts only once every thread waits at the barrier;
# - the figure is the median of the per-pair ratios, reported with their quartiles and range.
# `tail` is the time between the first and the last thread finishing, as a share of the 2-thread
# run: during that tail one thread runs alone, so a large tail would flatter the figure.


def _thread_run(fn: Callable[[], Any], nthreads: int, calls: int) -> tuple[float, float, float]:
    """Make ``calls`` calls of ``fn`` split over ``nthreads`` threads started together.

    Returns (wall seconds, process CPU seconds, seconds between the first and last thread ending).
    """
    share = calls // nthreads
    barrier = threading.Barrier(nthreads + 1)
    ends = [0.0] * nthreads

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(share):
            fn()
        ends[i] = time.perf_counter()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
    enabled = gc.isenabled()
    gc.disable()  # as timeit does, for both sides alike
    try:
        for t in threads:
            t.start()
        while barrier.n_waiting < nthreads:  # start the clock only once every thread is parked
            time.sleep(0.001)
        c0 = time.process_time()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        if enabled:
            gc.enable()
    return wall, cpu, max(ends) - min(ends)


def _spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles and range of ``values``."""
    s = sorted(values)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median": statistics.median(s), "q1": q[0], "q3": q[2], "min": s[0], "max": s[-1]}


def measure_threads(
    fn: Callable[[], Any],
    pairs: int,
    target: float,
    setup: Callable[[], None] = lambda: None,
    teardown: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """2-thread throughput as a share of 1-thread throughput, over ``pairs`` interleaved pairs."""

    def run(nthreads: int, calls: int) -> tuple[float, float, float]:
        setup()
        gc.collect()
        try:
            return _thread_run(fn, nthreads, calls)
        finally:
            teardown()

    calls = 1000
    while True:  # calibrate: the 1-thread run should take about `target` seconds
        wall = run(1, calls)[0]
        if wall >= target / 5 or calls >= 100_000_000:
            break
        calls *= 10
    calls = max(2, int(calls * target / max(wall, 1e-9))) // 2 * 2  # even: both threads get the same share
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    tails: list[float] = []
    one: list[float] = []
    two: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            w1, c1, _ = run(1, calls)
            w2, c2, tail = run(2, calls)
        else:
            w2, c2, tail = run(2, calls)
            w1, c1, _ = run(1, calls)
        ratios.append(w1 / w2)
        cpu_ratios.append(c1 / c2 if c2 > 0 else float("nan"))
        tails.append(tail / w2)
        one.append(w1 * 1e9 / calls)
        two.append(w2 * 1e9 / calls)
    return {
        "calls_per_run": calls,
        "pairs": pairs,
        "ratio": _spread(ratios),
        "cpu_ratio": _spread(cpu_ratios),
        "tail": _spread(tails),
        "one_thread_ns_per_call": _spread(one),
        "two_threads_ns_per_call": _spread(two),
        "ratios": ratios,
    }


# -- building the cases ------------------------------------------------------------------


def autotrace_cases() -> list[Case]:
    sampled = lambda: configure(1.0)  # noqa: E731
    unsampled = lambda: configure(0.0)  # noqa: E731
    # The same with metrics off: what the metrics over every call cost.
    sampled_off = lambda: configure(1.0, metrics=False)  # noqa: E731
    unsampled_off = lambda: configure(0.0, metrics=False)  # noqa: E731
    ns = {"bare": bare, "wrapt_passthrough": wrapt_passthrough, "traced_call": traced_call, "span": span}
    ns.update(traced_root=traced_root, bare_root=bare_root, traced_gen=traced_gen, bare_gen=bare_gen)
    return [
        Case("bare", "bare call", timer("bare()", ns)),
        Case("wrapt", "wrapt pass-through", timer("wrapt_passthrough()", ns)),
        Case("traced_sampled", "@traced, sampled", timer("traced_call()", ns), setup=sampled),
        Case("traced_unsampled", "@traced, unsampled", timer("traced_call()", ns), setup=unsampled),
        Case("span_sampled", "with span(), sampled", timer("with span('op'): pass", ns), setup=sampled),
        Case("span_unsampled", "with span(), unsampled", timer("with span('op'): pass", ns), setup=unsampled),
        Case("traced_sampled_nom", "@traced, sampled, metrics off", timer("traced_call()", ns), setup=sampled_off),
        Case(
            "traced_unsampled_nom", "@traced, unsampled, metrics off", timer("traced_call()", ns), setup=unsampled_off
        ),
        Case(
            "span_sampled_nom",
            "with span(), sampled, metrics off",
            timer("with span('op'): pass", ns),
            setup=sampled_off,
        ),
        Case(
            "span_unsampled_nom",
            "with span(), unsampled, metrics off",
            timer("with span('op'): pass", ns),
            setup=unsampled_off,
        ),
        Case("bare_root", "bare root + 10 child calls", timer("bare_root()", ns), per="trace"),
        Case("root10", "root + 10 children, sampled", timer("traced_root()", ns), per="trace", setup=sampled),
        Case("bare_async", "bare async call", async_timer(bare_async)),
        Case("async_sampled", "async @traced, sampled", async_timer(traced_async), setup=sampled),
        Case("async_unsampled", "async @traced, unsampled", async_timer(traced_async), setup=unsampled),
        Case("bare_gen", "bare generator", timer("for _ in bare_gen(): pass", ns), per="item", units=GEN_ITEMS),
        Case(
            "traced_tail",
            "@traced, tail sampling on, head rate 0.1",
            timer("traced_call()", ns),
            setup=lambda: configure(0.1, **TAIL),
        ),
        Case(
            "root10_tail",
            "root + 10 children, tail sampling on, head rate 0 (all discarded)",
            timer("traced_root()", ns),
            per="trace",
            setup=lambda: configure(0.0, **TAIL),
        ),
        Case(
            "decide_discard",
            "tail decision at the root of an 11-span trace: discard",
            decision_timer(False),
            per="decision",
            setup=lambda: configure(0.0, **TAIL),
        ),
        Case(
            "decide_keep",
            "tail decision at the root of an 11-span trace: keep (an error)",
            decision_timer(True),
            per="decision",
            setup=lambda: configure(0.0, max_traces=100_000, **TAIL),
        ),
        Case(
            "gen_sampled",
            "traced generator, sampled",
            timer("for _ in traced_gen(): pass", ns),
            per="item",
            units=GEN_ITEMS,
            setup=sampled,
        ),
        Case(
            "gen_unsampled",
            "traced generator, unsampled",
            timer("for _ in traced_gen(): pass", ns),
            per="item",
            units=GEN_ITEMS,
            setup=unsampled,
        ),
        Case("bare_agen", "bare async generator", agen_timer(bare_agen), per="item", units=GEN_ITEMS),
        Case(
            "agen_sampled",
            "traced async generator, sampled",
            agen_timer(traced_agen),
            per="item",
            units=GEN_ITEMS,
            setup=sampled,
        ),
        Case(
            "agen_unsampled",
            "traced async generator, unsampled",
            agen_timer(traced_agen),
            per="item",
            units=GEN_ITEMS,
            setup=unsampled,
        ),
    ]


@dataclass
class OTel:
    """The OpenTelemetry side: its timed cases, and its sampled decorator for the thread test."""

    cases: list[Case]
    call: Callable[[], None]
    clear: Callable[[], None]


def otel_cases() -> OTel:
    """OpenTelemetry SDK cases: SimpleSpanProcessor + InMemorySpanExporter sampled, ALWAYS_OFF unsampled."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    tracer_off = TracerProvider(sampler=ALWAYS_OFF).get_tracer("bench")

    @tracer.start_as_current_span("otel_call")
    def otel_call() -> None:
        return None

    @tracer_off.start_as_current_span("otel_call")
    def otel_call_off() -> None:
        return None

    @tracer.start_as_current_span("otel_child")
    def otel_child() -> None:
        return None

    @tracer.start_as_current_span("otel_root")
    def otel_root() -> None:
        for _ in range(CHILDREN):
            otel_child()

    @tracer.start_as_current_span("otel_async")
    async def otel_async() -> None:
        return None

    def otel_gen() -> Any:
        # The usual OpenTelemetry way to trace a generator: its body runs inside the span.
        with tracer.start_as_current_span("otel_gen"):
            yield from range(GEN_ITEMS)

    async def otel_agen() -> Any:
        with tracer.start_as_current_span("otel_agen"):
            for i in range(GEN_ITEMS):
                yield i

    ns = {"otel_call": otel_call, "otel_call_off": otel_call_off, "tracer": tracer, "tracer_off": tracer_off}
    ns.update(otel_root=otel_root, otel_gen=otel_gen)
    clear = exporter.clear  # the in-memory exporter keeps every span: empty it after each visit
    cases = [
        Case("otel_sampled", "OTel decorator, sampled", timer("otel_call()", ns), teardown=clear),
        Case("otel_unsampled", "OTel decorator, ALWAYS_OFF", timer("otel_call_off()", ns)),
        Case(
            "otel_with_sampled",
            "OTel start_as_current_span block, sampled",
            timer("with tracer.start_as_current_span('op'): pass", ns),
            teardown=clear,
        ),
        Case(
            "otel_with_unsampled",
            "OTel start_as_current_span block, ALWAYS_OFF",
            timer("with tracer_off.start_as_current_span('op'): pass", ns),
        ),
        Case("otel_root10", "OTel root + 10 children", timer("otel_root()", ns), per="trace", teardown=clear),
        Case("otel_async", "OTel async decorator, sampled", async_timer(otel_async), teardown=clear),
        Case(
            "otel_gen",
            "OTel generator in start_as_current_span",
            timer("for _ in otel_gen(): pass", ns),
            per="item",
            units=GEN_ITEMS,
            teardown=clear,
        ),
        Case(
            "otel_agen",
            "OTel async generator in start_as_current_span",
            agen_timer(otel_agen),
            per="item",
            units=GEN_ITEMS,
            teardown=clear,
        ),
    ]
    return OTel(cases, otel_call, clear)


def calibrate(case: Case, target: float) -> None:
    """Pick a loop count so that one visit takes about ``target`` seconds."""
    case.setup()
    try:
        loops = 10
        while True:
            elapsed = case.run(loops)
            if elapsed >= target / 5 or loops >= 10_000_000:
                break
            loops *= 10
        case.loops = max(2, int(loops * target / max(elapsed, 1e-9)))
    finally:
        case.teardown()


def measure(cases: list[Case], rounds: int, target: float, seed: int, progress: bool) -> None:
    for case in cases:
        calibrate(case, target)
    rng = random.Random(seed)
    for r in range(rounds):
        order = cases[:]
        rng.shuffle(order)
        for case in order:
            case.setup()
            gc.collect()
            try:
                elapsed = case.run(case.loops)
            finally:
                case.teardown()
            case.samples.append(elapsed * 1e9 / (case.loops * case.units))
        if progress:
            print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)


# -- memory and export ------------------------------------------------------------------------


def _record_traces(traces: int, per_trace: int) -> None:
    """Record ``traces`` traces of ``per_trace`` spans, each span with 3 attributes of its own."""
    for i in range(traces):
        with span("request") as root:
            root.set_attribute("gen_ai.request.model", "tiny-llm")
            root.set_attribute("gen_ai.usage.input_tokens", 1000 + i)
            root.set_attribute("server.latency_s", i * 0.5)
            for j in range(per_trace - 1):
                with span("step") as s:
                    s.set_attribute("gen_ai.request.model", "tiny-llm")
                    s.set_attribute("gen_ai.usage.input_tokens", 1000 + j)
                    s.set_attribute("server.latency_s", j * 0.5)


@traced
def _mem_leaf() -> None:
    return None


@traced
def _mem_root(children: int) -> None:
    for _ in range(children):
        _mem_leaf()


def _record_traced(traces: int, per_trace: int) -> None:
    """Record @traced traces of ``per_trace`` spans, each span with the 3 ``code.*``
    attributes @traced gives every span, in the dict it shares with its decorator."""
    for _ in range(traces):
        _mem_root(per_trace - 1)


def retained_bytes(traces: int, per_trace: int, record: Callable[[int, int], None] | None = None) -> float:
    """Bytes the store keeps per span (tracemalloc, after a full collection)."""
    configure(1.0, max_traces=traces)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        (record or _record_traces)(traces, per_trace)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert autotrace.get_trace_store().stats()["spans"] == traces * per_trace
    configure(1.0)
    return (after - before) / (traces * per_trace)


def otel_retained_bytes(count: int) -> float:
    """The same for OpenTelemetry's in-memory exporter (single spans with 3 attributes)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            with tracer.start_as_current_span("request") as s:
                s.set_attribute("gen_ai.request.model", "tiny-llm")
                s.set_attribute("gen_ai.usage.input_tokens", 1000 + i)
                s.set_attribute("server.latency_s", i * 0.5)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(exporter.get_finished_spans()) == count
    return (after - before) / count


# (key, what is stored, traces, spans per trace, recorder); counts are scaled down in --smoke.
MEMORY_CASES: list[tuple[str, str, int, int, Callable[[int, int], None]]] = [
    (
        "traced_traces_of_10",
        "@traced, its 3 `code.*` attributes (shared dict), traces of 10 spans",
        1000,
        10,
        _record_traced,
    ),
    (
        "traced_traces_of_1",
        "@traced, its 3 `code.*` attributes (shared dict), traces of 1 span",
        10_000,
        1,
        _record_traced,
    ),
    ("traces_of_10", "`span()` + 3 `set_attribute` (own dict), traces of 10 spans", 1000, 10, _record_traces),
    ("traces_of_1", "`span()` + 3 `set_attribute` (own dict), traces of 1 span", 10_000, 1, _record_traces),
]


def memory_figures(runs: int, scale: float, otel: bool) -> dict[str, Any]:
    """Bytes retained per stored span for each memory case, measured ``runs`` times."""
    out: dict[str, Any] = {}
    for key, label, traces, per_trace, record in MEMORY_CASES:
        n = max(1, int(traces * scale))
        values = [retained_bytes(n, per_trace, record) for _ in range(runs)]
        out[key] = {"label": label, "traces": n, "spans_per_trace": per_trace, "runs": runs, **_spread(values)}
    if otel:
        n = max(1, int(10_000 * scale))
        values = [otel_retained_bytes(n) for _ in range(runs)]
        label = "OTel start_as_current_span + 3 set_attribute, InMemorySpanExporter"
        out["otel_single_span"] = {"label": label, "traces": n, "spans_per_trace": 1, "runs": runs, **_spread(values)}
    return out


def _otel_spans(traces: int, per_trace: int) -> list[Any]:
    """The spans of _record_traces made by the OpenTelemetry SDK (same names, attributes, shape)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for i in range(traces):
        with tracer.start_as_current_span("request") as root:
            root.set_attribute("gen_ai.request.model", "tiny-llm")
            root.set_attribute("gen_ai.usage.input_tokens", 1000 + i)
            root.set_attribute("server.latency_s", i * 0.5)
            for j in range(per_trace - 1):
                with tracer.start_as_current_span("step") as s:
                    s.set_attribute("gen_ai.request.model", "tiny-llm")
                    s.set_attribute("gen_ai.usage.input_tokens", 1000 + j)
                    s.set_attribute("server.latency_s", j * 0.5)
    return list(exporter.get_finished_spans())


def _otel_proto_encoder() -> Callable[[list[Any]], bytes] | None:
    """OpenTelemetry's own OTLP protobuf encoder (what its OTLP/HTTP exporter sends), when installed."""
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return lambda spans: bytes(encode_spans(spans).SerializeToString())


def export_rates(rounds: int, otel: bool) -> dict[str, Any]:
    """Spans/s over 10,000 stored spans: export_traces(), plus json.dumps, the direct encoder, OTel's protobuf.

    The direct encoder is timed as GET /traces runs it (the store's traces,
    streamed in pieces of 256 spans, joined). OpenTelemetry's protobuf encoder
    runs on the same spans recorded by its SDK (same names, attributes, shape).
    Each round times every encoder once, in a shuffled order.
    """
    from autotrace import _otlp_json
    from autotrace._resource import current as resource_attributes

    configure(1.0, max_traces=EXPORT_SPANS // 10)
    _record_traces(EXPORT_SPANS // 10, 10)
    store = autotrace.get_trace_store()
    otel_encode = _otel_proto_encoder() if otel else None
    otel_spans = _otel_spans(EXPORT_SPANS // 10, 10) if otel_encode is not None else []
    expected = json.loads(json.dumps(autotrace.export_traces()))
    body = b"".join(_otlp_json.stream(store.traces(), resource_attributes(), 256))
    assert json.loads(body) == expected, "the direct encoder's document differs from export_traces()"
    del expected, body

    def dict_only() -> int:
        return len(autotrace.export_traces()["resourceSpans"][0]["scopeSpans"][0]["spans"])

    def dumped() -> int:
        doc = autotrace.export_traces()
        json.dumps(doc)
        return len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"])

    def direct() -> int:
        traces = store.traces()
        b"".join(_otlp_json.stream(traces, resource_attributes(), 256))
        return sum(len(t) for t in traces)

    def proto() -> int:
        assert otel_encode is not None
        otel_encode(otel_spans)
        return len(otel_spans)

    encoders: dict[str, Callable[[], int]] = {"dict": dict_only, "dumps": dumped, "direct": direct}
    if otel_encode is not None:
        encoders["otel_proto"] = proto
    rates: dict[str, list[float]] = {k: [] for k in encoders}
    ratios: list[float] = []
    rng = random.Random(3)
    for _ in range(rounds):
        order = list(encoders)
        rng.shuffle(order)
        for key in order:
            gc.collect()
            t0 = CLOCK()
            n = encoders[key]()
            elapsed = CLOCK() - t0
            assert n == EXPORT_SPANS, (key, n)
            rates[key].append(n / elapsed)
        ratios.append(rates["direct"][-1] / rates["dumps"][-1])
    configure(1.0)
    out: dict[str, Any] = {"spans": EXPORT_SPANS, "direct_over_dumps": _spread(ratios)}
    names = {
        "dict": "export_traces_spans_per_s",
        "dumps": "with_json_dumps_spans_per_s",
        "direct": "direct_json_spans_per_s",
        "otel_proto": "otel_protobuf_spans_per_s",
    }
    for key, values in rates.items():
        name = names[key]
        out[name] = statistics.median(values)
        out[f"{name}_min"] = min(values)
        out[f"{name}_max"] = max(values)
    return out


# -- report ---------------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 10_000 else f"{ns:.0f} ns"


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


# rows: (autotrace case, OpenTelemetry case or None)
ROWS = [
    ("bare", None),
    ("wrapt", None),
    ("traced_sampled", "otel_sampled"),
    ("traced_unsampled", "otel_unsampled"),
    ("span_sampled", "otel_with_sampled"),
    ("span_unsampled", "otel_with_unsampled"),
    ("traced_sampled_nom", None),
    ("traced_unsampled_nom", None),
    ("span_sampled_nom", None),
    ("span_unsampled_nom", None),
    ("bare_root", None),
    ("root10", "otel_root10"),
    ("bare_async", None),
    ("async_sampled", "otel_async"),
    ("async_unsampled", None),
    ("bare_gen", None),
    ("gen_sampled", "otel_gen"),
    ("gen_unsampled", None),
    ("bare_agen", None),
    ("agen_sampled", "otel_agen"),
    ("agen_unsampled", None),
    ("traced_tail", None),
    ("root10_tail", None),
    ("decide_discard", None),
    ("decide_keep", None),
]


def fmt_pct(d: dict[str, float]) -> str:
    """A ratio's median with its inter-quartile range and range, as percentages."""
    return f"{d['median']:.0%} (IQR {d['q1']:.0%}–{d['q3']:.0%}, range {d['min']:.0%}–{d['max']:.0%})"


def report(results: dict[str, Any]) -> tuple[str, list[tuple[str, bool, str]]]:
    """The Markdown tables and the bars of issue 6, from the figures of one run."""
    cases = results["cases"]
    med = {k: v["median_ns"] for k, v in cases.items()}
    bare_ns, wrapt_ns = med["bare"], med["wrapt"]
    lines = [
        "| case | per | autotrace median (IQR) | × bare call | × wrapt pass-through | OpenTelemetry median (IQR) | autotrace / OTel |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, okey in ROWS:
        c = cases[key]
        # Per-span figures for the 11-span trace make the ratios comparable with a single call.
        spans = CHILDREN + 1 if c["per"] == "trace" else 1
        at = f"{fmt_ns(c['median_ns'])} ({fmt_ns(c['q1_ns'])}–{fmt_ns(c['q3_ns'])})"
        rb = fmt_ratio(c["median_ns"] / spans / bare_ns) if key != "bare" else "1.00x"
        rw = fmt_ratio(c["median_ns"] / spans / wrapt_ns)
        ot = rot = ""
        if okey and okey in cases:
            o = cases[okey]
            ot = f"{fmt_ns(o['median_ns'])} ({fmt_ns(o['q1_ns'])}–{fmt_ns(o['q3_ns'])})"
            rot = fmt_ratio(c["median_ns"] / o["median_ns"])
        per = c["per"] + (f" ({spans} spans)" if spans > 1 else "")
        lines.append(f"| {c['label']} | {per} | {at} | {rb} | {rw} | {ot} | {rot} |")
    mem = results["memory"]
    ex = results["export"]
    at_thr = results["threads"]["autotrace"]
    ot_thr = results["threads"].get("opentelemetry")
    lines.append("")
    lines.append("| other | autotrace | OpenTelemetry |")
    lines.append("|---|---|---|")
    lines.append(
        f"| 2-thread throughput / 1-thread, sampled decorator (wall time, same total work, median of "
        f"{at_thr['pairs']} interleaved pairs) | {fmt_pct(at_thr['ratio'])} | "
        f"{fmt_pct(ot_thr['ratio']) if ot_thr else ''} |"
    )
    lines.append(
        f"| the same in process CPU time (the gap to the row above is waiting) | {fmt_pct(at_thr['cpu_ratio'])} | "
        f"{fmt_pct(ot_thr['cpu_ratio']) if ot_thr else ''} |"
    )
    per_call = ["", ""]
    for i, t in enumerate((at_thr, ot_thr)):
        if t:
            one, two = t["one_thread_ns_per_call"]["median"], t["two_threads_ns_per_call"]["median"]
            per_call[i] = f"{fmt_ns(one)} / {fmt_ns(two)}"
    lines.append(f"| wall time per call, 1 thread / 2 threads | {per_call[0]} | {per_call[1]} |")
    otel_mem = mem.get("otel_single_span")
    for key, *_ in MEMORY_CASES:
        m = mem[key]
        o = f"{otel_mem['median']:.0f} B" if otel_mem and key == "traces_of_1" else ""
        lines.append(
            f"| bytes retained per stored span: {m['label']} | {m['median']:.0f} B ({m['min']:.0f}–{m['max']:.0f} B) "
            f"| {o} |"
        )
    lines.append(
        f"| OTLP JSON export, `export_traces()` on {ex['spans']:,} spans (dict only) | "
        f"{ex['export_traces_spans_per_s']:,.0f} spans/s | |"
    )
    lines.append(f"| the same plus `json.dumps` | {ex['with_json_dumps_spans_per_s']:,.0f} spans/s | |")
    otel_proto = ex.get("otel_protobuf_spans_per_s")
    lines.append(
        f"| OTLP JSON bytes written straight from the spans, as `GET /traces` sends them "
        f"(OTel: its SDK's protobuf encoder on the same spans) | {ex['direct_json_spans_per_s']:,.0f} spans/s "
        f"| {f'{otel_proto:,.0f} spans/s' if otel_proto else ''} |"
    )

    bars: list[tuple[str, bool, str]] = []

    def bar(name: str, ok: bool, detail: str) -> None:
        bars.append((name, ok, detail))

    r = med["traced_sampled"] / wrapt_ns
    bar("@traced sampled ≤ 2.5x wrapt pass-through", r <= 2.5, f"{r:.2f}x")
    r = med["traced_tail"] / med["traced_sampled"]
    bar("@traced, tail sampling on at head rate 0.1 ≤ 1.3x @traced sampled", r <= 1.3, f"{r:.2f}x")
    r = med["traced_unsampled"] / wrapt_ns
    bar("@traced unsampled ≤ 1.5x wrapt pass-through", r <= 1.5, f"{r:.2f}x")
    if "otel_sampled" in med:
        r = med["otel_sampled"] / med["traced_sampled"]
        bar("@traced sampled ≤ 1/10 of OTel sampled decorator", r >= 10, f"1/{r:.1f}")
        r = med["otel_with_sampled"] / med["span_sampled"]
        bar("with span() sampled ≤ 1/12 of OTel start_as_current_span block", r >= 12, f"1/{r:.1f}")
    r = med["async_sampled"] / wrapt_ns
    bar("async @traced sampled ≤ 2x wrapt pass-through", r <= 2, f"{r:.2f}x")
    if "otel_async" in med:
        r = med["otel_async"] / med["async_sampled"]
        bar("async @traced sampled ≤ 1/10 of OTel async decorator", r >= 10, f"1/{r:.1f}")
        r = med["gen_sampled"] / med["otel_gen"]
        bar(
            "traced generator sampled ≤ OTel generator in start_as_current_span, per item",
            r <= 1,
            f"{r:.2f}x ({fmt_ns(med['gen_sampled'])} vs {fmt_ns(med['otel_gen'])})",
        )
        r = med["agen_sampled"] / med["otel_agen"]
        bar(
            "traced async generator sampled ≤ OTel async generator in start_as_current_span, per item",
            r <= 1,
            f"{r:.2f}x ({fmt_ns(med['agen_sampled'])} vs {fmt_ns(med['otel_agen'])})",
        )
    # Traces of one span are judged too: most requests of a simple service make one, and
    # that span carries its trace's whole bookkeeping (the store's list, the trace id) alone.
    for key, what in (("traced_traces", "@traced, 3 attributes"), ("traces", "span() + 3 set_attribute")):
        for spans, limit in ((10, 300), (1, 400)):
            b = mem[f"{key}_of_{spans}"]["median"]
            bar(
                f"≤ {limit} bytes retained per stored span ({what}), traces of {spans} span{'s' if spans > 1 else ''}",
                b <= limit,
                f"{b:.0f} B",
            )
    s = ex["export_traces_spans_per_s"]
    bar("≥ 150,000 spans/s OTLP JSON export (export_traces(), dict)", s >= 150_000, f"{s:,.0f} spans/s")
    r = ex["direct_over_dumps"]
    bar(
        "≥ 3x the spans/s of json.dumps(export_traces()) for GET /traces bytes",
        r["median"] >= 3,
        f"{r['median']:.2f}x (range {r['min']:.2f}–{r['max']:.2f}x): {ex['direct_json_spans_per_s']:,.0f} "
        f"vs {ex['with_json_dumps_spans_per_s']:,.0f} spans/s",
    )
    ratio = at_thr["ratio"]
    detail = f"{ratio['median']:.0%} (IQR {ratio['q1']:.0%}–{ratio['q3']:.0%}, {at_thr['pairs']} pairs)"
    if ot_thr:
        detail += f"; OpenTelemetry {ot_thr['ratio']['median']:.0%}"
    bar("2-thread throughput ≥ 85% of 1-thread", ratio["median"] >= 0.85, detail)
    return "\n".join(lines), bars


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "wrapt": getattr(wrapt, "__version__", "?"),
        "opentelemetry_sdk": _otel_version(),
    }


def _otel_version() -> str | None:
    if not HAVE_OTEL:
        return None
    from opentelemetry.sdk.version import __version__

    return str(__version__)


DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")

# mode: (rounds, seconds per visit, thread pairs, seconds per thread run, memory runs, memory scale, export rounds)
MODES: dict[str, tuple[int, float, int, float, int, float, int]] = {
    "full": (25, 0.04, 15, 0.2, 3, 1.0, 9),
    "quick": (5, 0.01, 7, 0.1, 1, 1.0, 3),
    # every case, as briefly as still gives numbers (and a spread): for CI, never judged
    "smoke": (2, 0.001, 2, 0.005, 2, 0.05, 2),
}
# mode: (rounds, seconds per run) of the server section (benchmarks/server_load.py)
SERVER_MODES: dict[str, tuple[int, float]] = {"full": (5, 2.0), "quick": (2, 1.0), "smoke": (1, 0.2)}


def server_section(mode: str) -> dict[str, Any]:
    """The /traces server under 1, 4 and 16 concurrent clients (benchmarks/server_load.py)."""
    import server_load

    rounds, seconds = SERVER_MODES[mode]
    runs = len(server_load.ROUTES) * len(server_load.CLIENTS) * rounds
    print(f"server under load: {runs} runs of {seconds} s ...", file=sys.stderr, flush=True)
    return server_load.measure(rounds, seconds)


def server_report(server: dict[str, Any]) -> tuple[str, list[tuple[str, bool, str]]]:
    """The server section's table and bars."""
    import server_load

    lines, bars = server_load.report(server)
    return "\n".join(lines), bars


def main(argv: list[str] | None = None) -> int:
    """Measure every case, print the tables and bars, write the JSON; 1 when a bar fails."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter visits")
    parser.add_argument(
        "--smoke", action="store_true", help="every case with minimal rounds (seconds); bars printed, not judged"
    )
    parser.add_argument("--rounds", type=int, help="rounds per case (default 25, quick 5, smoke 2)")
    parser.add_argument(
        "--json", metavar="PATH", default=DEFAULT_JSON, help="where to write the results as JSON (default %(default)s)"
    )
    parser.add_argument("--no-otel", action="store_true", help="skip OpenTelemetry even when installed")
    parser.add_argument("--seed", type=int, default=1, help="seed of the visiting order")
    parser.add_argument("--wall", action="store_true", help="time single-thread cases in wall time, not CPU time")
    parser.add_argument("--server", action="store_true", help="add the /traces server under concurrent clients")
    parser.add_argument("--server-only", action="store_true", help="measure only the server section")
    args = parser.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    rounds, target, pairs, thread_target, mem_runs, mem_scale, export_rounds = MODES[mode]
    rounds = args.rounds or rounds
    with_otel = HAVE_OTEL and not args.no_otel
    judged = mode != "smoke"
    if args.server_only:
        return _server_only(mode, args.json, judged)

    cases = autotrace_cases()
    otel = otel_cases() if with_otel else None
    if otel:
        cases += otel.cases
    print(f"measuring {len(cases)} cases x {rounds} rounds ({mode}) ...", file=sys.stderr, flush=True)
    measure(cases, rounds, target, args.seed, progress=not args.smoke)
    print(f"2-thread throughput, {pairs} pairs ...", file=sys.stderr, flush=True)
    threads = {"autotrace": measure_threads(traced_call, pairs, thread_target, setup=lambda: configure(1.0))}
    if otel:
        threads["opentelemetry"] = measure_threads(otel.call, pairs, thread_target, teardown=otel.clear)
    print("memory and export ...", file=sys.stderr, flush=True)
    memory = memory_figures(mem_runs, mem_scale, with_otel)
    export = export_rates(export_rounds, with_otel)
    results: dict[str, Any] = {
        "machine": machine(),
        "mode": mode,
        "rounds": rounds,
        "gc": "disabled while timing, collected between visits (as timeit)",
        "clock": "wall" if args.wall else "process CPU time (thread cases: wall, CPU time beside it)",
        "cases": {c.key: c.summary() for c in cases},
        "threads": threads,
        "memory": memory,
        "export": export,
    }
    table, bars = report(results)
    if args.server:
        results["server"] = server_section(mode)
        server_table, server_bars = server_report(results["server"])
        table += "\n\n" + server_table
        bars += server_bars
    results["bars"] = [{"bar": name, "pass": ok, "measured": detail, "judged": judged} for name, ok, detail in bars]
    m = results["machine"]
    print(
        f"\n{m['nproc']} CPUs, {m['cpu']}, {m['implementation']} {m['python']}, wrapt {m['wrapt']}, "
        f"opentelemetry-sdk {m['opentelemetry_sdk']}; {mode} run, {rounds} rounds, median (IQR)\n"
    )
    print(table)
    print()
    for name, ok, detail in bars:
        verdict = ("PASS" if ok else "FAIL") if judged else "(smoke, not judged)"
        print(f"{verdict}  {name}: {detail}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if not judged or all(ok for _, ok, _ in bars) else 1


def _server_only(mode: str, path: str, judged: bool) -> int:
    """--server-only: the server section alone, printed and written as JSON; 1 when a bar fails."""
    results: dict[str, Any] = {"machine": machine(), "mode": mode, "server": server_section(mode)}
    table, bars = server_report(results["server"])
    results["bars"] = [{"bar": name, "pass": ok, "measured": detail, "judged": judged} for name, ok, detail in bars]
    m = results["machine"]
    print(f"\n{m['nproc']} CPUs, {m['cpu']}, {m['implementation']} {m['python']}; {mode} run, median of rounds\n")
    print(table)
    print()
    for name, ok, detail in bars:
        verdict = ("PASS" if ok else "FAIL") if judged else "(smoke, not judged)"
        print(f"{verdict}  {name}: {detail}")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0 if not judged or all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
