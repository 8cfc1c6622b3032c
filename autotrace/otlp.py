"""Pure functions from spans to OTLP/JSON, exactly as the OTLP specification encodes it.

lowerCamelCase keys, hex ids, enums as integers, 64-bit integers as decimal
strings, attributes as ``AnyValue``. See opentelemetry-proto's
``trace/v1/trace.proto`` and the OTLP/JSON rules.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._limits import LIMITS
from ._model import trace_state_of
from ._version import __version__

if TYPE_CHECKING:
    from .spans import Span

__all__ = [
    "Origin",
    "any_value",
    "encode_span",
    "encode_spans",
    "encode_traces",
    "group_by_origin",
    "key_values",
    "origin",
    "span_origin",
]

SCOPE = {"name": "autotrace", "version": __version__}

_SURROGATE = re.compile("[\ud800-\udfff]")

# Span.flags and Link.flags (trace.proto, SpanFlags): the low byte is the W3C
# trace flags; 0x100 says whether the parent (or linked) context is remote is
# known, 0x200 that it is remote. A stored span is always sampled (0x01).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FLAGS = _HAS_IS_REMOTE | 0x01
_FLAGS_RANDOM = _FLAGS | 0x02


def _text(value: str) -> str:
    """``value`` as valid UTF-8 text: lone surrogates, which no OTLP parser accepts, become U+FFFD."""
    if value.__class__ is not str:
        from .attributes import safe_str

        value = safe_str(value)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def any_value(value: Any) -> dict[str, Any]:
    """One attribute value as an OTLP ``AnyValue``."""
    cls = type(value)
    if cls is str:
        return {"stringValue": _text(value)}
    if cls is bool:
        return {"boolValue": value}
    if cls is int:
        return {"intValue": str(value)}
    if cls is float:
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, int):
        return {"intValue": str(int(value))}
    if isinstance(value, float):
        return any_value(float(value))
    if isinstance(value, str):
        return {"stringValue": _text(str.__str__(value))}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    if isinstance(value, (list, tuple)):
        # None in a sequence stays in its place as an empty AnyValue (as OpenTelemetry's encoder does).
        return {"arrayValue": {"values": [{} if v is None else any_value(v) for v in value]}}
    from .attributes import safe_str

    return {"stringValue": _text(safe_str(value))}


def key_values(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Attributes as a list of OTLP ``KeyValue``."""
    return [{"key": _text(key), "value": any_value(value)} for key, value in attributes.items()]


_MASK64 = (1 << 64) - 1


def _hex64(value: int) -> str:
    return value.to_bytes(8, "big").hex()


def encode_span(span: Span) -> dict[str, Any]:
    """One span as an OTLP/JSON ``Span`` object."""
    # Id, start and end from their slots, as the properties read them (attributes.pack folds
    # the three into one int): three property calls fewer per span.
    t0 = span._t0
    sid: int | None
    end: int | None
    if t0 is None:
        packed: int = span._t1  # type: ignore[assignment]  # packed: never None
        sid, start, end = packed >> 128, (packed >> 64) & _MASK64, packed & _MASK64
    else:
        sid, start, end = span._sid, t0, span._t1
        if sid is None or (end is not None and end > _MASK64):  # packed as it was read: read again
            sid, start, end = span._span_id, span._start, span._end
    out: dict[str, Any] = {
        "traceId": span._trace_id.to_bytes(16, "big").hex(),
        "spanId": _hex64(sid),  # type: ignore[arg-type]  # (None only for a span never given an id)
    }
    tid = span._trace_id
    if tid.__class__ is int:  # a trace started here: random id, no trace state (see spans._TraceId)
        flags = _FLAGS_RANDOM
    else:
        trace_state, random = trace_state_of(tid)
        if trace_state:
            out["traceState"] = _text(trace_state)
        flags = _FLAGS_RANDOM if random else _FLAGS
    if span._parent_id is not None:
        out["parentSpanId"] = _hex64(span._parent_id)
    extra = span._extra
    # The extra part's fields read once, not through the span's properties (a call each, per span).
    if extra is None:
        out["flags"] = flags
        dropped = events = links = None
    else:
        out["flags"] = flags | _IS_REMOTE if extra.remote_parent else flags
        dropped, events, links = extra.dropped, extra.events, extra.links
    if end is None:
        end = start
    name = span._name
    if len(name) > LIMITS.max_name_length:  # span() leaves the check to here, off its hot path
        name = name[: LIMITS.max_name_length]
    out["name"] = _text(name)
    out["kind"] = int(span._kind)
    out["startTimeUnixNano"] = str(start)
    out["endTimeUnixNano"] = str(end if end >= start else start)
    out["attributes"] = key_values(span._attrs)
    if dropped and dropped[0]:
        out["droppedAttributesCount"] = dropped[0]
    out["events"] = (
        [
            _drop_zero(
                {
                    "timeUnixNano": str(ev.timestamp),
                    "name": _text(ev.name),
                    "attributes": key_values(ev.attributes),
                },
                "droppedAttributesCount",
                ev.dropped_attributes_count,
            )
            for ev in events
        ]
        if events
        else []
    )
    if dropped and dropped[1]:
        out["droppedEventsCount"] = dropped[1]
    out["links"] = (
        [
            _drop_zero(
                {
                    "traceId": lk.context.trace_id.to_bytes(16, "big").hex(),
                    "spanId": _hex64(lk.context.span_id),
                    "traceState": _text(lk.context.trace_state),
                    "attributes": key_values(lk.attributes),
                    "flags": _HAS_IS_REMOTE | (_IS_REMOTE if lk.context.is_remote else 0) | lk.context.trace_flags,
                },
                "droppedAttributesCount",
                lk.dropped_attributes_count,
            )
            for lk in links
        ]
        if links
        else []
    )
    if dropped and dropped[2]:
        out["droppedLinksCount"] = dropped[2]
    status = span._status
    if status.code:
        st: dict[str, Any] = {"code": int(status.code)}
        if status.code == 2 and status.description:
            st["message"] = _text(status.description)
        out["status"] = st
    else:
        out["status"] = {}
    return out


def _drop_zero(obj: dict[str, Any], key: str, value: int) -> dict[str, Any]:
    if value:
        obj[key] = value
    return obj


class Origin:
    """The resource and instrumentation scope of spans received from another process or service.

    Received spans keep theirs (``Span._extra.origin``); a span without one
    belongs to this process's resource and autotrace's scope. Origins with
    the same content are shared (see ``origin``), so encoding groups spans by
    ``key`` into one ``resourceSpans`` / ``scopeSpans`` entry each.
    """

    __slots__ = ("key", "resource", "resource_json", "scope_json")

    def __init__(self, resource: dict[str, Any], resource_json: dict[str, Any], scope_json: dict[str, Any]) -> None:
        self.resource = resource  # the resource attributes as Python values
        self.resource_json = resource_json  # OTLP/JSON Resource, as received (re-encoded)
        self.scope_json = scope_json  # OTLP/JSON InstrumentationScope
        self.key = (
            json.dumps(resource_json, sort_keys=True, separators=(",", ":")),
            json.dumps(scope_json, sort_keys=True, separators=(",", ":")),
        )

    def __repr__(self) -> str:
        return f"Origin({self.resource.get('service.name')!r}, {self.scope_json.get('name')!r})"


_ORIGINS: dict[tuple[str, str], Origin] = {}
_MAX_ORIGINS = 4096  # distinct resource/scope pairs remembered for sharing; past it, a fresh table


def origin(resource: Mapping[str, Any], scope_json: Mapping[str, Any], dropped: int = 0) -> Origin:
    """The shared Origin of a resource (attributes) and a scope (OTLP/JSON), made once per distinct pair."""
    resource_json: dict[str, Any] = {"attributes": key_values(resource)}
    if dropped:
        resource_json["droppedAttributesCount"] = dropped
    made = Origin(dict(resource), resource_json, _valid_scope(scope_json))
    found = _ORIGINS.get(made.key)
    if found is not None:
        return found
    if len(_ORIGINS) >= _MAX_ORIGINS:
        _ORIGINS.clear()
    _ORIGINS[made.key] = made
    return made


def _valid_scope(scope_json: Mapping[str, Any]) -> dict[str, Any]:
    """A received scope with its texts (name, version, attribute keys) as valid UTF-8, as every other text is.

    It is written out as it is kept: one lone surrogate in it would make every
    export holding the scope's spans fail (strict) or be refused by its reader.
    """
    out = dict(scope_json)
    for field in ("name", "version"):
        value = out.get(field)
        if isinstance(value, str):
            out[field] = _text(value)
    attrs = out.get("attributes")
    if isinstance(attrs, list):
        out["attributes"] = [
            {**kv, "key": _text(kv["key"])} if isinstance(kv, dict) and isinstance(kv.get("key"), str) else kv
            for kv in attrs
        ]
    return out


def span_origin(span: Span) -> Origin | None:
    """The Origin a span was received with, None for a span of this process."""
    extra = span._extra
    return None if extra is None else extra.origin


def group_by_origin(spans: Iterable[Span]) -> list[tuple[Origin | None, list[Span]]]:
    """Spans grouped by their origin (None: this process's first), each group in the spans' order.

    Groups with the same resource sit next to each other, so that one
    ``resourceSpans`` entry can hold all their scopes.
    """
    local: list[Span] = []
    groups: dict[tuple[str, str], tuple[Origin, list[Span]]] = {}
    for s in spans:
        extra = s._extra
        found = None if extra is None else extra.origin
        if found is None:
            local.append(s)
        else:
            group = groups.get(found.key)
            if group is None:
                groups[found.key] = (found, [s])
            else:
                group[1].append(s)
    out: list[tuple[Origin | None, list[Span]]] = [(None, local)] if local else []
    ordered: list[tuple[Origin, list[Span]]] = sorted(groups.values(), key=_resource_key)
    out.extend(ordered)
    return out


def _resource_key(group: tuple[Origin, list[Span]]) -> str:
    return group[0].key[0]


def _resource_spans(
    groups: list[tuple[Origin | None, list[Span]]], resource: Mapping[str, Any]
) -> list[tuple[dict[str, Any], list[tuple[dict[str, Any], list[Span]]]]]:
    """(OTLP/JSON resource, [(OTLP/JSON scope, spans)]) for each distinct resource among ``groups``."""
    out: list[tuple[dict[str, Any], list[tuple[dict[str, Any], list[Span]]]]] = []
    last_key: str | None = None
    for found, spans in groups:
        if found is None:
            out.append(({"attributes": key_values(resource)}, [(dict(SCOPE), spans)]))
            last_key = None
            continue
        if found.key[0] != last_key:
            out.append((found.resource_json, []))
            last_key = found.key[0]
        out[-1][1].append((found.scope_json, spans))
    return out


def encode_spans(spans: Iterable[Span], resource: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Spans as an ``ExportTraceServiceRequest``: this process's under ``resource``, received ones under their own."""
    if resource is None:
        from ._resource import current as resource_attributes

        resource = resource_attributes()
    return {
        "resourceSpans": [
            {
                "resource": res,
                "scopeSpans": [{"scope": scope, "spans": [encode_span(s) for s in group]} for scope, group in scopes],
            }
            for res, scopes in _resource_spans(group_by_origin(spans), resource)
        ]
    }


def encode_traces(traces: Iterable[Iterable[Span]], resource: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Whole traces (lists of spans) as one ``ExportTraceServiceRequest``."""
    return encode_spans((s for trace in traces for s in trace), resource)
