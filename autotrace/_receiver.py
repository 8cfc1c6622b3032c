"""The OTLP/HTTP trace receiver behind ``POST /v1/traces``: read, decode, validate and store spans.

No web framework here: ``receive(store, environ)`` takes a WSGI environ and
gives back ``(status, content type, body)``. Bodies come as OTLP/JSON
(``application/json``) or binary protobuf (``application/x-protobuf``, decoded
with ``opentelemetry-proto``, the ``[proto]`` extra), optionally gzip-compressed.

Both encodings become the same finished ``Span`` objects as the ones the
tracer records, each keeping the resource and scope it was sent with
(``otlp.Origin``), so a trace whose spans come from several processes is one
trace in the store. The decoders are ``_decode_json`` (which also rebuilds
JSON Lines files, ``autotrace.export.files``) and ``_decode_protobuf``. A span
that cannot be rebuilt (a bad id, no name, a value of the wrong type) is
rejected alone and counted in the answer's ``partialSuccess``; the rest of its
batch is kept.
"""

from __future__ import annotations

import gc
import json
import threading
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._decode_json import decode_document, decode_json, decode_resource_spans, decode_span
from ._decode_protobuf import _proto, decode_protobuf
from ._decoded import MAX_VALUE_DEPTH, Decoded, ReceiveError, build_span

if TYPE_CHECKING:
    from .spans import Span
    from .store import TraceStore

__all__ = [
    "DEFAULT_MAX_RECEIVE_BYTES",
    "MAX_VALUE_DEPTH",
    "Decoded",
    "ReceiveError",
    "build_span",
    "decode_document",
    "decode_json",
    "decode_protobuf",
    "decode_resource_spans",
    "decode_span",
    "receive",
    "stats",
    "store_spans",
]

DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024
"""The largest request body POST /v1/traces takes, before and after gzip (413 past it)."""

_DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read off the socket so the 413 arrives

_lock = threading.Lock()
_counts = {"requests": 0, "accepted_spans": 0, "rejected_spans": 0, "refused_requests": 0}


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


# -- into the store -----------------------------------------------------------------------------


def store_spans(store: TraceStore, spans: Iterable[Span]) -> None:
    """File received spans by trace, with the store's limits, eviction and drop counts as for local spans."""
    store.add_many(spans)
