"""The OTLP/HTTP trace receiver behind ``POST /v1/traces``: read, decode, validate and store spans.

No web framework here: ``receive(store, environ)`` takes a WSGI environ and
gives back ``(status, content type, body)``. Bodies come as OTLP/JSON
(``application/json``) or binary protobuf (``application/x-protobuf``, decoded
with ``opentelemetry-proto``, the ``[proto]`` extra), optionally gzip-compressed.

Both encodings become the same finished ``Span`` objects as the ones the
tracer records, each keeping the resource and scope it was sent with
(``otlp.Origin``), so a trace whose spans come from several processes is one
trace in the store. The same JSON decoder rebuilds JSON Lines files
(``autotrace.export.files``). A span that cannot be rebuilt (a bad id, no
name, a value of the wrong type) is rejected alone and counted in the
answer's ``partialSuccess``; the rest of its batch is kept.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .otlp import Origin, any_value, origin
from .spans import _UNSET_STATUS, Link, Span, SpanContext, SpanEvent, SpanKind, Status, StatusCode, continued_trace_id

if TYPE_CHECKING:
    from .store import TraceStore

__all__ = [
    "DEFAULT_MAX_RECEIVE_BYTES",
    "MAX_VALUE_DEPTH",
    "Decoded",
    "ReceiveError",
    "decode_json",
    "decode_protobuf",
    "receive",
    "stats",
    "store_spans",
]

DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024
"""The largest request body POST /v1/traces takes, before and after gzip (413 past it)."""

MAX_VALUE_DEPTH = 16
"""How deep array and kvlist attribute values may nest: deeper ones could not be encoded back (a span is rejected)."""

_DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read off the socket so the 413 arrives
_PROTO_EXTRA = "autotrace-inference[proto]"
_MAX_REASONS = 5  # distinct rejection reasons named in one partialSuccess message

_KINDS = {m.value: m for m in SpanKind}
_KIND_NAMES = {f"SPAN_KIND_{m.name}": m for m in SpanKind}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

# What a malformed span raises while it is rebuilt: rejected alone, never a 500.
# RecursionError: values nested as deep as the JSON parser allows, deeper than the decoder's stack.
_BAD_SPAN = (ValueError, TypeError, AttributeError, KeyError, OverflowError, RecursionError)

_lock = threading.Lock()
_counts = {"requests": 0, "accepted_spans": 0, "rejected_spans": 0, "refused_requests": 0}


class ReceiveError(Exception):
    """A request the receiver refuses as a whole: ``status`` (400, 411, 413, 415) and a message naming why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Decoded:
    """The spans of one request, with how many were rejected and why."""

    __slots__ = ("reasons", "rejected", "spans")

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejected = 0
        self.reasons: list[str] = []

    def reject(self, count: int, reason: str) -> None:
        """Count ``count`` spans refused for ``reason``."""
        self.rejected += count
        if reason not in self.reasons and len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def message(self) -> str:
        """The reasons, for ``partialSuccess.errorMessage``."""
        return f"{self.rejected} spans rejected: " + "; ".join(self.reasons)


def stats() -> dict[str, int]:
    """Counters of this process's receiver: requests, spans accepted and rejected, requests refused."""
    with _lock:
        return dict(_counts)


def _tally(**changes: int) -> None:
    with _lock:
        for key, value in changes.items():
            _counts[key] += value


# -- the HTTP side ------------------------------------------------------------------------------


def receive(
    store: TraceStore, environ: dict[str, Any], max_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
) -> tuple[int, str, bytes]:
    """Answer one ``POST /v1/traces``: (status, content type, body), the spans stored."""
    media = str(environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()
    protobuf = media in ("application/x-protobuf", "application/protobuf")
    try:
        if not protobuf and media != "application/json":
            raise ReceiveError(
                415,
                f"Content-Type {media[:60]!r} is not OTLP/HTTP; send application/json or application/x-protobuf",
            )
        if protobuf:
            _proto()  # before reading the body: without the extra, say so at once
        body = _inflate(_read(environ, max_bytes), str(environ.get("HTTP_CONTENT_ENCODING") or ""), max_bytes)
        # Decoding makes ~10 objects per span, none of them garbage: the cyclic collector would run
        # every few hundred spans and walk the whole store each time it reaches the older generations.
        enabled = gc.isenabled()
        gc.disable()
        try:
            decoded = decode_protobuf(body) if protobuf else decode_json(body)
            store_spans(store, decoded.spans)
        finally:
            if enabled:
                gc.enable()
    except ReceiveError as exc:
        _tally(requests=1, refused_requests=1)
        return exc.status, "application/json", _error_body(exc.status, exc.message)
    _tally(requests=1, accepted_spans=len(decoded.spans), rejected_spans=decoded.rejected)
    if protobuf:
        pb = _proto()
        answer = pb.ExportTraceServiceResponse()
        if decoded.rejected:
            answer.partial_success.rejected_spans = decoded.rejected
            answer.partial_success.error_message = decoded.message()
        return 200, "application/x-protobuf", answer.SerializeToString()
    doc: dict[str, Any] = {}
    if decoded.rejected:
        doc["partialSuccess"] = {"rejectedSpans": str(decoded.rejected), "errorMessage": decoded.message()}
    return 200, "application/json", json.dumps(doc).encode()


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


def _read(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The request body, at most ``max_bytes``; a larger one is refused unread (413)."""
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
        raise ReceiveError(411, "a chunked body is not accepted; send Content-Length")
    text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not text:
        raise ReceiveError(411, "Content-Length is required")
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ReceiveError(400, f"Content-Length {text[:40]!r} is not a number")
    length = int(text)
    stream = environ.get("wsgi.input")
    if length > max_bytes:
        # Read (and drop) a moderately large body, so that the client gets to read the 413
        # instead of a reset connection; past _DRAIN_LIMIT the connection is simply closed.
        if stream is not None and length <= _DRAIN_LIMIT:
            left = length
            while left > 0:
                chunk = stream.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        raise ReceiveError(413, f"the body is {length} bytes; this server takes at most {max_bytes}")
    if stream is None or length == 0:
        return b""
    body = stream.read(length)
    if len(body) != length:
        raise ReceiveError(400, f"the body ended after {len(body)} of {length} bytes")
    return bytes(body)


def _inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """``body`` decompressed, never past ``max_bytes`` in memory (a gzip bomb stops there: 413)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ReceiveError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise ReceiveError(413, f"the body inflates past {max_bytes} bytes, the most this server takes")
        if not inflater.eof:
            raise ReceiveError(400, "the gzip body is truncated")
    except zlib.error as exc:
        raise ReceiveError(400, f"the body is not valid gzip ({exc})") from None
    return out


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


# -- into the store -----------------------------------------------------------------------------


def store_spans(store: TraceStore, spans: Iterable[Span]) -> None:
    """File received spans by trace, with the store's limits, eviction and drop counts as for local spans."""
    store.add_many(spans)


# -- OTLP/JSON ----------------------------------------------------------------------------------


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


def build_span(
    name: str,
    kind: SpanKind,
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    flags: int,
    trace_state: str,
    start: int,
    end: int,
    attributes: dict[str, Any],
    events: list[SpanEvent],
    links: list[Link],
    dropped: list[int],
    status: Status,
    where: Origin | None,
) -> Span:
    """A finished Span made slot by slot, as the tracer does: nothing re-validated, truncated or re-timed."""
    s = object.__new__(Span)
    s._name = name
    s._kind = kind
    # Span flags (otlp.py): random trace id (0x02) when known (0x100), parent remote (0x200);
    # a span sent without them reads as a trace with a random id.
    random = not flags & 0x100 or bool(flags & 0x02)
    s._trace_id = continued_trace_id(trace_id, trace_state, random)
    s._span_id = span_id
    s._parent_id = parent_id
    s._extra = None  # before the folded fields below are set (see Span.__slots__)
    s._start = start
    s._end = end if end >= start else start
    s._attrs = attributes
    s._token = None
    s._trace = None
    s._status = status
    if events:
        s._events = events
    if links:
        s._links = links
    if dropped[0] or dropped[1] or dropped[2]:
        s._dropped = dropped
    if flags & 0x200:
        s._remote_parent = True
    if where is not None:
        s._extra_for_write().origin = where
    return s


# -- protobuf -----------------------------------------------------------------------------------


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


def decode_document(doc: Mapping[str, Any], require_name: bool = True) -> Decoded:
    """The spans of an already parsed OTLP/JSON request (a JSON Lines file's line); ValueError if it is not one."""
    out = Decoded()
    if not isinstance(doc, Mapping):
        raise ValueError(f"expected an ExportTraceServiceRequest object; got {type(doc).__name__}")
    for rs in _field(doc, "resourceSpans", "resource_spans", list):
        decode_resource_spans(rs, out, require_name)
    return out
