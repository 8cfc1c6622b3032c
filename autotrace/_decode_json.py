"""OTLP/JSON into spans: an ExportTraceServiceRequest (a POST body or a JSON Lines file's line) decoded and validated.

A span that cannot be rebuilt (a bad id, no name, a value of the wrong type)
is rejected alone and counted in ``Decoded``; the rest of its batch is kept.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from ._decoded import _KINDS, MAX_VALUE_DEPTH, Decoded, ReceiveError, build_span
from .otlp import Origin, any_value, origin
from .spans import _UNSET_STATUS, Link, Span, SpanContext, SpanEvent, SpanKind, Status, StatusCode

__all__ = ["decode_document", "decode_json", "decode_resource_spans", "decode_span"]

_KIND_NAMES = {f"SPAN_KIND_{m.name}": m for m in SpanKind}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

# What a malformed span raises while it is rebuilt: rejected alone, never a 500.
# RecursionError: values nested as deep as the JSON parser allows, deeper than the decoder's stack.
_BAD_SPAN = (ValueError, TypeError, AttributeError, KeyError, OverflowError, RecursionError)


def decode_json(body: bytes | str) -> Decoded:
    """The spans of an OTLP/JSON ExportTraceServiceRequest; 400 when it is not one."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise ReceiveError(400, "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ReceiveError(400, f"the body is not JSON ({exc.msg} at offset {exc.pos})") from None
    except RecursionError:
        raise ReceiveError(400, "the body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ReceiveError(400, f"an ExportTraceServiceRequest is a JSON object; got {type(doc).__name__}")
    out = Decoded()
    try:
        resource_spans = _field(doc, "resourceSpans", "resource_spans", list)
    except ValueError as exc:
        raise ReceiveError(400, str(exc)) from None
    for rs in resource_spans:
        decode_resource_spans(rs, out)
    return out


def _field(obj: Mapping[str, Any], camel: str, snake: str, kind: type) -> Any:
    """``obj[camel]`` (or the proto name ``snake``, which protobuf's JSON mapping also allows), checked."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
        if value is None:
            return kind()
    if not isinstance(value, kind):
        raise ValueError(f"{camel!r} must be a {'list' if kind is list else 'object'}; got {type(value).__name__}")
    return value


def _count_spans(rs: Any) -> int:
    """How many spans a resourceSpans entry that cannot be read seems to hold (0 when not even that)."""
    try:
        return sum(len(ss.get("spans") or ()) for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ())
    except (AttributeError, TypeError):
        return 0


def decode_resource_spans(rs: Any, out: Decoded, require_name: bool = True) -> None:
    """Add the spans of one OTLP/JSON ResourceSpans to ``out``, rejecting those that cannot be rebuilt."""
    try:
        if not isinstance(rs, dict):
            raise ValueError(f"a resourceSpans entry must be an object; got {type(rs).__name__}")
        res = _field(rs, "resource", "resource", dict)
        attrs = _attributes(_field(res, "attributes", "attributes", list))
        dropped = _uint(_get(res, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount")
        scope_spans = _field(rs, "scopeSpans", "scope_spans", list)
    except _BAD_SPAN as exc:
        out.reject(_count_spans(rs), f"resource: {_reason(exc)}")
        return
    for ss in scope_spans:
        try:
            if not isinstance(ss, dict):
                raise ValueError(f"a scopeSpans entry must be an object; got {type(ss).__name__}")
            spans = _field(ss, "spans", "spans", list)
            where = _scope_origin(attrs, dropped, _field(ss, "scope", "scope", dict))
        except _BAD_SPAN as exc:
            count = len(ss.get("spans") or ()) if isinstance(ss, dict) and isinstance(ss.get("spans"), list) else 0
            out.reject(count, f"scope: {_reason(exc)}")
            continue
        keep = out.spans.append
        trace_ids: dict[str, int] = {}
        for item in spans:
            try:
                keep(decode_span(item, where, require_name, trace_ids))
            except _BAD_SPAN as exc:
                out.reject(1, _reason(exc))


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ValueError) else f"a value of the wrong type ({exc})"
    return text[:200]


def _scope_origin(resource: dict[str, Any], dropped: int, scope: Mapping[str, Any]) -> Origin:
    scope_json: dict[str, Any] = {"name": _str(scope.get("name"), "scope name")}
    version = scope.get("version")
    if version:
        scope_json["version"] = _str(version, "scope version")
    scope_attrs = scope.get("attributes")
    if scope_attrs:
        scope_json["attributes"] = [{"key": k, "value": any_value(v)} for k, v in _attributes(scope_attrs).items()]
    return origin(resource, scope_json, dropped)


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string; got {type(value).__name__}")
    return value


def _uint(value: Any, what: str) -> int:
    """A 32- or 64-bit unsigned integer sent as a number or a decimal string (both are OTLP/JSON)."""
    if value is None:
        return 0
    if value.__class__ is str and value.isdigit() and value.isascii() and len(value) <= 20:
        number: int = int(value)
    elif value.__class__ is int:
        number = value
    elif (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20) or (
        isinstance(value, float) and value.is_integer()
    ):
        number = int(value)
    else:
        raise ValueError(f"{what} must be a non-negative integer; got {str(value)[:40]!r}")
    if number < 0 or number >= 1 << 64:
        raise ValueError(f"{what} is out of range: {number}")
    return number


def _id(value: Any, size: int, what: str) -> int:
    """A trace or span id: hex as OTLP/JSON sends it (base64, protobuf's JSON mapping, is accepted too)."""
    if value.__class__ is not str or not value:
        raise ValueError(f"{what} is missing" if not value else f"{what} must be a string")
    raw = b""
    if len(value) == size * 2:
        # bytes.fromhex, not int(value, 16): that would also take "-", "+", "0x" and "_" (a negative id).
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{what} is not hex: {value[:40]!r}") from None
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    if len(raw) != size:
        raise ValueError(f"{what} must be {size * 2} hex characters; got {value[:80]!r}")
    number = int.from_bytes(raw, "big")
    if number == 0:
        raise ValueError(f"{what} is all zeros")
    return number


def _double(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    raise ValueError(f"doubleValue must be a number; got {str(value)[:40]!r}")


def _value(av: Any, depth: int = 0) -> Any:
    """An OTLP/JSON AnyValue as a Python value (None for an empty one)."""
    if not isinstance(av, dict):
        raise ValueError(f"an attribute value must be an object; got {type(av).__name__}")
    for key, value in av.items():
        if key == "stringValue" or key == "string_value":
            if not isinstance(value, str):
                raise ValueError(f"stringValue must be a string; got {type(value).__name__}")
            return value
        if key == "intValue" or key == "int_value":
            if value.__class__ is int:
                number: int = value
            elif isinstance(value, str) and len(value) <= 20:
                try:
                    number = int(value)
                except ValueError:
                    raise ValueError(f"intValue must be an integer; got {value[:40]!r}") from None
            else:
                raise ValueError(f"intValue must be an integer; got {str(value)[:40]!r}")
            if not -(1 << 63) <= number < 1 << 63:
                raise ValueError(f"intValue is out of the 64-bit range: {number}")
            return number
        if key == "boolValue" or key == "bool_value":
            if not isinstance(value, bool):
                raise ValueError(f"boolValue must be true or false; got {str(value)[:40]!r}")
            return value
        if key == "doubleValue" or key == "double_value":
            return _double(value)
        if key == "arrayValue" or key == "array_value":
            values = _field(value, "values", "values", list) if isinstance(value, dict) else None
            if values is None:
                raise ValueError("arrayValue must be an object holding 'values'")
            if depth >= MAX_VALUE_DEPTH:
                raise ValueError(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
            return [_value(v, depth + 1) for v in values]
        if key == "kvlistValue" or key == "kvlist_value":
            values = _field(value, "values", "values", list) if isinstance(value, dict) else None
            if values is None:
                raise ValueError("kvlistValue must be an object holding 'values'")
            if depth >= MAX_VALUE_DEPTH:
                raise ValueError(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
            return _attributes(values, depth + 1)
        if key == "bytesValue" or key == "bytes_value":
            if not isinstance(value, str):
                raise ValueError("bytesValue must be a base64 string")
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("bytesValue is not base64") from None
    return None  # an empty AnyValue (or only unknown fields, which receivers ignore)


def _attributes(items: Any, depth: int = 0) -> dict[str, Any]:
    """OTLP/JSON KeyValues as a dict; an empty value leaves its key out."""
    if not items:
        return {}
    if not isinstance(items, list):
        raise ValueError(f"attributes must be a list; got {type(items).__name__}")
    out: dict[str, Any] = {}
    for kv in items:
        key = kv["key"]
        if key.__class__ is not str:
            raise ValueError(f"an attribute key must be a string; got {type(key).__name__}")
        av = kv.get("value")
        # The common case first: a string value, checked inline (no call).
        if av.__class__ is dict and len(av) == 1:
            text = av.get("stringValue")
            if text.__class__ is str:
                out[key] = text
                continue
            text = av.get("intValue")
            if text.__class__ is str and text.isdigit() and text.isascii() and len(text) < 19:
                out[key] = int(text)  # fewer than 19 digits: inside the 64-bit range
                continue
        value = _value(av or {}, depth)
        if value is not None:
            out[key] = value
    return out


def _kind(value: Any) -> SpanKind:
    if value is None or value == 0:
        return SpanKind.INTERNAL  # UNSPECIFIED
    kind = _KINDS.get(value) if value.__class__ is int else _KIND_NAMES.get(value)
    if kind is None:
        if value == "SPAN_KIND_UNSPECIFIED":
            return SpanKind.INTERNAL
        raise ValueError(f"kind must be 0-5 or a SPAN_KIND_* name; got {str(value)[:40]!r}")
    return kind


def _status(value: Any) -> Status:
    if not value:
        return _UNSET_STATUS
    if not isinstance(value, dict):
        raise ValueError(f"status must be an object; got {type(value).__name__}")
    code = value.get("code") or 0
    if code.__class__ is not int:
        if code not in _STATUS_NAMES:
            raise ValueError(f"status code must be 0-2 or a STATUS_CODE_* name; got {str(code)[:40]!r}")
        code = _STATUS_NAMES[code]
    if code == 0:
        return _UNSET_STATUS
    if code == 1:
        return Status(StatusCode.OK)
    if code == 2:
        message = value.get("message")
        return Status(StatusCode.ERROR, _str(message, "status message") or None)
    raise ValueError(f"status code must be 0-2; got {code}")


def _get(item: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = item.get(camel)
    return item.get(snake) if value is None else value


# The proto field names protobuf's JSON mapping also allows, as lowerCamelCase.
_CAMEL = {
    "trace_id": "traceId",
    "span_id": "spanId",
    "parent_span_id": "parentSpanId",
    "trace_state": "traceState",
    "start_time_unix_nano": "startTimeUnixNano",
    "end_time_unix_nano": "endTimeUnixNano",
    "time_unix_nano": "timeUnixNano",
    "dropped_attributes_count": "droppedAttributesCount",
    "dropped_events_count": "droppedEventsCount",
    "dropped_links_count": "droppedLinksCount",
}


def _camel(item: dict[str, Any]) -> dict[str, Any]:
    """A span, event or link sent with proto field names, as lowerCamelCase (camelCase wins when both are there)."""
    out = {_CAMEL.get(key, key): value for key, value in item.items() if key not in _CAMEL}
    for key, value in item.items():
        if key in _CAMEL:
            out.setdefault(_CAMEL[key], value)
    for key in ("events", "links"):
        nested = out.get(key)
        if isinstance(nested, list):
            out[key] = [_camel(x) if isinstance(x, dict) else x for x in nested]
    return out


def _count(value: Any, what: str) -> int:
    return 0 if value is None else _uint(value, what)


def _time(value: Any, what: str) -> int:
    """A time in unix nanoseconds: the decimal string OTLP/JSON sends, read at once; anything else as _uint."""
    if value.__class__ is str and len(value) == 19 and value.isdigit() and value.isascii():
        return int(value)
    return 0 if value is None else _uint(value, what)


def decode_span(
    item: Any, where: Origin | None = None, require_name: bool = True, trace_ids: dict[str, int] | None = None
) -> Span:
    """One OTLP/JSON Span as a finished ``Span`` (with ``where`` as its origin); ValueError naming what is wrong.

    ``require_name=False`` takes an empty name (autotrace's own files may hold one). ``trace_ids``
    remembers the trace ids already read in this request (a batch holds few traces).
    """
    if item.__class__ is not dict:
        raise ValueError(f"a span must be an object; got {type(item).__name__}")
    if "traceId" not in item and "trace_id" in item:
        item = _camel(item)
    get = item.get
    name = get("name")
    if name.__class__ is not str or (require_name and not name):
        if name is None and not require_name:
            name = ""
        else:
            raise ValueError("a span needs a name" if not name else "the span name must be a string")
    text = get("traceId")
    trace_id = None if trace_ids is None else trace_ids.get(text)
    if trace_id is None:
        trace_id = _id(text, 16, "traceId")
        if trace_ids is not None:
            trace_ids[text] = trace_id
    span_id = _id(get("spanId"), 8, "spanId")
    parent = get("parentSpanId")
    flags = _count(get("flags"), "flags")
    trace_state = get("traceState") or ""
    if trace_state.__class__ is not str:
        raise ValueError("traceState must be a string")
    start = _time(get("startTimeUnixNano"), "startTimeUnixNano")
    end = _time(get("endTimeUnixNano"), "endTimeUnixNano")
    raw_events = get("events")
    events = (
        [
            SpanEvent(
                _str(ev.get("name"), "event name"),
                _attributes(ev.get("attributes")),
                _count(ev.get("timeUnixNano"), "event timeUnixNano"),
                _count(ev.get("droppedAttributesCount"), "droppedAttributesCount"),
            )
            for ev in raw_events
        ]
        if raw_events
        else []
    )
    links = []
    for lk in get("links") or ():
        lflags = _count(lk.get("flags"), "link flags")
        context = SpanContext(
            _id(lk.get("traceId"), 16, "link traceId"),
            _id(lk.get("spanId"), 8, "link spanId"),
            bool(lflags & 0x1),
            bool(lflags & 0x200),
            _str(lk.get("traceState"), "link traceState"),
            bool(lflags & 0x02),
        )
        links.append(
            Link(
                context,
                _attributes(lk.get("attributes")),
                _count(lk.get("droppedAttributesCount"), "droppedAttributesCount"),
            )
        )
    dropped = [
        _count(get("droppedAttributesCount"), "droppedAttributesCount"),
        _count(get("droppedEventsCount"), "droppedEventsCount"),
        _count(get("droppedLinksCount"), "droppedLinksCount"),
    ]
    return build_span(
        name,
        _kind(get("kind")),
        trace_id,
        span_id,
        _id(parent, 8, "parentSpanId") if parent else None,
        flags,
        trace_state,
        start,
        end,
        _attributes(get("attributes")),
        events,
        links,
        dropped,
        _status(get("status")),
        where,
    )


def decode_document(doc: Mapping[str, Any], require_name: bool = True) -> Decoded:
    """The spans of an already parsed OTLP/JSON request (a JSON Lines file's line); ValueError if it is not one."""
    out = Decoded()
    if not isinstance(doc, Mapping):
        raise ValueError(f"expected an ExportTraceServiceRequest object; got {type(doc).__name__}")
    for rs in _field(doc, "resourceSpans", "resource_spans", list):
        decode_resource_spans(rs, out, require_name)
    return out
