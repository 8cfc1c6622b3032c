"""Measure what autotrace costs the code it wraps, beside wrapt and OpenTelemetry.

Run from the repository root::

    python benchmarks/run.py               # full run (~40 s)
    python benchmarks/run.py --quick       # smoke run (~10 s): same cases, fewer and shorter rounds
    python benchmarks/run.py --json out.json   # also write every figure as JSON

It prints a Markdown table and one PASS/FAIL line per bar of issue 6, and exits
with status 1 when a bar fails.

Every case runs in this one process. Each round visits every case once, in a
shuffled order (so load from other processes hits all cases alike), and each
visit times a calibrated number of loops with the garbage collector disabled
(as ``timeit`` does, for every case alike; the collector is run between
visits). Single-thread cases are timed in CPU time of this process
(``time.process_time``), which does not count time spent waiting for a core
that another process holds; the thread cases, where waiting is the point, in
wall time (``--wall`` uses wall time everywhere). A case's figure is the
median over rounds, with its inter-quartile range. The bars are ratios between
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


def configure(sample_rate: float, max_traces: int = 1000) -> None:
    """Install a fresh autotrace configuration with an empty store."""
    autotrace.clear_traces()
    autotrace.configure(autotrace.TraceConfig(sample_rate=sample_rate, max_traces=max_traces))
    autotrace.clear_traces()


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
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
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


def threads_timer(fn: Callable[[], Any], nthreads: int) -> Callable[[int], float]:
    """Wall time for ``loops`` calls of ``fn`` split evenly over ``nthreads`` threads."""

    def run(loops: int) -> float:
        share = loops // nthreads
        barrier = threading.Barrier(nthreads + 1)

        def work() -> None:
            barrier.wait()
            for _ in range(share):
                fn()

        threads = [threading.Thread(target=work) for _ in range(nthreads)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    return gc_off(run)


# -- building the cases ------------------------------------------------------------------


def autotrace_cases() -> list[Case]:
    sampled = lambda: configure(1.0)  # noqa: E731
    unsampled = lambda: configure(0.0)  # noqa: E731
    ns = {"bare": bare, "wrapt_passthrough": wrapt_passthrough, "traced_call": traced_call, "span": span}
    ns.update(traced_root=traced_root, bare_root=bare_root, traced_gen=traced_gen, bare_gen=bare_gen)
    return [
        Case("bare", "bare call", timer("bare()", ns)),
        Case("wrapt", "wrapt pass-through", timer("wrapt_passthrough()", ns)),
        Case("traced_sampled", "@traced, sampled", timer("traced_call()", ns), setup=sampled),
        Case("traced_unsampled", "@traced, unsampled", timer("traced_call()", ns), setup=unsampled),
        Case("span_sampled", "with span(), sampled", timer("with span('op'): pass", ns), setup=sampled),
        Case("span_unsampled", "with span(), unsampled", timer("with span('op'): pass", ns), setup=unsampled),
        Case("bare_root", "bare root + 10 child calls", timer("bare_root()", ns), per="trace"),
        Case("root10", "root + 10 children, sampled", timer("traced_root()", ns), per="trace", setup=sampled),
        Case("bare_async", "bare async call", async_timer(bare_async)),
        Case("async_sampled", "async @traced, sampled", async_timer(traced_async), setup=sampled),
        Case("bare_gen", "bare generator", timer("for _ in bare_gen(): pass", ns), per="item", units=GEN_ITEMS),
        Case(
            "gen_sampled",
            "traced generator, sampled",
            timer("for _ in traced_gen(): pass", ns),
            per="item",
            units=GEN_ITEMS,
            setup=sampled,
        ),
        Case("threads1", "@traced sampled, 1 thread", threads_timer(traced_call, 1), setup=sampled),
        Case("threads2", "@traced sampled, 2 threads", threads_timer(traced_call, 2), setup=sampled),
    ]


def otel_cases() -> list[Case]:
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

    ns = {"otel_call": otel_call, "otel_call_off": otel_call_off, "tracer": tracer, "tracer_off": tracer_off}
    ns["otel_root"] = otel_root
    clear = exporter.clear  # the in-memory exporter keeps every span: empty it after each visit
    return [
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
        Case("otel_threads1", "OTel decorator, 1 thread", threads_timer(otel_call, 1), teardown=clear),
        Case("otel_threads2", "OTel decorator, 2 threads", threads_timer(otel_call, 2), teardown=clear),
    ]


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


def export_rates(rounds: int) -> dict[str, Any]:
    """Spans/s of export_traces() over 10,000 stored spans, without and with json.dumps."""
    configure(1.0, max_traces=EXPORT_SPANS // 10)
    _record_traces(EXPORT_SPANS // 10, 10)
    plain: list[float] = []
    dumped: list[float] = []
    for _ in range(rounds):
        gc.collect()
        t0 = CLOCK()
        doc = autotrace.export_traces()
        t1 = CLOCK()
        json.dumps(doc)
        t2 = CLOCK()
        n = len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"])
        assert n == EXPORT_SPANS, n
        del doc
        plain.append(n / (t1 - t0))
        dumped.append(n / (t2 - t0))
    configure(1.0)
    return {
        "spans": EXPORT_SPANS,
        "export_traces_spans_per_s": statistics.median(plain),
        "export_traces_spans_per_s_min": min(plain),
        "export_traces_spans_per_s_max": max(plain),
        "with_json_dumps_spans_per_s": statistics.median(dumped),
        "with_json_dumps_spans_per_s_min": min(dumped),
        "with_json_dumps_spans_per_s_max": max(dumped),
    }


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
    ("bare_root", None),
    ("root10", "otel_root10"),
    ("bare_async", None),
    ("async_sampled", "otel_async"),
    ("bare_gen", None),
    ("gen_sampled", None),
    ("threads1", "otel_threads1"),
    ("threads2", "otel_threads2"),
]


def report(results: dict[str, Any]) -> tuple[str, list[tuple[str, bool, str]]]:
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
    t1, t2 = med["threads1"], med["threads2"]
    lines.append("")
    lines.append("| other | autotrace | OpenTelemetry |")
    lines.append("|---|---|---|")
    otel_thr = ""
    if "otel_threads1" in med:
        otel_thr = f"{med['otel_threads1'] / med['otel_threads2']:.0%}"
    lines.append(f"| 2-thread throughput / 1-thread (same total work) | {t1 / t2:.0%} | {otel_thr} |")
    otel_mem = f"{mem['otel_single_span']:.0f} B" if "otel_single_span" in mem else ""
    lines.append(
        f"| bytes retained per stored span: @traced, its 3 `code.*` attributes (shared dict), traces of 10 | "
        f"{mem['traced_traces_of_10']:.0f} B | |"
    )
    lines.append(
        f"| bytes retained per stored span: `span()` + 3 `set_attribute` (own dict), traces of 10 | "
        f"{mem['traces_of_10']:.0f} B | |"
    )
    lines.append(f"| the same, one-span traces | {mem['traces_of_1']:.0f} B | {otel_mem} |")
    lines.append(
        f"| OTLP JSON export, `export_traces()` on {ex['spans']:,} spans (dict only) | "
        f"{ex['export_traces_spans_per_s']:,.0f} spans/s | |"
    )
    lines.append(f"| the same plus `json.dumps` | {ex['with_json_dumps_spans_per_s']:,.0f} spans/s | |")

    bars: list[tuple[str, bool, str]] = []

    def bar(name: str, ok: bool, detail: str) -> None:
        bars.append((name, ok, detail))

    r = med["traced_sampled"] / wrapt_ns
    bar("@traced sampled ≤ 2.5x wrapt pass-through", r <= 2.5, f"{r:.2f}x")
    r = med["traced_unsampled"] / wrapt_ns
    bar("@traced unsampled ≤ 1.5x wrapt pass-through", r <= 1.5, f"{r:.2f}x")
    if "otel_sampled" in med:
        r = med["otel_sampled"] / med["traced_sampled"]
        bar("@traced sampled ≤ 1/10 of OTel sampled decorator", r >= 10, f"1/{r:.1f}")
        r = med["otel_with_sampled"] / med["span_sampled"]
        bar("with span() sampled ≤ 1/12 of OTel start_as_current_span block", r >= 12, f"1/{r:.1f}")
    b = mem["traced_traces_of_10"]
    bar("≤ 400 bytes retained per stored span (@traced, 3 attributes)", b <= 400, f"{b:.0f} B")
    b = mem["traces_of_10"]
    bar("≤ 400 bytes retained per stored span (span() + 3 set_attribute)", b <= 400, f"{b:.0f} B")
    s = ex["export_traces_spans_per_s"]
    bar("≥ 150,000 spans/s OTLP JSON export (export_traces(), dict)", s >= 150_000, f"{s:,.0f} spans/s")
    r = t1 / t2
    bar("2-thread throughput ≥ 85% of 1-thread", r >= 0.85, f"{r:.0%}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter visits (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 25, quick 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--no-otel", action="store_true", help="skip OpenTelemetry even when installed")
    parser.add_argument("--seed", type=int, default=1, help="seed of the visiting order")
    parser.add_argument("--wall", action="store_true", help="time single-thread cases in wall time, not CPU time")
    args = parser.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    rounds = args.rounds or (5 if args.quick else 25)
    target = 0.01 if args.quick else 0.04

    cases = autotrace_cases()
    if HAVE_OTEL and not args.no_otel:
        cases += otel_cases()
    print(f"measuring {len(cases)} cases x {rounds} rounds ...", file=sys.stderr, flush=True)
    measure(cases, rounds, target, args.seed, progress=True)
    memory = {
        "traced_traces_of_10": retained_bytes(1000, 10, _record_traced),
        "traces_of_10": retained_bytes(1000, 10),
        "traces_of_1": retained_bytes(10_000, 1),
    }
    if HAVE_OTEL and not args.no_otel:
        memory["otel_single_span"] = otel_retained_bytes(10_000)
    export = export_rates(3 if args.quick else 9)
    results: dict[str, Any] = {
        "machine": machine(),
        "rounds": rounds,
        "gc": "disabled while timing, collected between visits (as timeit)",
        "clock": "wall" if args.wall else "process CPU time (thread cases: wall)",
        "cases": {c.key: c.summary() for c in cases},
        "memory": memory,
        "export": export,
    }
    table, bars = report(results)
    results["bars"] = [{"bar": name, "pass": ok, "measured": detail} for name, ok, detail in bars]
    m = results["machine"]
    print(
        f"\n{m['nproc']} CPUs, {m['cpu']}, {m['implementation']} {m['python']}, wrapt {m['wrapt']}, "
        f"opentelemetry-sdk {m['opentelemetry_sdk']}; {rounds} rounds, median (IQR)\n"
    )
    print(table)
    print()
    for name, ok, detail in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
