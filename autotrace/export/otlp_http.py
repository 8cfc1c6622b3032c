"""OTLP/HTTP exporter on the standard library: JSON by default, protobuf when installed.

This module is the transport (requests, retries, the connection); its settings
are read by ``otlp_settings`` and protobuf messages built by ``_protobuf``.

Retries follow the OTLP specification and OpenTelemetry Python: only 429, 502,
503, 504 and connection failures are retried, with exponential backoff (about
1, 2, 4, 8, 16 s, ±20 % jitter) or the server's ``Retry-After``, and all of it
inside the export timeout. Any other answer drops the batch and counts it. A
partial success is logged, never retried. The status line decides, even when
the headers are more than http.client reads: a 2xx is never sent again. A TLS
failure (a certificate, or an https:// URL for a plain-http port) is not
retried. Each kind of failure is logged once.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _otlp_json
from .._errors import internal_error
from .._resource import current as resource_attributes
from .._version import __version__
from ..otlp import encode_spans
from ..redaction import redact_userinfo
from ._base import Exporter
from ._protobuf import protobuf_classes
from .otlp_settings import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT
from .otlp_settings import ExportError as ExportError
from .otlp_settings import (
    _resolve_compression,
    _resolve_encoding,
    _resolve_endpoint,
    _resolve_headers,
    _resolve_proxy,
    _resolve_timeout,
    _tls_context,
)

if TYPE_CHECKING:
    from ..spans import Span

__all__ = ["DEFAULT_ENDPOINT", "ExportError", "OTLPHttpExporter", "parse_retry_after"]

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""Largest request body sent; bigger batches are split (collectors refuse 20-64 MiB)."""
_MAX_RESPONSE_BYTES = 1024 * 1024
_MAX_INTERIM_ANSWERS = 16
# Headers that describe the body: a configured one would be sent beside the exporter's own
# (http.client matches no spelling), and a stale Content-Length would break the request's framing.
_FRAMING_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "transfer-encoding"})
_USER_AGENT = f"autotrace/{__version__}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():  # str.isdigit() also takes '²' and '٣', which float() refuses
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class OTLPHttpExporter(Exporter):
    """Sends spans to an OpenTelemetry collector (or Jaeger, Tempo, Phoenix) over OTLP/HTTP.

    Arguments left as None come from the standard variables in ``env`` (default
    ``os.environ``): ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as given) or
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (+ ``/v1/traces``), ``..._HEADERS``,
    ``..._TIMEOUT`` (ms), ``..._COMPRESSION``, ``..._PROTOCOL``, and for TLS
    ``..._CERTIFICATE`` (CA bundle to trust), ``..._CLIENT_CERTIFICATE`` and
    ``..._CLIENT_KEY`` (mutual TLS). ``endpoint`` is the full URL. ``timeout``
    bounds one whole export, retries included.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | str | None = None,
        timeout: float | None = None,
        compression: str | None = None,
        encoding: str | None = None,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        certificate_file: str | None = None,
        client_certificate_file: str | None = None,
        client_key_file: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.endpoint = _resolve_endpoint(endpoint, env)
        parts = urllib.parse.urlsplit(self.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # What logs and repr show: no user:password and no query string (they may hold secrets).
        netloc = parts.netloc.rpartition("@")[2]
        self._shown = redact_userinfo(urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        self.headers = _resolve_headers(headers, env)
        if parts.username is not None and not any(k.lower() == "authorization" for k in self.headers):
            # user:password@ in the endpoint is Basic authentication, as curl, urllib3 and
            # OpenTelemetry's own exporter (through requests) send it; dropping it meant a 401 per batch.
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers = {**self.headers, "Authorization": f"Basic {token}"}
        self.timeout = _resolve_timeout(timeout, env)
        self.compression = _resolve_compression(compression, env)
        self.encoding = _resolve_encoding(encoding, env)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0; got {max_retries!r}")
        if isinstance(backoff_base, bool) or not isinstance(backoff_base, (int, float)) or not backoff_base >= 0:
            raise ValueError(f"backoff_base must be a number of seconds >= 0; got {backoff_base!r}")
        if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be an integer >= 1024; got {max_request_bytes!r}")
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.max_request_bytes = max_request_bytes
        self._pb: Any = protobuf_classes() if self.encoding == "protobuf" else None
        self._content_type = "application/x-protobuf" if self._pb else "application/json"
        self._abort = threading.Event()
        self._conn_lock = threading.Lock()
        self._idle: http.client.HTTPConnection | None = None  # kept alive between exports
        self._active: set[http.client.HTTPConnection] = set()  # in a request now (shutdown aborts them)
        self._ssl = _tls_context(self._https, certificate_file, client_certificate_file, client_key_file, env)
        self._proxy = _resolve_proxy(parts.scheme, self._host, env)
        # Through a plain-http proxy the request line carries the whole URL (RFC 9112 3.2.2).
        plain_proxy = self._proxy is not None and not self._https
        self._target = f"http://{netloc}{self._path}" if plain_proxy else self._path
        self._counts = {"exported": 0, "failed": 0, "rejected": 0, "retried": 0, "requests": 0}

    # -- export -----------------------------------------------------------------------

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """Send ``spans``; True when the collector took them all (retries included)."""
        total = len(spans)
        if not total:
            return True
        if self._abort.is_set():  # e.g. configure(exporters=[e]) again after shutdown(): say why nothing is sent
            return self._give_up(total, "shut down", "this exporter was shut down; make a new one to send again")
        limit = self.timeout if timeout is None else min(self.timeout, max(0.0, timeout))
        deadline = time.monotonic() + limit
        try:
            bodies = self._encode(list(spans), resource_attributes())
        except Exception as exc:
            internal_error("OTLP export: encoding spans", exc)
            self._counts["failed"] += total
            return False
        ok = len(bodies) > 0 and sum(n for _, n in bodies) == total
        for body, count in bodies:
            ok = self._send(body, count, deadline) and ok
        return ok

    def _encode(self, spans: list[Span], resource: Mapping[str, Any]) -> list[tuple[bytes, int]]:
        """Encoded request bodies with their span counts, each under max_request_bytes."""
        if self._pb is not None:
            body = self._pb.request(encode_spans(spans, resource)).SerializeToString()
        else:
            body = _otlp_json.encode(spans, resource)
        if len(body) <= self.max_request_bytes:
            return [(body, len(spans))]
        if len(spans) == 1:
            self._counts["failed"] += 1
            internal_error(
                "OTLP export: a span too large to send",
                ExportError(f"span {spans[0].name!r} encodes to {len(body)} bytes > {self.max_request_bytes}"),
            )
            return []
        half = len(spans) // 2
        return self._encode(spans[:half], resource) + self._encode(spans[half:], resource)

    def _send(self, body: bytes, count: int, deadline: float) -> bool:
        """POST one body, retrying what the policy allows before ``deadline``."""
        counts = self._counts
        headers = {"User-Agent": _USER_AGENT}
        for key, value in self.headers.items():
            lower = key.lower()
            if lower == "user-agent":
                del headers["User-Agent"]  # theirs replaces ours, never sent beside it
            elif lower in _FRAMING_HEADERS:
                continue  # the body's own type, encoding and length are the exporter's to say
            headers[key] = value
        headers["Content-Type"] = self._content_type
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        attempt = 0
        while True:
            if self._abort.is_set():  # shut down meanwhile (e.g. between the bodies of a split batch)
                return self._give_up(count, "shutdown", "the exporter was shut down before this request")
            left = deadline - time.monotonic()
            if left <= 0:
                return self._give_up(count, "timeout", f"no answer within the {self.timeout:g} s export timeout")
            retry_after: float | None = None
            try:
                counts["requests"] += 1
                status, reply_headers, reply = self._post(body, headers, left)
            except ssl.SSLCertVerificationError as exc:  # a misconfiguration: retrying will not help
                return self._give_up(count, "TLS certificate", f"{type(exc).__name__}: {exc}")
            except ssl.SSLError as exc:
                if self._abort.is_set():
                    return self._give_up(count, "shutdown", "the exporter was shut down mid-request")
                if not isinstance(exc, _TRANSIENT_TLS):
                    # The peer does not speak TLS as asked (an https:// URL for a plain-http port, most
                    # often): it will answer the same way on every retry, so say it now, once.
                    return self._give_up(count, "TLS error", _tls_reason(exc))
                kind, reason = "connection error", f"{type(exc).__name__}: {exc}"
            except (OSError, http.client.HTTPException) as exc:
                if self._abort.is_set():
                    return self._give_up(count, "shutdown", "the exporter was shut down mid-request")
                kind = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else "connection error"
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    self._read_partial_success(reply, reply_headers, count)
                    return True
                reason = f"HTTP {status}: {_snippet(reply)}"
                if status not in RETRYABLE_STATUS:
                    return self._give_up(count, f"HTTP {status}", reason)
                kind = f"HTTP {status}"
                retry_after = parse_retry_after(reply_headers.get("Retry-After"))
            if attempt >= self.max_retries:
                return self._give_up(count, kind, f"{reason} (after {attempt} retries)")
            if retry_after is not None:
                delay = retry_after
            else:
                delay = self.backoff_base * (2**attempt) * random.uniform(0.8, 1.2)
            if time.monotonic() + delay >= deadline:
                return self._give_up(count, kind, f"{reason} (next retry in {delay:.1f} s is past the export timeout)")
            if self._abort.wait(delay):
                return self._give_up(count, "shutdown", "the exporter was shut down while waiting to retry")
            attempt += 1
            counts["retried"] += 1

    def _give_up(self, count: int, kind: str, reason: str) -> bool:
        self._counts["failed"] += count
        internal_error(
            f"OTLP export to {self._shown} ({kind})",
            ExportError(f"dropped {count} spans: {reason}"),
        )
        return False

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection to the collector, or to the proxy that reaches it."""
        proxy = self._proxy
        host, port = (self._host, self._port) if proxy is None else (proxy.host, proxy.port)
        conn: http.client.HTTPConnection
        if not self._https:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.response_class = _Response
            return conn
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        conn.response_class = _Response
        if proxy is not None:  # CONNECT tunnel; TLS (and its hostname check) is end to end
            conn.set_tunnel(self._host, self._port, headers=proxy.headers)
        return conn

    def _post(self, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, Any, bytes]:
        """One HTTP POST, on the kept-alive connection when there is one, finished within ``timeout`` seconds.

        The socket timeout bounds each read or write; a watchdog timer bounds the
        whole request (a collector drip-feeding its answer would otherwise hold
        the worker for many timeouts): at the deadline it shuts the socket down,
        and the request fails with TimeoutError.

        A kept-alive connection the collector has since closed fails before any
        answer: that attempt is made once more on a new connection, at no
        retry's cost (what urllib3 and requests do too).
        """
        with self._conn_lock:
            conn, self._idle = self._idle, None
        reused = conn is not None
        if conn is None:
            conn = self._connect(timeout)
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        if self._proxy is not None and not self._https:
            headers = {**headers, **self._proxy.headers}
        watch = _Watch(conn)
        timer = threading.Timer(timeout, self._expire, (watch,))
        timer.name = "autotrace-export-watchdog"
        timer.daemon = True
        timer.start()
        try:
            while True:
                with self._conn_lock:
                    self._active.add(conn)
                    watch.conn = conn
                sent = False  # the proxy's answer to CONNECT is read with the same response class
                try:
                    if conn.sock is None:
                        # Connecting is one socket operation, bounded by the socket timeout; the
                        # watchdog cannot cut it (no socket yet), so look at the clock after it.
                        conn.connect()
                    if watch.expired:
                        raise TimeoutError
                    try:
                        conn.request("POST", self._target, body=body, headers=dict(headers))
                    except (BrokenPipeError, ConnectionResetError) as exc:
                        if reused:
                            raise  # an idle connection's last words (a 408) are not this request's answer
                        # A collector may answer before reading the whole body (413, 401, 400) and close:
                        # that answer, not the broken pipe, says what happened (curl reads it too).
                        sent = True
                        response = _early_answer(conn, exc)
                    else:
                        sent = True
                        response = conn.getresponse()
                    try:
                        reply = response.read(_MAX_RESPONSE_BYTES)
                    except (OSError, http.client.HTTPException, ValueError):
                        # The status line was read whole, and it decides. After a 2xx the collector took the
                        # batch: a body cut short, garbled or drip-fed past the deadline does not undo that,
                        # and sending again would store it twice. A 4xx stays a 4xx (not a connection error
                        # to retry); a 503 is retried as a 503.
                        with self._conn_lock:
                            watch.done = True
                        self._release(conn, keep=False)
                        return response.status, response.headers, b""
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                    self._release(conn, keep=False)
                    if not reused or self._abort.is_set() or watch.expired:
                        raise
                    reused = False  # went stale while idle: once more, on a new connection
                    conn = self._connect(max(0.001, timeout - (time.monotonic() - watch.started)))
                    continue
                except _UnreadableHeaders as exc:
                    # The status line was read; only the headers were not (more than http.client takes).
                    # The status decides: a 2xx took the batch, and sending it again would store it twice.
                    self._release(conn, keep=False)
                    if not sent:  # a proxy's CONNECT answer: the collector has not seen the batch
                        raise http.client.HTTPException(str(exc)) from exc
                    with self._conn_lock:
                        watch.done = True
                    return exc.status, http.client.HTTPMessage(), b""
                except BaseException:
                    self._release(conn, keep=False)
                    raise
                with self._conn_lock:
                    watch.done = True  # from here on the watchdog leaves the connection alone
                if watch.expired and not 200 <= response.status < 300:
                    # The answer was cut short (or may have been): not to be trusted. A 2xx status
                    # line was read whole, and it alone says the batch was taken.
                    self._release(conn, keep=False)
                    raise TimeoutError
                # Kept only when the answer was read to its end and the server keeps the connection open.
                self._release(conn, keep=response.isclosed() and not response.will_close and not watch.expired)
                return response.status, response.headers, reply
        except (OSError, http.client.HTTPException) as exc:
            if watch.expired and not self._abort.is_set():
                raise TimeoutError(f"no complete answer within {timeout:.3g} s") from exc
            raise
        finally:
            timer.cancel()

    def _expire(self, watch: _Watch) -> None:
        """The watchdog: the request's time is up, so cut its connection (wakes a blocked recv or send)."""
        with self._conn_lock:
            if watch.done:
                return
            watch.expired = True
            sock = watch.conn.sock if watch.conn in self._active else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _release(self, conn: http.client.HTTPConnection, *, keep: bool) -> None:
        """Done with ``conn``: kept for the next export when it can be, closed otherwise."""
        with self._conn_lock:
            self._active.discard(conn)
            if keep and self._idle is None and not self._abort.is_set():
                self._idle = conn
                return
        conn.close()

    def _read_partial_success(self, reply: bytes, headers: Any, count: int) -> None:
        rejected, message = 0, ""
        try:
            if reply and self._pb is not None and "protobuf" in (headers.get("Content-Type") or "protobuf"):
                response = self._pb.response()
                response.ParseFromString(reply)
                rejected = int(response.partial_success.rejected_spans)
                message = str(response.partial_success.error_message)
            elif reply:
                partial = json.loads(reply).get("partialSuccess") or {}
                rejected = int(partial.get("rejectedSpans") or 0)
                message = str(partial.get("errorMessage") or "")
        except Exception:  # an unreadable success body still means success
            rejected, message = 0, ""
        rejected = min(max(rejected, 0), count)
        self._counts["rejected"] += rejected
        self._counts["exported"] += count - rejected
        if rejected or message:
            internal_error(
                f"OTLP export to {self._shown} (partial success)",
                ExportError(f"the collector rejected {rejected} of {count} spans: {message or 'no reason given'}"),
            )

    # -- lifecycle --------------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop: abort retry waits and any request in flight; later exports fail at once."""
        self._abort.set()
        with self._conn_lock:
            active, idle, self._idle = list(self._active), self._idle, None
        for conn in active:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
                except OSError:
                    pass
        if idle is not None:
            idle.close()

    def after_fork(self) -> None:
        """In a forked child: new locks, the parent's connections forgotten, counters from zero."""
        # Locks and events may have been held by the parent's worker at fork time.
        aborted = self._abort.is_set()
        self._abort = threading.Event()
        if aborted:
            self._abort.set()
        self._conn_lock = threading.Lock()
        # The parent's sockets are the parent's: forget them here, never close them.
        self._idle = None
        self._active = set()
        for key in self._counts:
            self._counts[key] = 0

    def stats(self) -> dict[str, int]:
        """Counters: spans exported, failed, rejected by the collector, retried requests, requests made."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"OTLPHttpExporter({self._shown!r}, encoding={self.encoding!r}, compression={self.compression!r})"


def _early_answer(conn: http.client.HTTPConnection, error: OSError) -> http.client.HTTPResponse:
    """The answer a collector sent before it stopped reading the request, or the send ``error`` again."""
    try:
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        raise error from None


class _Watch:
    """One request's watchdog state: its connection now, and whether its time ran out."""

    __slots__ = ("conn", "done", "expired", "started")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.started = time.monotonic()
        self.done = False
        self.expired = False


class _UnreadableHeaders(http.client.HTTPException):
    """An answer whose status line was read but whose headers http.client would not parse."""

    def __init__(self, status: int, cause: Exception) -> None:
        super().__init__(f"HTTP {status} with unreadable headers ({cause})")
        self.status = status


class _Response(http.client.HTTPResponse):
    """http.client's response, telling the status apart when only the headers are unreadable.

    http.client refuses an answer with more than 100 header lines (or one over 64 KiB) with
    an HTTPException that hides the status it had read: a collector's 200 would look like a
    connection failure, and the batch it stored would be sent again.
    """

    def _read_status(self) -> tuple[str, int, str]:
        # An interim answer (102 Processing, 103 Early Hints from a CDN in front of the collector)
        # comes before the final one, which decides; http.client only skips 100 Continue, and
        # would take the 103 for the answer and drop a batch the collector then took with a 200.
        for _ in range(_MAX_INTERIM_ANSWERS):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 101 < status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # its headers, up to the blank line
        raise http.client.HTTPException(f"more than {_MAX_INTERIM_ANSWERS} interim (1xx) answers")

    def begin(self) -> None:
        try:
            super().begin()
        except http.client.UnknownProtocol:
            raise
        except http.client.HTTPException as exc:
            status = self.status
            if self.headers is None and isinstance(status, int) and 100 <= status <= 599:
                raise _UnreadableHeaders(status, exc) from exc
            raise


# Failures of a TLS connection that a retry may cure: the peer closed it mid-way (a restart, a load balancer).
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS connection failed, with the likely cause when the peer is not speaking TLS."""
    text = f"{type(exc).__name__}: {exc}"
    if getattr(exc, "reason", None) in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
        text += "; the endpoint does not speak TLS: is it a plain http:// port?"
    return text


def _snippet(reply: bytes) -> str:
    text = reply[:200].decode("utf-8", "replace").strip()
    return text or "(empty body)"
