"""Helpers for the server and CLI tests: a plain HTTP client and the official OTLP schema check."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import autotrace

if TYPE_CHECKING:
    from autotrace.server import ServerHandle

_CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")


@dataclass
class Reply:
    """One HTTP answer: status, headers (lower-case names) and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def fetch(
    url: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60.0,
) -> Reply:
    """Send one request with http.client (no redirects, no retries, raw path) and read the whole answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def record_trace(name: str = "root", children: int = 2) -> tuple[str, list[str]]:
    """Record one trace with ``children`` child spans; returns (trace id, span ids)."""
    ids = []
    with autotrace.span(name) as root:
        for i in range(children):
            with autotrace.span(f"{name}.child{i}", attributes={"i": i}) as child:
                ids.append(child.span_id)
    ids.append(root.span_id)
    return root.trace_id, ids


def span_ids(doc: dict[str, Any]) -> list[str]:
    """Every span id in an OTLP/JSON document, in order."""
    return [s["spanId"] for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every span object in an OTLP/JSON document."""
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def trace_ids(doc: dict[str, Any]) -> list[str]:
    """The distinct trace ids of a document, in order of first appearance."""
    seen: dict[str, None] = {}
    for s in spans_of(doc):
        seen.setdefault(s["traceId"], None)
    return list(seen)


def settle(handle: ServerHandle, timeout: float = 30.0) -> None:
    """Wait until ``handle`` has finished every request, so their spans have ended.

    A client has its answer a moment before the server's SERVER span ends: a test
    that leaves without waiting could have a span end in the next test's store.
    """
    deadline = time.monotonic() + timeout
    while handle.connections:
        assert time.monotonic() < deadline, "the server still serves a request"
        time.sleep(0.01)
