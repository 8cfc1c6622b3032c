"""JSON Lines files of OTLP/JSON requests: writing them, reading them back into a store.

Each line is one ``ExportTraceServiceRequest``, so a file can be replayed to a
collector line by line, or loaded with ``load_jsonl_into`` and served by ``/traces``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..otlp import encode_spans
from ..spans import _UNSET_STATUS, Link, Span, SpanContext, SpanEvent, SpanKind, Status, StatusCode, continued_trace_id
from ..tracer import internal_error, resource_attributes

if TYPE_CHECKING:
    from ..store import TraceStore

__all__ = ["FileExporter", "decode_spans", "load_jsonl_into", "read_jsonl"]


class FileExporter:
    """Appends one OTLP/JSON ``ExportTraceServiceRequest`` per line to ``path``, one line per batch.

    Each line goes out in a single ``write`` on a file opened with O_APPEND, so
    threads and forked processes sharing the file never interleave lines.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise ValueError(f"path must be a file path; got {path!r}") from None
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path must be a non-empty file path; got {path!r}")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder of {self.path!r} does not exist")
        if os.path.isdir(self.path):
            raise ValueError(f"{self.path!r} is a folder, not a file")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._counts = {"exported": 0, "failed": 0}

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """Append ``spans`` as one line; True once the line is written."""
        if not spans:
            return True
        try:
            doc = encode_spans(spans, resource_attributes())
            line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
            data = memoryview(line.encode("utf-8"))
            with self._lock:
                if self._fd is None:
                    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                    self._fd = os.open(self.path, flags, 0o644)
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
        except Exception as exc:
            internal_error(f"file export to {self.path}", exc)
            self._counts["failed"] += len(spans)
            return False
        self._counts["exported"] += len(spans)
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the file (a later export opens it again)."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the descriptor is shared; O_APPEND keeps lines whole
        for key in self._counts:
            self._counts[key] = 0

    def stats(self) -> dict[str, int]:
        """Counters: spans written and spans that could not be written."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"FileExporter({self.path!r})"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The OTLP/JSON requests in a JSON Lines file, one dict per non-blank line."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{os.fspath(path)}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans", []), list):
                raise ValueError(f"{os.fspath(path)}:{number}: not an OTLP ExportTraceServiceRequest")
            out.append(doc)
    return out


def load_jsonl_into(store: TraceStore, path: str | os.PathLike[str]) -> int:
    """Rebuild the spans of a JSON Lines file into ``store``; returns how many were loaded."""
    spans: list[Span] = []
    for number, doc in enumerate(read_jsonl(path), 1):
        try:
            spans.extend(decode_spans(doc))
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: request {number}: {exc}") from None
    store.add_many(spans)
    return len(spans)


# -- OTLP/JSON back to spans ----------------------------------------------------------------


def decode_spans(doc: Mapping[str, Any]) -> list[Span]:
    """The spans of one OTLP/JSON request, rebuilt as finished ``Span`` objects.

    Encoding a rebuilt span gives back the span object it was read from.
    """
    out: list[Span] = []
    for rs in _list(doc, "resourceSpans"):
        for ss in _list(rs, "scopeSpans"):
            for item in _list(ss, "spans"):
                out.append(_decode_span(item))
    return out


def _list(obj: Any, key: str) -> list[Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected an object holding {key!r}; got {type(obj).__name__}")
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list")
    return value


def _id(value: Any, size: int, what: str) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is missing")
    if len(value) == size * 2:
        try:
            number = int(value, 16)
        except ValueError:
            raise ValueError(f"{what} is not hex: {value!r}") from None
    else:  # the standard protobuf JSON mapping uses base64
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size:
            raise ValueError(f"{what} must be {size * 2} hex characters; got {value!r}")
        number = int.from_bytes(raw, "big")
    if number == 0:
        raise ValueError(f"{what} is all zeros")
    return number


def _value(any_value: Mapping[str, Any]) -> Any:
    if "stringValue" in any_value:
        return str(any_value["stringValue"])
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        number = any_value["doubleValue"]
        return float(number) if not isinstance(number, str) else float(number.replace("Infinity", "inf"))
    if "arrayValue" in any_value:
        return [_value(v) for v in (any_value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in any_value:
        return _attributes((any_value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in any_value:
        return base64.b64decode(any_value["bytesValue"])
    return None


def _attributes(items: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items or ():
        value = _value(kv.get("value") or {})
        if value is not None:
            out[str(kv["key"])] = value
    return out


def _decode_span(item: Any) -> Span:
    if not isinstance(item, Mapping):
        raise ValueError(f"a span must be an object; got {type(item).__name__}")
    try:
        # Built slot by slot, like the tracer does, so nothing is re-validated,
        # truncated or re-timed: the span comes back exactly as it was written.
        s = object.__new__(Span)
        s._name = str(item.get("name", ""))
        try:
            s._kind = SpanKind(int(item.get("kind") or 1))
        except ValueError:
            s._kind = SpanKind.INTERNAL
        s._trace_id = _id(item.get("traceId"), 16, "traceId")
        s._span_id = _id(item.get("spanId"), 8, "spanId")
        parent = item.get("parentSpanId")
        s._parent_id = _id(parent, 8, "parentSpanId") if parent else None
        s._extra = None  # before the folded fields below are set (see Span.__slots__)
        # Span flags (otlp.py): random trace id (0x02), parent remote (0x200);
        # a line written without them reads as a trace started here.
        flags = int(item.get("flags") or 0)
        random = not flags & 0x100 or bool(flags & 0x02)
        s._trace_id = continued_trace_id(s._trace_id, str(item.get("traceState") or ""), random)
        s._remote_parent = bool(flags & 0x200)
        s._start = int(item.get("startTimeUnixNano") or 0)
        s._end = max(int(item.get("endTimeUnixNano") or 0), s._start)
        s._attrs = _attributes(item.get("attributes") or [])
        s._token = None
        dropped = [int(item.get(k) or 0) for k in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount")]
        s._dropped = dropped if any(dropped) else None
        events = [
            SpanEvent(
                str(ev.get("name", "")),
                _attributes(ev.get("attributes") or []),
                int(ev.get("timeUnixNano") or 0),
                int(ev.get("droppedAttributesCount") or 0),
            )
            for ev in item.get("events") or []
        ]
        s._events = events or None
        links = []
        for lk in item.get("links") or []:
            flags = int(lk.get("flags") or 0)
            context = SpanContext(
                _id(lk.get("traceId"), 16, "link traceId"),
                _id(lk.get("spanId"), 8, "link spanId"),
                bool(flags & 0x1),
                bool(flags & 0x200),
                str(lk.get("traceState") or ""),
                bool(flags & 0x02),
            )
            links.append(
                Link(context, _attributes(lk.get("attributes") or []), int(lk.get("droppedAttributesCount") or 0))
            )
        s._links = links or None
        status = item.get("status") or {}
        code = int(status.get("code") or 0)
        if code in (1, 2):
            s._status = Status(
                StatusCode(code), str(status["message"]) if code == 2 and status.get("message") else None
            )
        else:
            s._status = _UNSET_STATUS
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"malformed span ({exc!r})") from None
    return s
