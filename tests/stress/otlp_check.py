"""Checks that an export is valid OTLP/JSON: the shared schema check plus UTF-8 and time order."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.otlp_check import spans_of, validate

__all__ = ["assert_valid_otlp", "span_count", "spans_of"]


def assert_valid_otlp(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """Assert ``doc`` is an OTLP/JSON ExportTraceServiceRequest; return the parsed protobuf.

    On top of ``tests.otlp_check.validate`` (official schema, lowerCamelCase keys,
    16/8-byte non-zero ids, no NaN literals): the text encodes as UTF-8 (no lone
    surrogates), every span ends at or after its start, and the message serialises.
    """
    json.dumps(doc, allow_nan=False, ensure_ascii=False).encode("utf-8")
    for s in spans_of(doc):
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]), "span ends before it starts"
    message = validate(doc)
    message.SerializeToString()
    return message


def span_count(doc: dict[str, Any]) -> int:
    """How many spans an OTLP/JSON document holds."""
    return len(spans_of(doc))
