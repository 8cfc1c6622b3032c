"""The /traces server under concurrent clients: requests/s, p50 and p99 at 1, 4 and 16 clients.

    python benchmarks/run.py --server-only          # this section alone (~1 min)
    python benchmarks/run.py --server               # the whole benchmark, this section included
    python benchmarks/server_load.py --serve        # the server side alone (prints its port)

The server runs in a child process: ``autotrace.server.start_in_background``
(the threaded server every user gets) serving ``create_app()`` with 100
stored traces of 10 spans, plus one bare Bottle route on the same app and
server as the reference (``GET /bare``, a 16-byte JSON body). The client runs
in this process: one thread per client, each sending its requests one after
another on a new connection each (the server answers HTTP/1.0 style and
closes every connection, so there is no keep-alive to turn on or off), with
raw sockets so that the client costs little next to the server. Runs
interleave the routes and client counts (rotating the order); each figure is
the median over rounds. Latency is from connect() to the last byte read.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

CLIENTS = (1, 4, 16)
ROUTES = {"traces": "/traces?limit=10", "bare": "/bare"}
STORED_TRACES = 100
SPANS_PER_TRACE = 10


# -- the server side (a child process) ------------------------------------------------------


def serve(backlog: int | None = None) -> None:
    """Fill the store, serve /traces and /bare on a free loopback port, print the port, serve until killed."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import autotrace
    from autotrace.server import create_app, start_in_background

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=STORED_TRACES))
    for i in range(STORED_TRACES):
        with autotrace.span("request") as root:
            root.set_attribute("gen_ai.request.model", "tiny-llm")
            root.set_attribute("gen_ai.usage.input_tokens", 1000 + i)
            for j in range(SPANS_PER_TRACE - 1):
                with autotrace.span("step") as s:
                    s.set_attribute("step", j)
    app = create_app(trace_requests=False)  # the /bare route untraced: it is the server's own floor

    def bare() -> bytes:
        """The reference: the same server and Bottle app, no store, no encoding."""
        return b'{"status":"ok"}\n'

    app.route("/bare", "GET", bare)
    kwargs: dict[str, Any] = {} if backlog is None else {"backlog": backlog}
    handle = start_in_background(port=0, app=app, **kwargs)
    print(handle.port, flush=True)
    threading.Event().wait()


# -- the client side ---------------------------------------------------------------------------


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nConnection: close\r\n\r\n".encode()


def _one(port: int, request: bytes) -> bool:
    """One request on a new connection, read to the end; True for a 200."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
        while sock.recv(65536):
            pass
    return head[9:12] == b"200"


def run_clients(port: int, path: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads sending requests for ``seconds``; requests/s, latency percentiles, failures."""
    request = _request(path)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop = [0.0]

    def client(i: int) -> None:
        mine = latencies[i]
        barrier.wait()
        end = stop[0]
        clock = time.perf_counter
        while True:
            t0 = clock()
            if t0 >= end:
                return
            try:
                ok = _one(port, request)
            except OSError:
                ok = False
            if ok:
                mine.append(clock() - t0)
            else:
                failures[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    every = sorted(x for mine in latencies for x in mine)
    if not every:
        return {"requests_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "requests": 0}
    return {
        "requests": len(every),
        "failures": sum(failures),
        "requests_per_s": len(every) / wall,
        "p50_ms": 1000 * every[len(every) // 2],
        "p99_ms": 1000 * every[min(len(every) - 1, int(len(every) * 0.99))],
        "max_ms": 1000 * every[-1],
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def start_server(backlog: int | None = None) -> tuple[subprocess.Popen[str], int]:
    """The server child process and its port."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve"]
    if backlog is not None:
        cmd += ["--backlog", str(backlog)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError("the benchmark server did not start")
    return proc, int(line)


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    """Every route at every client count, ``rounds`` times in a rotating order; medians per (route, clients)."""
    proc, port = start_server()
    try:
        for path in ROUTES.values():  # warm up: imports, the first encode
            for _ in range(3):
                _one(port, _request(path))
        runs = [(route, n) for route in ROUTES for n in CLIENTS]
        samples: dict[tuple[str, int], list[dict[str, Any]]] = {run: [] for run in runs}
        for r in range(rounds):
            shift = r % len(runs)
            for route, n in runs[shift:] + runs[:shift]:
                cpu0 = cpu_seconds(proc.pid)
                figures = run_clients(port, ROUTES[route], n, seconds)
                cpu1 = cpu_seconds(proc.pid)
                if cpu0 is not None and cpu1 is not None and figures["requests"]:
                    figures["server_cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / figures["requests"]
                samples[(route, n)].append(figures)
    finally:
        proc.kill()
        proc.wait()
    out: dict[str, Any] = {"rounds": rounds, "seconds_per_run": seconds, "routes": dict(ROUTES), "runs": {}}
    for (route, n), values in samples.items():
        out["runs"][f"{route}@{n}"] = {
            "route": route,
            "clients": n,
            "requests_per_s": statistics.median(v["requests_per_s"] for v in values),
            "p50_ms": statistics.median(v["p50_ms"] for v in values),
            "p99_ms": statistics.median(v["p99_ms"] for v in values),
            "max_ms": max(v.get("max_ms", 0.0) for v in values),
            "failures": sum(v.get("failures", 0) for v in values),
            "requests": sum(v["requests"] for v in values),
        }
        cpu = [v["server_cpu_ms_per_request"] for v in values if "server_cpu_ms_per_request" in v]
        if cpu:
            out["runs"][f"{route}@{n}"]["server_cpu_ms_per_request"] = statistics.median(cpu)
    return out


def report(server: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool, str]]]:
    """The table rows and the two bars of the server section."""
    runs = server["runs"]
    lines = [
        "| server, GET on a new connection each | clients | requests/s | p50 | p99 | max | server CPU per request "
        "| failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for route, path in server["routes"].items():
        for n in CLIENTS:
            f = runs[f"{route}@{n}"]
            cpu = f"{f['server_cpu_ms_per_request']:.2f} ms" if "server_cpu_ms_per_request" in f else ""
            label = f"`{path}`" + (" (bare Bottle route, the reference)" if route == "bare" else "")
            lines.append(
                f"| {label} | {n} | {f['requests_per_s']:,.0f} | {f['p50_ms']:.2f} ms | {f['p99_ms']:.2f} ms "
                f"| {f['max_ms']:.1f} ms | {cpu} | {f['failures']} |"
            )
    t1, t4, t16 = (runs[f"traces@{n}"] for n in CLIENTS)
    ratio = t16["p99_ms"] / t16["p50_ms"]
    bars = [
        (
            "GET /traces?limit=10 at 16 clients: p99 ≤ 10x p50",
            ratio <= 10,
            f"{ratio:.1f}x ({t16['p99_ms']:.1f} / {t16['p50_ms']:.1f} ms)",
        ),
        (
            "GET /traces?limit=10: requests/s at 4 clients ≥ at 1",
            t4["requests_per_s"] >= t1["requests_per_s"],
            f"{t4['requests_per_s']:,.0f} vs {t1['requests_per_s']:,.0f} requests/s",
        ),
    ]
    return lines, bars


def main(argv: list[str] | None = None) -> int:
    """The server side (``--serve``); the client side is run from benchmarks/run.py."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run the benchmark server and print its port")
    parser.add_argument("--backlog", type=int, help="the listen backlog (default: the server's)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.backlog)
        return 0
    parser.error("use benchmarks/run.py --server-only to measure; --serve runs the server side")
    return 2


if __name__ == "__main__":
    sys.exit(main())
