"""OTLP/JSON request dicts as protobuf ExportTraceServiceRequest messages (the ``proto`` extra).

Built field by field from the dict that ``otlp`` makes, so the encoding rules
live in one place; ``opentelemetry-proto`` is imported only when asked for.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["protobuf_classes"]


class _Protobuf:
    """Builds ExportTraceServiceRequest messages from OTLP/JSON dicts, field by field.

    Setting fields directly is about five times faster than json_format.ParseDict,
    and the dict is the one place where the encoding rules live (otlp.py).
    """

    def __init__(self) -> None:
        trace_service_pb2 = importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
        self._request = trace_service_pb2.ExportTraceServiceRequest
        self.response = trace_service_pb2.ExportTraceServiceResponse

    def request(self, doc: Mapping[str, Any]) -> Any:
        """The message for one OTLP/JSON request."""
        message = self._request()
        for rs in doc.get("resourceSpans", ()):
            prs = message.resource_spans.add()
            _key_values(prs.resource.attributes, (rs.get("resource") or {}).get("attributes", ()))
            for ss in rs.get("scopeSpans", ()):
                pss = prs.scope_spans.add()
                scope = ss.get("scope") or {}
                pss.scope.name = scope.get("name", "")
                pss.scope.version = scope.get("version", "")
                for sp in ss.get("spans", ()):
                    _span(pss.spans.add(), sp)
        return message


def _span(p: Any, sp: Mapping[str, Any]) -> None:
    p.trace_id = bytes.fromhex(sp["traceId"])
    p.span_id = bytes.fromhex(sp["spanId"])
    if sp.get("parentSpanId"):
        p.parent_span_id = bytes.fromhex(sp["parentSpanId"])
    p.flags = sp.get("flags", 0)
    if sp.get("traceState"):
        p.trace_state = sp["traceState"]
    p.name = sp["name"]
    p.kind = sp["kind"]
    p.start_time_unix_nano = int(sp["startTimeUnixNano"])
    p.end_time_unix_nano = int(sp["endTimeUnixNano"])
    _key_values(p.attributes, sp.get("attributes", ()))
    p.dropped_attributes_count = sp.get("droppedAttributesCount", 0)
    for ev in sp.get("events", ()):
        pe = p.events.add()
        pe.time_unix_nano = int(ev["timeUnixNano"])
        pe.name = ev["name"]
        _key_values(pe.attributes, ev.get("attributes", ()))
        pe.dropped_attributes_count = ev.get("droppedAttributesCount", 0)
    p.dropped_events_count = sp.get("droppedEventsCount", 0)
    for lk in sp.get("links", ()):
        pl = p.links.add()
        pl.trace_id = bytes.fromhex(lk["traceId"])
        pl.span_id = bytes.fromhex(lk["spanId"])
        pl.trace_state = lk.get("traceState", "")
        _key_values(pl.attributes, lk.get("attributes", ()))
        pl.dropped_attributes_count = lk.get("droppedAttributesCount", 0)
        pl.flags = lk.get("flags", 0)
    p.dropped_links_count = sp.get("droppedLinksCount", 0)
    status = sp.get("status")
    if status is None:
        return
    p.status.SetInParent()
    if status.get("code"):
        p.status.code = status["code"]
        if status.get("message"):
            p.status.message = status["message"]


def _key_values(repeated: Any, items: Any) -> None:
    for kv in items:
        pkv = repeated.add()
        pkv.key = kv["key"]
        _any_value(pkv.value, kv["value"])


def _any_value(p: Any, value: Mapping[str, Any]) -> None:
    if "stringValue" in value:
        p.string_value = value["stringValue"]
    elif "boolValue" in value:
        p.bool_value = value["boolValue"]
    elif "intValue" in value:
        p.int_value = int(value["intValue"])
    elif "doubleValue" in value:
        number = value["doubleValue"]
        p.double_value = float(number.replace("Infinity", "inf")) if isinstance(number, str) else number
    elif "arrayValue" in value:
        p.array_value.SetInParent()  # an empty array is still an array
        for item in value["arrayValue"].get("values", ()):
            _any_value(p.array_value.values.add(), item)
    elif "kvlistValue" in value:
        p.kvlist_value.SetInParent()
        _key_values(p.kvlist_value.values, value["kvlistValue"].get("values", ()))
    elif "bytesValue" in value:
        p.bytes_value = base64.b64decode(value["bytesValue"])


def protobuf_classes() -> _Protobuf:
    """The message builder; ValueError naming the packages to install when they are missing."""
    try:
        return _Protobuf()
    except ImportError as exc:
        raise ValueError(
            "the OTLP protobuf encoding (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf) needs the "
            f"opentelemetry-proto and protobuf packages: pip install 'autotrace-inference[proto]' ({exc}); "
            "or use http/json"
        ) from None
