"""Binary protobuf into spans: an ExportTraceServiceRequest decoded with the ``[proto]`` extra."""

from __future__ import annotations

from typing import Any

from ._decoded import _KINDS, MAX_VALUE_DEPTH, Decoded, ReceiveError, build_span
from .otlp import Origin, any_value, origin
from .spans import _UNSET_STATUS, Link, Span, SpanContext, SpanEvent, SpanKind, Status, StatusCode

__all__ = ["decode_protobuf"]

_PROTO_EXTRA = "autotrace-inference[proto]"


def _proto() -> Any:
    """The generated OTLP trace-service module; a 415 naming the extra when it is not installed."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        raise ReceiveError(
            415,
            f"application/x-protobuf needs the protobuf classes: pip install '{_PROTO_EXTRA}' "
            "(or send application/json)",
        ) from None
    return trace_service_pb2


def decode_protobuf(body: bytes) -> Decoded:
    """The spans of a binary protobuf ExportTraceServiceRequest; 400 when it does not parse."""
    pb = _proto()
    request = pb.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # google.protobuf.message.DecodeError, or a RuntimeError from upb
        raise ReceiveError(400, f"the body is not a protobuf ExportTraceServiceRequest ({exc})") from None
    out = Decoded()
    keep = out.spans.append
    for rs in request.resource_spans:
        try:
            resource = _pb_attributes(rs.resource.attributes)
        except ValueError as exc:
            out.reject(sum(len(ss.spans) for ss in rs.scope_spans), f"resource: {exc}")
            continue
        dropped = rs.resource.dropped_attributes_count
        for ss in rs.scope_spans:
            scope = ss.scope
            scope_json: dict[str, Any] = {"name": scope.name}
            if scope.version:
                scope_json["version"] = scope.version
            try:
                if len(scope.attributes):
                    scope_json["attributes"] = [
                        {"key": k, "value": any_value(v)} for k, v in _pb_attributes(scope.attributes).items()
                    ]
            except ValueError as exc:
                out.reject(len(ss.spans), f"scope: {exc}")
                continue
            where = origin(resource, scope_json, dropped)
            for sp in ss.spans:
                try:
                    keep(_pb_span(sp, where))
                except ValueError as exc:
                    out.reject(1, str(exc)[:200])
    return out


def _pb_id(raw: bytes, size: int, what: str) -> int:
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes; got {len(raw)}" if raw else f"{what} is missing")
    number = int.from_bytes(raw, "big")
    if not number:
        raise ValueError(f"{what} is all zeros")
    return number


def _pb_value(av: Any, depth: int = 0) -> Any:
    which = av.WhichOneof("value")
    if which == "string_value":
        return av.string_value
    if which == "int_value":
        return av.int_value
    if which == "double_value":
        return av.double_value
    if which == "bool_value":
        return av.bool_value
    if which == "array_value":
        if depth >= MAX_VALUE_DEPTH:
            raise ValueError(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
        return [_pb_value(v, depth + 1) for v in av.array_value.values]
    if which == "kvlist_value":
        if depth >= MAX_VALUE_DEPTH:
            raise ValueError(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
        return _pb_attributes(av.kvlist_value.values, depth + 1)
    if which == "bytes_value":
        return bytes(av.bytes_value)
    return None


def _pb_attributes(items: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:
        value = _pb_value(kv.value, depth)
        if value is not None:
            out[kv.key] = value
    return out


def _pb_span(sp: Any, where: Origin) -> Span:
    name = sp.name
    if not name:
        raise ValueError("a span needs a name")
    kind = _KINDS.get(sp.kind)
    if kind is None:
        if sp.kind != 0:
            raise ValueError(f"kind must be 0-5; got {sp.kind}")
        kind = SpanKind.INTERNAL
    parent = sp.parent_span_id
    events = [
        SpanEvent(ev.name, _pb_attributes(ev.attributes), ev.time_unix_nano, ev.dropped_attributes_count)
        for ev in sp.events
    ]
    links = []
    for lk in sp.links:
        flags = lk.flags
        context = SpanContext(
            _pb_id(lk.trace_id, 16, "link trace_id"),
            _pb_id(lk.span_id, 8, "link span_id"),
            bool(flags & 0x1),
            bool(flags & 0x200),
            lk.trace_state,
            bool(flags & 0x02),
        )
        links.append(Link(context, _pb_attributes(lk.attributes), lk.dropped_attributes_count))
    code = sp.status.code
    if code == 0:
        status = _UNSET_STATUS
    elif code == 1:
        status = Status(StatusCode.OK)
    elif code == 2:
        status = Status(StatusCode.ERROR, sp.status.message or None)
    else:
        raise ValueError(f"status code must be 0-2; got {code}")
    return build_span(
        name,
        kind,
        _pb_id(sp.trace_id, 16, "trace_id"),
        _pb_id(sp.span_id, 8, "span_id"),
        _pb_id(parent, 8, "parent_span_id") if parent else None,
        sp.flags,
        sp.trace_state,
        sp.start_time_unix_nano,
        sp.end_time_unix_nano,
        _pb_attributes(sp.attributes),
        events,
        links,
        [sp.dropped_attributes_count, sp.dropped_events_count, sp.dropped_links_count],
        status,
        where,
    )
