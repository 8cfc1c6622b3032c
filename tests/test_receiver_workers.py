"""Many processes, one server: gunicorn workers exporting to one receiver, as the README recipe does."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotrace.server import start_in_background
from autotrace.store import TraceStore

APP = """
import autotrace
from autotrace.wsgi import TracingMiddleware


def hello(environ, start_response):
    with autotrace.span("work"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]


app = TracingMiddleware(hello)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> str:
    """One GET /; the trace id from the traceparent the middleware answers with."""
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200
            return str(resp.getheader("traceparent")).split("-")[1]
        except ConnectionError:
            time.sleep(0.1)  # gunicorn still starting
    raise AssertionError("gunicorn did not answer")


@pytest.mark.skipif(shutil.which("gunicorn", path=os.path.dirname(sys.executable)) is None, reason="needs gunicorn")
def test_gunicorn_workers_export_every_trace_exactly_once(tmp_path: Path) -> None:
    """gunicorn --workers 4, 200 requests: every request's trace reaches the one server, exactly once."""
    (tmp_path / "recipe_app.py").write_text(APP)
    store = TraceStore(max_traces=10_000)
    with start_in_background("127.0.0.1", 0, store=store) as server:
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTOTRACE_"))},
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": server.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "AUTOTRACE_SAMPLE_RATE": "1",
        }
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        proc = subprocess.Popen(
            [gunicorn, "--workers", "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "recipe_app:app"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            sent = [_get(port) for _ in range(200)]
            deadline = time.monotonic() + 60
            while store.stats()["spans"] < 400 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        traces = {t[0].trace_id: t for t in store.traces()}
        assert sorted(traces) == sorted(sent)
        for trace in traces.values():
            assert sorted(s.name for s in trace) == ["GET /", "work"]
            assert len({s.span_id for s in trace}) == 2
        pids = {s._extra.origin.resource["process.pid"] for t in traces.values() for s in t}  # type: ignore[union-attr]
        assert proc.pid not in pids and 1 <= len(pids) <= 4
