"""Two real processes on loopback: a client process calls a server process, and the trace crosses."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_check import validate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def server_url() -> Iterator[str]:
    """Start the server process and yield its base URL once it has printed its port."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_server_proc.py")],
        env=_env(),
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True).start()
    try:
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the server process did not report its port within 60 s")
        if not first:
            pytest.fail(f"the server process exited: {proc.stderr.read() if proc.stderr else ''}")
        yield f"http://127.0.0.1:{json.loads(first)['port']}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _server_spans(url: str, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The server's spans from its /spans endpoint, once ``want`` have ended there."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/spans", timeout=30) as resp:
            doc = json.load(resp)
        spans = [s for rs in doc.get("resourceSpans", []) for ss in rs["scopeSpans"] for s in ss["spans"]]
        if len(spans) >= want or time.monotonic() > deadline:
            validate(doc)
            return spans
        time.sleep(0.05)


def test_trace_crosses_two_processes(server_url: str) -> None:
    """The server's spans share the client's trace id and name the client span as parent."""
    result = subprocess.run(
        [sys.executable, str(HERE / "_client_proc.py"), f"{server_url}/generate/tiny-llm"],
        env=_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    client = json.loads(result.stdout.strip().splitlines()[-1])
    assert client["status"] == 200
    by_name = {s["name"]: s for s in client["spans"]}
    outgoing = by_name["GET"]  # the CLIENT span made by traced_urlopen
    assert outgoing["kind"] == 3 and outgoing["parent"] == by_name["client_request"]["span_id"]

    spans = _server_spans(server_url, want=2)
    server = next(s for s in spans if s["kind"] == 2)
    assert server["name"] == "GET /generate/<model>"
    assert server["traceId"] == outgoing["trace_id"]
    assert server["parentSpanId"] == outgoing["span_id"]
    tokenize = next(s for s in spans if s["name"] == "tokenize")
    assert tokenize["traceId"] == outgoing["trace_id"] and tokenize["parentSpanId"] == server["spanId"]
    attrs = {a["key"]: a["value"] for a in server["attributes"]}
    assert attrs["http.route"] == {"stringValue": "/generate/<model>"}
    assert attrs["http.response.status_code"] == {"intValue": "200"}
    assert client["response_traceparent"] == f"00-{server['traceId']}-{server['spanId']}-03"


def test_untraced_client_starts_no_server_trace(server_url: str) -> None:
    """The server samples nothing of its own (rate 0): without a caller's sampled flag nothing is recorded."""
    with urllib.request.urlopen(f"{server_url}/generate/x", timeout=30) as resp:
        returned = resp.headers["traceparent"]
    assert returned.endswith("-02")  # not sampled; random id
    time.sleep(0.2)
    assert _server_spans(server_url, want=0, timeout=0) == []
