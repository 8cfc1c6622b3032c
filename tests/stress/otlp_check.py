"""Checks that an export is valid OTLP/JSON, against the official opentelemetry-proto schema."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _b64(hex_id: str, size: int) -> str:
    raw = bytes.fromhex(hex_id)
    assert len(raw) == size, f"id {hex_id!r} is {len(raw)} bytes, expected {size}"
    assert any(raw), f"id {hex_id!r} is all zeros"
    return base64.b64encode(raw).decode("ascii")


def _check_keys(node: Any, path: str = "$") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            assert isinstance(key, str) and _CAMEL.match(key), f"key {key!r} at {path} is not lowerCamelCase"
            _check_keys(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_keys(item, f"{path}[{i}]")


def assert_valid_otlp(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """Assert ``doc`` is an OTLP/JSON ExportTraceServiceRequest; return the parsed protobuf."""
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no NaN/Infinity literals
    text.encode("utf-8")  # no lone surrogates
    _check_keys(doc)
    proto_doc = copy.deepcopy(json.loads(text))
    for rs in proto_doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                s["traceId"] = _b64(s["traceId"], 16)
                s["spanId"] = _b64(s["spanId"], 8)
                if "parentSpanId" in s:
                    s["parentSpanId"] = _b64(s["parentSpanId"], 8)
                assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]), "span ends before it starts"
                for link in s.get("links", []):
                    link["traceId"] = _b64(link["traceId"], 16)
                    link["spanId"] = _b64(link["spanId"], 8)
    message = ExportTraceServiceRequest()
    ParseDict(proto_doc, message)  # raises ParseError on anything the schema refuses
    message.SerializeToString()
    return message


def span_count(doc: dict[str, Any]) -> int:
    """How many spans an OTLP/JSON document holds."""
    return sum(len(ss["spans"]) for rs in doc["resourceSpans"] for ss in rs["scopeSpans"])


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every span object of an OTLP/JSON document."""
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
