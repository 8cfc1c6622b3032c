"""A real OTLP/HTTP receiver on loopback that validates every request with opentelemetry-proto."""

from __future__ import annotations

import gzip
import http.client
import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.otlp_check import validate


def spans_of(message: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """The spans of a parsed request, ids checked for length and non-zero, as small dicts."""
    out = []
    for rs in message.resource_spans:
        resource = {kv.key: kv.value for kv in rs.resource.attributes}
        assert "service.name" in resource, "resource without service.name"
        for ss in rs.scope_spans:
            for sp in ss.spans:
                assert len(sp.trace_id) == 16 and any(sp.trace_id), "bad trace id"
                assert len(sp.span_id) == 8 and any(sp.span_id), "bad span id"
                assert len(sp.parent_span_id) in (0, 8), "bad parent span id"
                attrs = {kv.key: json_format.MessageToDict(kv.value) for kv in sp.attributes}
                out.append(
                    {
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex() or None,
                        "name": sp.name,
                        "attributes": attrs,
                        "flags": sp.flags,
                        "trace_state": sp.trace_state,
                    }
                )
    return out


class Receiver:
    """An OTLP/HTTP collector stand-in; ``script(...)`` queues answers, then it answers 200."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.actions: deque[dict[str, Any]] = deque()
        self.release = threading.Event()
        self.hanging = threading.Event()
        receiver = self

        self.closed = 0  # connections ended (by either side)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real collectors answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def finish(self) -> None:
                super().finish()
                with receiver.lock:
                    receiver.closed += 1

            def do_POST(self) -> None:
                receiver._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The traces endpoint."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def script(self, *actions: dict[str, Any]) -> None:
        """Answer the next requests with these actions (status/headers/body, hang, close)."""
        with self.lock:
            self.actions.extend(actions)

    def span_names(self) -> list[str]:
        with self.lock:
            return [s["name"] for s in self.spans]

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` spans have arrived."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.spans) >= count:
                    return True
            time.sleep(0.02)
        return False

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            action = self.actions.popleft() if self.actions else {}
        arrived = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        if action.get("close"):
            h.rfile.read(min(length, 16))
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            self._log(arrived, h, action, 0)
            return
        raw = h.rfile.read(length)
        if action.get("hang"):
            self._log(arrived, h, action, 0)
            self.hanging.set()
            self.release.wait(60)
            h.close_connection = True
            return
        ctype = h.headers.get("Content-Type", "")
        try:
            body = gzip.decompress(raw) if h.headers.get("Content-Encoding") == "gzip" else raw
            if ctype == "application/json":
                message = validate(json.loads(body))
            elif ctype == "application/x-protobuf":
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
            else:
                raise AssertionError(f"unexpected Content-Type {ctype!r}")
            spans = spans_of(message)
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._reply(h, 400, {}, b'{"error": "bad request"}')
            return
        status = action.get("status", 200)
        self._log(arrived, h, action, len(spans))
        if status == 200:
            with self.lock:
                self.spans.extend(spans)
        reply = action.get("body")
        if reply is None:
            if ctype == "application/x-protobuf":
                response = ExportTraceServiceResponse()
                partial = action.get("partial")
                if partial:
                    response.partial_success.rejected_spans = partial[0]
                    response.partial_success.error_message = partial[1]
                reply = response.SerializeToString()
            else:
                partial = action.get("partial")
                doc = (
                    {"partialSuccess": {"rejectedSpans": str(partial[0]), "errorMessage": partial[1]}}
                    if partial
                    else {}
                )
                reply = json.dumps(doc).encode()
        self._reply(h, status, action.get("headers", {}), reply, action.get("ctype") or ctype or "application/json")
        if action.get("close_after"):  # answered as keep-alive, then dropped: the client finds out later
            h.close_connection = True

    def _log(self, arrived: float, h: BaseHTTPRequestHandler, action: dict[str, Any], count: int) -> None:
        with self.lock:
            self.requests.append(
                {
                    "time": arrived,
                    "headers": dict(h.headers.items()),
                    "path": h.path,
                    "peer": h.client_address,
                    "action": action,
                    "spans": count,
                }
            )

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes, ctype: str = "application/json"
    ) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running OTLP receiver on 127.0.0.1 (port 0)."""
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    """An https receiver with a fresh self-signed certificate for 127.0.0.1, and that certificate's path."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    r = Receiver(tls=context)
    try:
        yield r, cert
    finally:
        r.stop()


class ForwardProxy:
    """A real HTTP forward proxy on loopback: absolute-URI requests and CONNECT tunnels; it logs what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _log(self) -> None:
                with proxy.lock:
                    proxy.seen.append(
                        {"method": self.command, "target": self.path, "auth": self.headers.get("Proxy-Authorization")}
                    )

            def do_POST(self) -> None:
                self._log()
                target = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
                upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
                try:
                    upstream.request("POST", target.path or "/", body=body, headers=headers)
                    answer = upstream.getresponse()
                    reply = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_CONNECT(self) -> None:
                self._log()
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                ends = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(ends, [], [], 30)
                        if not ready:
                            return
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        """host:port of the proxy."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    """A running forward proxy on 127.0.0.1 (port 0)."""
    p = ForwardProxy()
    try:
        yield p
    finally:
        p.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
