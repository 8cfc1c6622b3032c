"""The one OTLP/JSON validator of the suite: the official opentelemetry-proto schema and OTLP.md's rules.

``validate(doc)`` fails on anything off-spec (see its docstring); the helpers
below read span objects and attribute values out of a document.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# Keys that hold user data (attribute keys live under "key", never as object keys).
_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def check_keys(node: Any, path: str = "$") -> None:
    """Every object key of an OTLP/JSON document is lowerCamelCase (ParseDict also takes snake_case)."""
    if isinstance(node, dict):
        for key, value in node.items():
            assert _CAMEL.match(key), f"{path}: key {key!r} is not lowerCamelCase"
            check_keys(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_keys(value, f"{path}[{i}]")


def _convert_ids(obj: dict[str, Any]) -> None:
    for field, size in _ID_FIELDS.items():
        if field in obj and obj[field] != "":
            text = obj[field]
            assert isinstance(text, str) and re.fullmatch(r"[0-9a-f]+", text), f"{field} not lower hex: {text!r}"
            raw = bytes.fromhex(text)
            assert len(raw) == size, f"{field} is {len(raw)} bytes, expected {size}"
            assert any(raw), f"{field} is all zeros"
            obj[field] = base64.b64encode(raw).decode()


def validate(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON ExportTraceServiceRequest strictly; fail on anything off-spec; return the message.

    Checked: valid JSON without NaN literals that encodes as UTF-8 (no lone
    surrogates), lowerCamelCase keys, lower-hex ids of 16/8 non-zero bytes,
    every span ending at or after its start, the official schema (ParseDict
    rejects unknown fields and wrong types), and the message serialises.
    """
    json.dumps(doc, allow_nan=False, ensure_ascii=False).encode("utf-8")
    check_keys(doc)
    for s in spans_of(doc):
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]), "span ends before it starts"
    converted = copy.deepcopy(doc)
    for rs in converted.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _convert_ids(span)
                for link in span.get("links", []):
                    _convert_ids(link)
    message = ExportTraceServiceRequest()
    json_format.ParseDict(converted, message)  # rejects unknown fields and wrong types
    message.SerializeToString()
    return message


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """All span objects of a document."""
    return [s for rs in doc.get("resourceSpans", []) for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]


def span_count(doc: dict[str, Any]) -> int:
    """How many spans an OTLP/JSON document holds."""
    return len(spans_of(doc))


def attrs_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An OTLP attribute list as a plain dict of Python values."""
    out: dict[str, Any] = {}
    for kv in obj.get("attributes", []):
        out[kv["key"]] = any_value(kv["value"])
    return out


def any_value(v: dict[str, Any]) -> Any:
    """Decode one OTLP AnyValue."""
    ((kind, value),) = v.items()
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return [any_value(x) for x in value.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: any_value(kv["value"]) for kv in value.get("values", [])}
    return value
