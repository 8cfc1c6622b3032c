"""Call latency of a traced function while the exporter's collector misbehaves.

    PYTHONPATH=. python3 benchmarks/export_faults.py [--calls 20000]

Each mode runs the same @traced function (one child span, sample_rate=1.0) and
times every call. "no exporter" is the baseline; the other rows send to a
loopback collector that answers 200, refuses connections, answers 503 forever,
or never answers. The instrumented code only appends to a queue, so every row
should match the baseline: the network is the worker thread's problem. A
tight loop ends spans far faster than one thread can ship them, so the default
2048-span queue fills and drops (counted). A second table gives the spans per
second one worker ships. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import autotrace
from autotrace.export import BatchSpanProcessor, OTLPHttpExporter


class Collector:
    """A loopback OTLP/HTTP endpoint that answers ``status``, or hangs when status is None."""

    def __init__(self, status: int | None) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if status is None:
                    release.wait(120)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"


@autotrace.traced("generate")
def generate(n: int) -> int:
    with autotrace.span("decode"):
        return n + 1


def measure(calls: int, rounds: int = 5) -> tuple[float, float, float]:
    """Per-call p50 and p99 (median over rounds) and the best round's mean, in microseconds.

    Rounds and medians keep other processes on a shared machine from deciding the figure.
    """
    for i in range(2000):  # warm up
        generate(i)
    clock = time.perf_counter_ns
    p50s, p99s, means = [], [], []
    for _ in range(rounds):
        timings = []
        for i in range(calls // rounds):
            start = clock()
            generate(i)
            timings.append(clock() - start)
        timings.sort()
        p50s.append(timings[len(timings) // 2] / 1000)
        p99s.append(timings[int(len(timings) * 0.99)] / 1000)
        means.append(statistics.fmean(timings) / 1000)
    return statistics.median(p50s), statistics.median(p99s), min(means)


def run_mode(name: str, url: str | None, calls: int) -> dict[str, Any]:
    if url is None:
        autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
        p50, p99, mean = measure(calls)
        autotrace.clear_traces()
        return {"mode": name, "p50": p50, "p99": p99, "mean": mean, "stats": {}}
    exporter = OTLPHttpExporter(url, timeout=5.0, backoff_base=0.2)
    proc = BatchSpanProcessor(exporter, schedule_delay=0.1)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
    p50, p99, mean = measure(calls)
    stats = proc.stats()
    started = time.monotonic()
    autotrace.shutdown(1.0)
    stats["shutdown_s"] = round(time.monotonic() - started, 2)
    autotrace.clear_traces()
    return {"mode": name, "p50": p50, "p99": p99, "mean": mean, "stats": stats}


def throughput(spans: int) -> list[tuple[str, float]]:
    """Spans per second one exporter thread ships to a healthy loopback collector."""
    out = []
    collector = Collector(200)
    try:
        for encoding, compression in (("json", "none"), ("json", "gzip"), ("protobuf", "none"), ("protobuf", "gzip")):
            exporter = OTLPHttpExporter(collector.url, encoding=encoding, compression=compression)
            proc = BatchSpanProcessor(exporter, max_queue_size=spans * 2, schedule_delay=60.0)
            autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
            for i in range(spans // 2):
                generate(i)
            started = time.perf_counter()
            autotrace.flush(120)
            elapsed = time.perf_counter() - started
            assert proc.stats()["exported"] == spans, proc.stats()
            autotrace.shutdown(5)
            autotrace.clear_traces()
            out.append((f"{encoding}, compression={compression}", spans / elapsed))
    finally:
        collector.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--spans", type=int, default=20_000, help="spans for the throughput table")
    args = parser.parse_args()
    rows = [run_mode("no exporter", None, args.calls)]
    for name, status in (("collector 200", 200), ("collector 503 always", 503), ("collector hangs", None)):
        collector = Collector(status)
        try:
            rows.append(run_mode(name, collector.url, args.calls))
        finally:
            collector.stop()
    rows.append(run_mode("connection refused", refused_url(), args.calls))
    print(f"Per-call latency of @traced + one child span, {args.calls} calls per mode, sample_rate=1.0 (µs)\n")
    print("| mode | p50 | p99 | best mean | exported | dropped | retried | shutdown(1.0) s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stats"]
        print(
            f"| {r['mode']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['mean']:.2f} | "
            f"{s.get('exported', '-')} | {s.get('dropped', '-')} | "
            f"{s.get('retried', '-')} | {s.get('shutdown_s', '-')} |"
        )
    print(f"\nExport throughput of one worker thread to a loopback collector ({args.spans} spans)\n")
    print("| encoding | spans/s |")
    print("|---|---:|")
    for label, rate in throughput(args.spans):
        print(f"| {label} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
