"""Helpers for the server and CLI tests: a plain HTTP client and the official OTLP schema check."""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import autotrace

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


def _check_keys(obj: Any, where: str = "$") -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            # Attribute keys are data (key/value pairs), never JSON object keys, so every key here is a field.
            assert _CAMEL.fullmatch(key), f"{where}: key {key!r} is not lowerCamelCase"
            _check_keys(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _check_keys(item, f"{where}[{i}]")


def _b64(hex_id: str, size: int) -> str:
    raw = bytes.fromhex(hex_id)
    assert len(raw) == size, f"id {hex_id!r} is {len(raw)} bytes, expected {size}"
    assert raw != bytes(size), f"id {hex_id!r} is all zeros"
    return base64.b64encode(raw).decode()


def validate_otlp(doc: dict[str, Any]) -> Any:
    """Parse ``doc`` with the official ExportTraceServiceRequest schema (ids converted to base64)."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    _check_keys(doc)
    converted = json.loads(json.dumps(doc))
    for rs in converted.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                s["traceId"] = _b64(s["traceId"], 16)
                s["spanId"] = _b64(s["spanId"], 8)
                if s.get("parentSpanId"):
                    s["parentSpanId"] = _b64(s["parentSpanId"], 8)
                for link in s.get("links", []):
                    link["traceId"] = _b64(link["traceId"], 16)
                    link["spanId"] = _b64(link["spanId"], 8)
    return ParseDict(converted, ExportTraceServiceRequest())
