"""The background server against a hostile client: what it holds per connection stays bounded.

Real servers on loopback (port 0), raw sockets for what a well-behaved client
would never send.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import pytest

import autotrace
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


def _workers() -> list[threading.Thread]:
    """The server's connection threads still alive."""
    return [t for t in threading.enumerate() if t.name == "autotrace-server-worker" and t.is_alive()]


def _wait_for(check: Any, timeout: float = 10.0) -> bool:
    """Poll ``check`` until true or ``timeout`` (no timing is asserted: only that it happens)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return bool(check())


def test_stop_answers_a_client_still_sending_its_request_and_ends_its_worker() -> None:
    """A connection half-way through its request line when stop() is called gets a 503 and its thread ends."""
    before = set(_workers())
    handle = start_in_background(port=0, request_timeout=60.0, idle_timeout=60.0)
    try:
        with socket.create_connection((handle.host, handle.port), timeout=30) as sock:
            sock.sendall(b"GET /hea")
            assert _wait_for(lambda: handle.connections == 1)
            handle.stop()
            answer = _answer(sock)  # before: nothing until idle_timeout, and the worker waited with it
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]
        assert b'"status":503' in answer
        assert set(_workers()) <= before  # joined by stop()
    finally:
        handle.stop()


def test_stop_waits_for_an_answer_being_made_and_it_is_sent_whole() -> None:
    """A request whose app runs when stop() is called is answered whole, and stop() returns after it."""
    entered = threading.Event()
    finished = threading.Event()
    handle_box: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        entered.set()
        # Answer only once stop() has closed the listening socket.
        _wait_for(lambda: handle_box[0]._server.socket.fileno() == -1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        finished.set()
        return [b"whole"]

    handle = start_in_background(port=0, app=app)
    handle_box.append(handle)
    with socket.create_connection((handle.host, handle.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert entered.wait(30)  # the request is in and its app runs (before, stop() would answer 503)
        handle.stop(timeout=20.0)
        assert finished.is_set()
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"whole")


def test_a_client_that_stops_reading_a_large_answer_leaves_no_traceback_and_frees_its_slot(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Past idle_timeout the answer to a client that reads nothing is dropped quietly; its slots come back."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=10_000))
    for i in range(3000):  # about 9 MB of JSON: more than the socket buffers on both sides hold
        with autotrace.span(f"r{i}", attributes={"text": "y" * 3000}):
            pass
    with start_in_background(port=0, idle_timeout=0.5) as handle:
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect((handle.host, handle.port))
            sock.sendall(b"GET /traces HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _wait_for(lambda: handle.connections == 1)
            assert _wait_for(lambda: handle.connections == 0, 60.0), "the stalled answer was never given up"
        finally:
            sock.close()
        assert fetch(handle.url, "/traces?limit=1").status == 200  # its encode slot was given back
    err = capfd.readouterr().err
    assert "Traceback" not in err and "TimeoutError" not in err, err[-2000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
def test_stop_in_a_forked_child_leaves_the_parents_connections_alone() -> None:
    """A child forked while a request is being sent may stop() its copy: the parent's client is still answered."""
    with start_in_background(port=0, request_timeout=60.0) as handle:
        with socket.create_connection((handle.host, handle.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert _wait_for(lambda: handle.connections == 1)
            pid = os.fork()
            if pid == 0:  # the child: stop its copy of the server, then leave at once
                try:
                    handle.stop(timeout=1.0)
                finally:
                    os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
            sock.sendall(b"Host: localhost\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.0 200 "), answer[:80]
