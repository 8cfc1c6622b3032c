"""The background server against a hostile client: what it holds per connection stays bounded.

Real servers on loopback (port 0), raw sockets for what a well-behaved client
would never send.
"""

from __future__ import annotations

import json
import socket

from autotrace.server import start_in_background
from tests.server_helpers import fetch


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_request_headers_past_the_total_budget_are_answered_431_before_all_are_read() -> None:
    """Header lines each under http.client's 64 KiB but past 64 KiB together (MAX_HEADER_BYTES): a JSON 431."""
    line = b"X-Filler: " + b"a" * 40_000 + b"\r\n"
    with start_in_background(port=0, request_timeout=60.0) as handle:
        with socket.create_connection((handle.host, handle.port), timeout=30) as sock:
            # No blank line after them: the server answers from what the budget let it read.
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + line * 2)
            answer = _answer(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split(b" ")[1] == b"431", head
        assert json.loads(body)["status"] == 431
        ok = fetch(handle.url, "/health", headers={f"X-Filler-{i}": "a" * 1000 for i in range(50)})
        assert ok.status == 200  # headers under the budget pass
