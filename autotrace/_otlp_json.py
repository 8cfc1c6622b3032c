"""OTLP/JSON text written straight from stored spans, without building ``otlp``'s dicts first.

``encode(spans, resource)`` and ``stream(traces, resource)`` give the document
``json.dumps(otlp.encode_spans(...))`` gives, key for key once parsed (the
tests compare the two on varied spans), at 3-4 times the spans/s: each
span is one string put together from its fields, attribute keys are quoted
once and remembered, and strings are escaped by ``json``'s C function. Values
this fast path does not know (sequences, mappings, bytes, subclasses) go
through ``otlp.any_value`` and ``json.dumps``, so their encoding is otlp's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from ._limits import LIMITS
from ._model import SpanKind, trace_state_of
from .otlp import _FLAGS, _FLAGS_RANDOM, _HAS_IS_REMOTE, _IS_REMOTE, _resource_spans, _text, any_value, group_by_origin

if TYPE_CHECKING:
    from .spans import Span

__all__ = ["attributes_json", "encode", "stream"]

_quote = encode_basestring  # the C escaper (ensure_ascii=False), as json.dumps(..., ensure_ascii=False) uses
_FLOAT = float.__repr__  # what json.dumps writes for a finite float
_NON_FINITE = {  # OTLP/JSON writes them as strings; keyed by float.__repr__
    "nan": '{"doubleValue":"NaN"}}',
    "inf": '{"doubleValue":"Infinity"}}',
    "-inf": '{"doubleValue":"-Infinity"}}',
}

# Attribute keys seen, as the text that opens their KeyValue: a service sets the same few
# keys on every span. Bounded: past _MAX_KEYS distinct keys it starts again empty, and only
# keys up to _MAX_KEY_CHARS are kept (a received span's key can be megabytes: kept here, it
# would outlive the span in the store).
_KEYS: dict[str, str] = {}
_MAX_KEYS = 4096
_MAX_KEY_CHARS = 256


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _string(value: Any) -> str:
    """The JSON string of ``otlp._text(value)``."""
    if value.__class__ is str and value.isascii():
        return _quote(value)  # type: ignore[no-any-return]
    return _quote(_text(value))  # type: ignore[no-any-return]


def _key(key: Any) -> str:
    """The text that opens a KeyValue: ``{"key":"<key>","value":``."""
    if key.__class__ is not str:
        return '{"key":' + _string(key) + ',"value":'
    found = _KEYS.get(key)
    if found is None:
        found = '{"key":' + _string(key) + ',"value":'
        if len(key) > _MAX_KEY_CHARS:
            return found
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()
        _KEYS[key] = found
    return found


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """Attributes as the JSON text of a list of OTLP ``KeyValue`` (``otlp.key_values``)."""
    if not attributes:
        return "[]"
    # keys() and values() rather than items(): the same pairs, a third cheaper on a FrozenAttrs.
    return _pairs_json(attributes.keys(), attributes.values())


def _pairs_json(keys_of: Iterable[Any], values_of: Iterable[Any]) -> str:
    """Keys and their values (in step) as the JSON text of a list of OTLP ``KeyValue``."""
    # One string grown in place, no list per span: objects the cyclic collector tracks would
    # make it run every few hundred spans, and walk every stored span when it reaches the
    # oldest generation.
    text = "["
    keys = _KEYS
    quote = _quote
    for key, value in zip(keys_of, values_of, strict=True):
        head = keys.get(key) if key.__class__ is str else None
        if head is None:
            head = _key(key)
        cls = value.__class__
        if cls is str:
            text += f'{head}{{"stringValue":{quote(value) if value.isascii() else quote(_text(value))}}}}},'
        elif cls is int:
            text += f'{head}{{"intValue":"{value}"}}}},'  # str() of an exact int, as otlp's str(value)
        elif cls is float:
            if value - value == 0.0:  # finite (an infinity or NaN gives NaN): written as json.dumps does
                text += f'{head}{{"doubleValue":{value!r}}}}},'
            else:
                text += head + _NON_FINITE[_FLOAT(value)] + ","
        elif cls is bool:
            text += head + ('{"boolValue":true}},' if value else '{"boolValue":false}},')
        else:
            text += head + _dumps(any_value(value)) + "},"
    return text[:-1] + "]" if len(text) > 1 else "[]"


def _hex64(value: int) -> str:
    return value.to_bytes(8, "big").hex()


# SpanKind as text, indexed by the member itself (an IntEnum: int() of it, or a dict keyed by it, is slower).
_KIND = [str(k) for k in range(max(SpanKind) + 1)]


def _trace_head(tid: int) -> tuple[str, str, int]:
    """What a span's trace id decides: the text before its span id, the text after it, and its flags."""
    head = '{"traceId":"' + tid.to_bytes(16, "big").hex() + '","spanId":"'
    if tid.__class__ is int:  # a trace started here: random id, no trace state (see spans._TraceId)
        return head, '"', _FLAGS_RANDOM
    trace_state, random = trace_state_of(tid)
    return head, '","traceState":' + _string(trace_state) if trace_state else '"', _FLAGS_RANDOM if random else _FLAGS


_MASK64 = (1 << 64) - 1
_PARENT = ',"parentSpanId":"'
_NO_EXTRA = ',"events":[],"links":[]'


def _spans_json(spans: Iterable[Span]) -> str:
    """Spans as the JSON text of their ``otlp.encode_span`` objects, comma-separated."""
    out = []
    last: Any = None  # the spans of one trace share one _trace_id object: its text is made once
    head = after = ""
    flags = 0
    max_name = LIMITS.max_name_length
    kinds = _KIND
    quote = _quote
    for span in spans:
        tid = span._trace_id
        if tid is not last:
            head, after, flags = _trace_head(tid)
            last = tid
        parent = span._parent_id
        extra = span._extra
        name = span._name
        if len(name) > max_name:  # span() leaves the check to here, off its hot path
            name = name[:max_name]
        # The slots, not the properties that decode them (spans.Span): a finished
        # span usually has its span id, start and end packed in one int.
        start: Any = span._t0
        end: Any = span._t1
        if start is None:  # packed (attributes.pack)
            sid: Any = end >> 128
            start = (end >> 64) & _MASK64
            end &= _MASK64
        else:
            sid = span._sid
        if end is None or end < start:
            end = start
        data = span._attr_data
        if data.__class__ is tuple:  # packed own attributes: the keys; the values in slots
            n = len(data)
            values: tuple[Any, ...] = (
                (span._attr0, span._attr1, span._attr2)
                if n == 3
                else (span._attr0, span._attr1)
                if n == 2
                else (span._attr0,)
                if n == 1
                else ()
            )
            attrs_text = _pairs_json(data, values)
        else:
            attrs_text = attributes_json(data)
        # One f-string per span: a single join of its pieces, not a new string per piece.
        text = (
            f"{head}{sid.to_bytes(8, 'big').hex()}{after}"
            f"{'' if parent is None else _PARENT + parent.to_bytes(8, 'big').hex() + chr(34)}"
            f',"flags":{flags if extra is None or not extra.remote_parent else flags | _IS_REMOTE},'
            f'"name":{quote(name) if name.isascii() else _string(name)},"kind":{kinds[span._kind]},'
            f'"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",'
            f'"attributes":{attrs_text}'
            f"{_NO_EXTRA if extra is None else _extra_json(extra)}"
        )
        if extra is None:  # no extra part: status UNSET (spans.Span._status)
            out.append(text + ',"status":{}}')
            continue
        status = extra.status
        code = status.code
        if not code:
            out.append(text + ',"status":{}}')
        elif code == 2 and status.description:
            out.append(f'{text},"status":{{"code":{int(code)},"message":{_string(status.description)}}}}}')
        else:
            out.append(f'{text},"status":{{"code":{int(code)}}}}}')
    return ",".join(out)


def _dropped_attributes(item: Any) -> str:
    """An event's or link's ``droppedAttributesCount`` member, or nothing when none was dropped."""
    n = item.dropped_attributes_count
    return f',"droppedAttributesCount":{n}' if n else ""


def _extra_json(extra: Any) -> str:
    """The dropped counts, events and links of a span that has an ``_Extra``, as otlp orders them."""
    dropped = extra.dropped
    text = f',"droppedAttributesCount":{dropped[0]}' if dropped and dropped[0] else ""
    events = extra.events
    if events:
        parts = []
        for ev in events:
            parts.append(
                f'{{"timeUnixNano":"{ev.timestamp}","name":{_string(ev.name)},'
                f'"attributes":{attributes_json(ev.attributes)}{_dropped_attributes(ev)}}}'
            )
        text += ',"events":[' + ",".join(parts) + "]"
    else:
        text += ',"events":[]'
    if dropped and dropped[1]:
        text += f',"droppedEventsCount":{dropped[1]}'
    links = extra.links
    if links:
        parts = []
        for lk in links:
            ctx = lk.context
            flags = _HAS_IS_REMOTE | (_IS_REMOTE if ctx.is_remote else 0) | ctx.trace_flags
            parts.append(
                f'{{"traceId":"{ctx.trace_id.to_bytes(16, "big").hex()}","spanId":"{_hex64(ctx.span_id)}",'
                f'"traceState":{_string(ctx.trace_state)},"attributes":{attributes_json(lk.attributes)},'
                f'"flags":{flags}{_dropped_attributes(lk)}}}'
            )
        text += ',"links":[' + ",".join(parts) + "]"
    else:
        text += ',"links":[]'
    if dropped and dropped[2]:
        text += f',"droppedLinksCount":{dropped[2]}'
    return text


def stream(
    traces: Iterable[Iterable[Span]], resource: Mapping[str, Any], chunk: int = 256, errors: str = "backslashreplace"
) -> Iterator[bytes]:
    """The ExportTraceServiceRequest of ``traces`` as UTF-8 JSON, piece by piece (``chunk`` spans at a time).

    This process's spans come under ``resource`` and autotrace's scope, received
    ones under their own (``otlp.group_by_origin``). Each piece holds one run of
    spans with the brackets and headers around it, so a small answer is one
    piece (one send on the server). ``errors`` is how text that is not valid
    UTF-8 (a lone surrogate in a received resource) is written: the server
    writes it as a JSON escape, an exporter may ask for "strict".
    """
    text = ""
    held = False  # whether text holds a run of spans already
    for part, spans in _parts(traces, resource, chunk):
        if spans:
            if held:
                data, text = text.encode("utf-8", errors), ""  # the text is let go before the bytes are sent
                yield data
            held = True
        text += part
    yield text.encode("utf-8", errors)


def _parts(traces: Iterable[Iterable[Span]], resource: Mapping[str, Any], chunk: int) -> Iterator[tuple[str, bool]]:
    """The document's text in order: (a run of ``chunk`` spans, True) or (the text between runs, False)."""
    groups = _resource_spans(group_by_origin(s for trace in traces for s in trace), resource)
    if not groups:
        yield '{"resourceSpans":[]}', False
        return
    yield '{"resourceSpans":[', False
    for r, (res, scopes) in enumerate(groups):
        yield (',{"resource":' if r else '{"resource":') + _dumps(res) + ',"scopeSpans":[', False
        for c, (scope, spans) in enumerate(scopes):
            yield (',{"scope":' if c else '{"scope":') + _dumps(scope) + ',"spans":[', False
            for i in range(0, len(spans), chunk):
                piece = _spans_json(spans[i : i + chunk])
                yield (piece if not i else "," + piece), True
            yield "]}", False
        yield "]}", False
    yield "]}", False


def encode(spans: Iterable[Span], resource: Mapping[str, Any], errors: str = "strict") -> bytes:
    """Spans as one ExportTraceServiceRequest in UTF-8 JSON bytes (``json.dumps(otlp.encode_spans(...))``)."""
    return b"".join(stream([spans], resource, 1 << 30, errors))
