"""Throughput of a trivial FastAPI route under uvicorn: bare, with autotrace's ASGI middleware, with OpenTelemetry's.

    python benchmarks/asgi.py            # 20 rounds of pairs of 0.5 s visits (~1 min); judges the bar
    python benchmarks/asgi.py --quick    # 6 rounds of 0.3 s visits
    python benchmarks/asgi.py --smoke    # 1 short round: figures printed, bar not judged (for CI)
    python benchmarks/asgi.py --http httptools   # uvicorn's C parser (uvicorn[standard]) instead of its default

Each server runs in its own process (uvicorn, one worker); one client, in this
process, drives them in turn with the same keep-alive connections: a minimal
asyncio HTTP/1.1 client, much cheaper per request than the server, so the
server is what is measured. Each round visits every server once beside a visit
to the bare app (a pair: bare then the server, or the server then bare,
alternating from round to round; the servers' order rotates): a pair gives the
server's requests/s, and requests per CPU-second of the server process (Linux),
and their ratios to the bare app's in the same pair; the medians over the
rounds are reported. Short visits in pairs keep both halves of a ratio under
the same load on a shared machine. The bar: with the middleware, every request sampled
(sample_rate=1), throughput is at least 90% of the bare app's, judged per
server CPU-second where available (wall-clock throughput on a shared machine
moves with whatever else runs; the CPU a request costs the server does not).
``--diagnose`` adds a second bare server (the noise floor), a pass-through
middleware and a bare ``span()``. Exits 1 when the bar fails (never with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

CONNECTIONS = 8
BAR = 0.90  # throughput with the middleware (sampled) / without, at least
# (key, label); the server process builds the app for its key (serve()).
SERVERS = [
    ("bare", "FastAPI, no middleware"),
    ("autotrace", "autotrace TracingMiddleware, sample_rate=1"),
    ("autotrace_default", "autotrace TracingMiddleware, sample_rate=0.1"),
    ("otel", "OpenTelemetryMiddleware (SDK, always on)"),
]


# -- the server side (a child process per variant) ------------------------------------------


def build_app(key: str) -> Any:
    """The trivial FastAPI app for one variant, wrapped as that variant says."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    api = FastAPI()

    @api.get("/")
    async def root() -> PlainTextResponse:
        return PlainTextResponse("ok")

    if key == "bare":
        return api
    if key == "bare_again":  # the same app in another process: how much two identical servers differ
        return api
    if key == "passthrough":  # an ASGI middleware that only calls the app

        async def passthrough(scope: Any, receive: Any, send: Any) -> None:
            await api(scope, receive, send)

        return passthrough
    if key == "span_only":  # one autotrace span() around the app, nothing else
        import autotrace

        autotrace.configure(sample_rate=1.0)

        async def span_only(scope: Any, receive: Any, send: Any) -> None:
            with autotrace.span("request"):
                await api(scope, receive, send)

        return span_only
    if key.startswith("autotrace"):
        import autotrace
        from autotrace.asgi import TracingMiddleware

        autotrace.configure(sample_rate=1.0 if key == "autotrace" else 0.1)
        return TracingMiddleware(api)
    if key == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):  # type: ignore[misc]
            """Finished spans go nowhere: the cost measured is the middleware's and the SDK's."""

            def export(self, spans: Any) -> Any:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Discard()))
        return OpenTelemetryMiddleware(api, tracer_provider=provider)
    raise ValueError(f"unknown server {key!r}")


def serve(key: str) -> None:
    """Serve one variant on a free loopback port; print the port, then serve until killed."""
    import uvicorn

    app = build_app(key)
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only then (else ~40 ms per response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # uvicorn's HTTP parser: "auto" (its default) takes httptools when installed (uvicorn[standard]), else h11.
    http = os.environ.get("BENCH_ASGI_HTTP", "auto")
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off", http=http)
    server = uvicorn.Server(config)
    config.load()
    print(sock.getsockname()[1], config.http_protocol_class.__name__, flush=True)
    server.run(sockets=[sock])


# -- the client side ---------------------------------------------------------------------------

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"


async def _connection(port: int, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.perf_counter() < stop:
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            done += 1
    finally:
        counts.append(done)
        writer.close()


async def _drive(port: int, seconds: float) -> tuple[int, float]:
    stop = time.perf_counter() + seconds
    counts: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, stop, counts) for _ in range(CONNECTIONS)))
    return sum(counts), time.perf_counter() - start


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (Linux: /proc schedstat, ns resolution), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def drive(port: int, seconds: float, pid: int | None = None) -> tuple[float, float | None]:
    """(requests per wall second, requests per server CPU second) over ``seconds`` of CONNECTIONS connections."""
    before = cpu_seconds(pid) if pid else None
    done, wall = asyncio.run(_drive(port, seconds))
    after = cpu_seconds(pid) if pid else None
    per_cpu = done / (after - before) if before is not None and after is not None and after > before else None
    return done / wall, per_cpu


# -- the run -------------------------------------------------------------------------------------


# --diagnose adds these rows: where the middleware's cost comes from.
DIAGNOSE = [
    ("bare_again", "FastAPI, no middleware, another process (noise floor)"),
    ("passthrough", "a pass-through ASGI middleware"),
    ("span_only", "autotrace span() around the app, nothing else"),
]


def available() -> list[tuple[str, str]]:
    """The variants whose packages are installed (OpenTelemetry's is the bench extra)."""
    import importlib.util

    have_otel = importlib.util.find_spec("opentelemetry.instrumentation.asgi") is not None
    return [(k, label) for k, label in SERVERS if k != "otel" or have_otel]


def start_servers(keys: list[str]) -> tuple[dict[str, subprocess.Popen[str]], dict[str, int], str]:
    procs: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    protocol = ""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)), *sys.path])}
    for key in keys:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", key], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        first = proc.stdout.readline().split()  # "<port> <protocol class>"
        procs[key] = proc
        if len(first) != 2:
            raise RuntimeError(f"the {key} server did not start")
        ports[key] = int(first[0])
        protocol = first[1]
    return procs, ports, protocol


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles and range."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1]}


def run(rounds: int, seconds: float, warmup: float, diagnose: bool = False) -> dict[str, Any]:
    """Rounds of pairs: each server beside a visit to the bare app just before or after it; the ratio per pair.

    A server's ratio to bare is taken within its pair (two visits of ``seconds``
    back to back, their order alternating from round to round), not across a
    round of every server: what else runs on a shared machine moves both halves
    of a pair alike, where it moved the visits of a long round apart.
    """
    variants = available() + (DIAGNOSE if diagnose else [])
    keys = [k for k, _ in variants]
    others = [k for k in keys if k != "bare"]
    procs, ports, protocol = start_servers(keys)
    try:
        for key in keys:
            drive(ports[key], warmup)
        rates: dict[str, list[float]] = {k: [] for k in keys}
        ratios: dict[str, list[float]] = {k: [] for k in keys}
        cpu_rates: dict[str, list[float]] = {k: [] for k in keys}
        cpu_ratios: dict[str, list[float]] = {k: [] for k in keys}
        for r in range(rounds):
            for key in others[r % len(others) :] + others[: r % len(others)]:
                pair = ["bare", key] if r % 2 == 0 else [key, "bare"]
                this = {k: drive(ports[k], seconds, procs[k].pid) for k in pair}
                for k in pair:
                    wall, cpu = this[k]
                    rates[k].append(wall)
                    ratios[k].append(wall / this["bare"][0])
                    bare_cpu = this["bare"][1]
                    if cpu is not None and bare_cpu is not None:
                        cpu_rates[k].append(cpu)
                        cpu_ratios[k].append(cpu / bare_cpu)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(10)
    have_cpu = all(cpu_ratios.values())
    return {
        "servers": {
            key: {
                "label": label,
                "requests_per_s": spread(rates[key]),
                "ratio_to_bare": spread(ratios[key]),
                "requests_per_cpu_s": spread(cpu_rates[key]) if have_cpu else None,
                "cpu_ratio_to_bare": spread(cpu_ratios[key]) if have_cpu else None,
            }
            for key, label in variants
        },
        "rounds": rounds,
        "seconds_per_visit": seconds,
        "connections": CONNECTIONS,
        "http_protocol": protocol,
    }


def report(results: dict[str, Any], judged: bool) -> tuple[str, bool]:
    """The table and the bar line; whether the bar holds.

    The bar is judged on requests per CPU-second of the server process when the
    system reports it (Linux): on a shared machine wall-clock throughput moves
    with everything else that runs, while the CPU each request costs the server
    does not; that is the throughput the server reaches on a core of its own.
    Wall-clock figures are printed beside it.
    """
    servers = results["servers"]
    have_cpu = servers["bare"]["cpu_ratio_to_bare"] is not None
    lines = [
        f"Trivial FastAPI route on uvicorn ({results['http_protocol']}), one worker, {results['connections']} "
        f"keep-alive connections, {results['rounds']} rounds of pairs (bare beside each server) of {results['seconds_per_visit']} s visits",
        "",
        "| server | requests/s (wall, median) | vs bare (wall: median, range) "
        "| requests per server CPU-s (median) | vs bare (CPU: median, range) |",
        "|---|---|---|---|---|",
    ]
    for server in servers.values():
        rate, ratio = server["requests_per_s"], server["ratio_to_bare"]
        cpu, cpu_ratio = server["requests_per_cpu_s"], server["cpu_ratio_to_bare"]
        cpu_cells = (
            f"{cpu['median']:.0f} | {cpu_ratio['median']:.3f} ({cpu_ratio['min']:.3f}..{cpu_ratio['max']:.3f})"
            if cpu is not None
            else "n/a | n/a"
        )
        lines.append(
            f"| {server['label']} | {rate['median']:.0f} | {ratio['median']:.3f} ({ratio['min']:.3f}..{ratio['max']:.3f}) "
            f"| {cpu_cells} |"
        )
    basis = "cpu_ratio_to_bare" if have_cpu else "ratio_to_bare"
    ratio = servers["autotrace"][basis]["median"]
    ok = ratio >= BAR
    verdict = ("PASS" if ok else "FAIL") if judged else "(smoke, not judged)"
    lines += [
        "",
        f"bar: autotrace middleware, sampled, keeps >= {BAR:.0%} of bare throughput "
        f"({'per server CPU-second' if have_cpu else 'wall clock'}): {ratio:.3f} {verdict}",
    ]
    return "\n".join(lines), ok or not judged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds of 0.3 s visits")
    parser.add_argument("--smoke", action="store_true", help="1 short round; the bar is printed, not judged")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--diagnose", action="store_true", help="also measure a noise floor and the cost of parts")
    parser.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="uvicorn's HTTP parser (default auto, as uvicorn: httptools when installed, else h11)",
    )
    parser.add_argument("--serve", metavar="SERVER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["BENCH_ASGI_HTTP"] = args.http  # read by the server processes (serve())
    if args.serve:
        serve(args.serve)
        return 0
    if args.smoke:
        results = run(rounds=1, seconds=0.2, warmup=0.1, diagnose=args.diagnose)
    elif args.quick:
        results = run(rounds=6, seconds=0.3, warmup=0.5, diagnose=args.diagnose)
    else:
        results = run(rounds=20, seconds=0.5, warmup=1.0, diagnose=args.diagnose)
    results["mode"] = "smoke" if args.smoke else "quick" if args.quick else "full"
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    text, ok = report(results, judged=not args.smoke)
    results["bar"] = {"min_ratio": BAR, "judged": not args.smoke, "ok": ok}
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
