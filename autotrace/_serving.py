"""The background threaded WSGI server: a thread per connection, caps, deadlines, and its handle.

Standard library only (``wsgiref``, ``socketserver``): it serves any WSGI app.
``autotrace.server.start_in_background`` checks its arguments and serves the
/traces app with it.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import os
import queue
import socket
import socketserver
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_HEADER_BYTES",
    "ServerHandle",
    "WSGIApp",
    "serve",
]

logger = logging.getLogger("autotrace")

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class _CoalescingWriter(io.BufferedIOBase):
    """A connection's write side that sends what was written at each flush(), in one send.

    wsgiref writes the status line, the Date and Server headers, the other
    headers and each piece of the body with one write each, and flushes after
    each piece of the body: unbuffered, that is four or more sends per answer.
    Each send gives up the GIL and waits to take it back behind every thread
    that is running, so under concurrent requests each costs up to a switch
    interval; one send per piece of the body keeps that to one wait.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(data if data.__class__ is bytes else bytes(data))  # wsgiref hands over bytes
        return len(self._parts[-1])

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            try:
                self._sock.sendall(data)
            except TimeoutError as exc:
                # A client that stopped reading (idle_timeout): wsgiref takes this one quietly as
                # a client gone; a bare timeout would print a traceback on the host's stderr.
                raise ConnectionAbortedError("the client stopped reading the answer") from exc

    def close(self) -> None:
        self._parts.clear()  # what was not flushed is not sent: the handler flushes what it means to send
        super().close()

    def fileno(self) -> int:
        return self._sock.fileno()


MAX_HEADER_BYTES = 65536
"""Bytes of request headers (all lines together) a request may send; more is answered 431."""


class _HeaderBudget:
    """The read side of a connection while headers are read: past ``left`` bytes in all, the headers are too long.

    http.client bounds each header line (64 KiB) and their number (100), not
    their sum: 6.5 MB a connection, held (and copied into the environ) for as
    long as the request deadline, on every connection the caps let in.
    """

    def __init__(self, rfile: Any, left: int) -> None:
        self._rfile = rfile
        self._left = left

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._rfile.readline(limit)
        self._left -= len(line)
        if self._left < 0:
            # http.server answers it 431 (as one line too long) before the app runs.
            raise http.client.LineTooLong("request headers (all their lines together)")
        return line


class _LoggingHandler(WSGIRequestHandler):
    """wsgiref's handler (one access-log line per request on stderr), with a socket timeout.

    The server's watchdog holds each connection to a whole-request deadline
    (request line, headers and body); it is lifted when the app starts its
    answer, so a long streamed answer is not cut.
    """

    timeout = 60  # a client that stops talking frees its thread (server.idle_timeout sets it per server)
    # Requests refused before the app runs (bad request line, header too long) answer JSON
    # too. Only the code and the standard description go in, never the client's own text.
    error_content_type = "application/json"
    error_message_format = '{"error":"%(code)d: %(explain)s","status":%(code)d}'
    # http.server's default is HTTP/0.9, and an error answered before the request
    # line was understood (a bad version) then went out bare: no status line, no headers.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        """Take the server's idle timeout before the socket files are made; one send per flush, no Nagle delay."""
        self.timeout = getattr(self.server, "idle_timeout", self.timeout)  # type: ignore[misc]
        super().setup()
        self.wfile = _CoalescingWriter(self.connection)
        try:
            # A streamed answer's last small segment would otherwise wait for the client's ACK
            # of the one before, which a delayed ACK holds back up to 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a test's socket pair)

    def handle(self) -> None:
        """wsgiref's handle(), with the request deadline lifted once the app starts its answer."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():  # an error answer has been sent
            return
        handler = ServerHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            self.get_environ(),
            multithread=False,
        )
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's back-pointer for the access log
        app = self.server.get_app()  # type: ignore[attr-defined]
        server = self.server
        connection = self.connection
        if isinstance(server, _ThreadingWSGIServer):
            if not server.in_time(connection):
                return  # the watchdog answered 408 and closed it: what was read is not a whole request

            def answering(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
                def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                    # Past the deadline the socket is closed already: the answer's writes fail,
                    # and wsgiref takes that quietly as a client gone.
                    server.lift_deadline(connection)
                    return start_response(status, headers, exc_info)

                return app(environ, start)  # type: ignore[no-any-return]

            handler.run(answering)
        else:
            handler.run(app)

    def parse_request(self) -> bool:
        """http.server's, with the headers read through a budget of MAX_HEADER_BYTES bytes in all."""
        rfile = self.rfile
        self.rfile = _HeaderBudget(rfile, MAX_HEADER_BYTES)  # type: ignore[assignment]
        try:
            return super().parse_request()
        finally:
            self.rfile = rfile

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's error answer, with 505 (e.g. ``HTTP/2.0`` on this HTTP/1.1 server) as a client error."""
        if code == 505:
            code, message, explain = 400, "Bad Request", "HTTP version not supported; use HTTP/1.0 or HTTP/1.1"
        super().send_error(code, message, explain)


class _QuietHandler(_LoggingHandler):
    """The same, without the access log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


DEFAULT_MAX_CONNECTIONS = 64
"""Connections the background server serves at once; more are answered 503."""
DEFAULT_BACKLOG = 128
"""Connections the kernel queues before the server accepts them (socketserver's default is 5)."""
DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a client has to send its whole request (line, headers and body); then 408 and closed."""
DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds one read or write may wait for the client (also while the answer is sent)."""
_WORKER_IDLE_SECONDS = 30.0  # a worker thread with no connection to serve for this long ends
_OVERFLOW = 8  # connections past the caps read at once, to answer /health (each for at most 1 s)
_OVERFLOW_SECONDS = 1.0


def _answer(status: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _busy_answer(why: str = "too many connections open") -> bytes:
    body = ('{"error":"503: ' + why + '; try again shortly","status":503}').encode("ascii")
    return _answer("503 Service Unavailable", body, "Retry-After: 1\r\n")


_HEALTH = _answer("200 OK", b'{"status":"ok"}', "Cache-Control: no-store\r\n")
_STOPPING = _busy_answer("the server is stopping")
_LATE = _answer(
    "408 Request Timeout",
    b'{"error":"408: the request was not sent in time; send it whole, promptly","status":408}',
)


def _client_key(client_address: Any) -> str:
    """The client a connection counts against: one for all of loopback, an IPv6 /64, else the address.

    One local program can connect from 127.0.0.2, 127.0.0.3... and one IPv6 host
    holds a whole /64: counted by address, either would take every slot.
    """
    host = str(client_address[0]) if isinstance(client_address, tuple) and client_address else ""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One daemon thread per connection at a time, so a slow client cannot hold up the others.

    The threads are kept between connections (one that waits
    ``_WORKER_IDLE_SECONDS`` for work ends): starting a thread makes the
    accepting thread wait twice for the GIL (the new thread must run to say it
    has started), behind every thread answering a request, so a thread per
    connection made the server accept more slowly the busier it was.

    At most ``max_connections`` at once, and at most ``max_per_client`` from
    one client address: the server lives in the host process, and idle or
    half-sent connections must not grow its threads without bound nor let
    one client hold every slot. A connection past either cap is answered 503
    with Retry-After and closed, unless it asks ``GET /health`` within a
    second (answered 200: a liveness probe still works at the cap). Each
    connection has ``request_timeout`` seconds to send its whole request
    (a watchdog closes it with a 408 after that, however it trickles).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = DEFAULT_BACKLOG
    max_connections = DEFAULT_MAX_CONNECTIONS
    max_per_client = DEFAULT_MAX_CONNECTIONS // 2
    request_timeout = DEFAULT_REQUEST_TIMEOUT
    idle_timeout = DEFAULT_IDLE_TIMEOUT
    worker_idle_timeout = _WORKER_IDLE_SECONDS
    _BUSY = _busy_answer()
    _BUSY_CLIENT = _busy_answer("too many connections from your address")

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._overflow = threading.BoundedSemaphore(_OVERFLOW)
        self._count_lock = threading.Lock()
        self.connections = 0  # being served now, until their handler has finished
        self._per_client: dict[str, int] = {}
        self._deadlines: dict[Any, float] = {}  # socket -> monotonic deadline of its request
        self._heads: set[Any] = set()  # sockets whose request line and headers are still being read
        self._closing = threading.Event()
        self._jobs: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._idle = 0  # worker threads waiting for a connection that none has been promised to yet
        self._workers: set[threading.Thread] = set()  # alive worker threads (stop() joins them)
        self._pid = os.getpid()  # a forked child holds copies of the connections: not its to close
        _RUNNING.add(self)
        self._watchdog = threading.Thread(target=self._watch, name="autotrace-server-watchdog", daemon=True)
        self._watchdog.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        client = _client_key(client_address)
        with self._count_lock:
            crowded = self._per_client.get(client, 0) >= self.max_per_client
            admitted = not crowded and self._slots.acquire(blocking=False)
            if admitted:
                self.connections += 1
                self._per_client[client] = self._per_client.get(client, 0) + 1
                self._deadlines[request] = time.monotonic() + self.request_timeout
                self._heads.add(request)
        if not admitted:
            self._refuse(request, self._BUSY_CLIENT if crowded else self._BUSY)
            return
        try:
            self._dispatch(request, client_address)
        except BaseException:  # no thread started: its slot is free again
            self._release_slot(request, client)
            raise

    def _dispatch(self, request: Any, client_address: Any) -> None:
        """Hand a connection to an idle worker thread, or to a new one when none is idle."""
        with self._count_lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1  # promised: that worker will not end before it takes this one
        if reuse:
            self._jobs.put((request, client_address))
            return
        worker = threading.Thread(
            target=self._work, args=((request, client_address),), name="autotrace-server-worker", daemon=True
        )
        with self._count_lock:
            self._workers.add(worker)
        try:
            worker.start()
        except BaseException:
            with self._count_lock:
                self._workers.discard(worker)
            raise

    def _work(self, job: tuple[Any, Any] | None) -> None:
        """Serve connections one after another until idle for worker_idle_timeout seconds or the server closes."""
        try:
            self._serve_jobs(job)
        finally:
            with self._count_lock:
                self._workers.discard(threading.current_thread())

    def _serve_jobs(self, job: tuple[Any, Any] | None) -> None:
        while job is not None:
            if not self.process_request_thread(*job):
                return  # the server closed
            job = None
            while job is None:
                try:
                    job = self._jobs.get(timeout=self.worker_idle_timeout)
                except queue.Empty:
                    with self._count_lock:
                        if self._idle > 0:  # else a connection is promised to a waiting worker: wait on
                            self._idle -= 1
                            return
                    continue
                if job is None:  # the server closed
                    return

    def process_request_thread(self, request: Any, client_address: Any) -> bool:  # type: ignore[override]
        """Serve one connection; True when this thread then waits, idle, for the next one."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            waiting = self._release_slot(request, _client_key(client_address), then_idle=True)
        return waiting

    def _release_slot(self, request: Any, client: str, then_idle: bool = False) -> bool:
        """Free a connection's slot; with ``then_idle``, count its thread as idle first (unless closing)."""
        with self._count_lock:
            self._deadlines.pop(request, None)
            self._heads.discard(request)
            self.connections -= 1
            left = self._per_client.get(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)
            # Idle before the slot is free: the connection that takes the slot finds this thread
            # waiting instead of starting another, so there are never more threads than slots.
            # Checked under the lock server_close counts the idle workers with.
            waiting = then_idle and not self._closing.is_set()
            if waiting:
                self._idle += 1
        self._slots.release()
        return waiting

    def lift_deadline(self, request: Any) -> None:
        """The app starts its answer: no more request deadline for this connection."""
        with self._count_lock:
            self._deadlines.pop(request, None)

    def in_time(self, request: Any) -> bool:
        """False once the watchdog has closed this connection for missing its request deadline.

        Called once the request line and headers are read: from here the app runs.
        """
        with self._count_lock:
            self._heads.discard(request)
            return request in self._deadlines

    def _watch(self) -> None:
        """Close, with a 408, every connection whose request was not in by its deadline."""
        tick = min(0.25, max(0.01, self.request_timeout / 4))
        while not self._closing.wait(tick):
            now = time.monotonic()
            with self._count_lock:
                late = [sock for sock, deadline in self._deadlines.items() if deadline <= now]
                for sock in late:
                    del self._deadlines[sock]
                    # Under the lock: the handler cannot start its own answer meanwhile. The
                    # handler thread is blocked reading, so nothing else writes to the socket.
                    try:
                        sock.send(_LATE, _DONTWAIT)
                    except OSError:
                        pass
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def _refuse(self, request: Any, busy: bytes) -> None:
        """Past a cap: answer /health if the client asks for it within a second, else 503; then close."""
        if not self._overflow.acquire(blocking=False):
            self._send_and_close(request, busy)
            return
        try:
            threading.Thread(
                target=self._answer_overflow, args=(request, busy), name="autotrace-server-overflow", daemon=True
            ).start()
        except BaseException:
            self._overflow.release()
            self._send_and_close(request, busy)
            raise

    def _answer_overflow(self, request: Any, busy: bytes) -> None:
        try:
            head = b""
            deadline = time.monotonic() + _OVERFLOW_SECONDS
            try:
                while b"\r\n" not in head and len(head) < 256:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    request.settimeout(left)
                    chunk = request.recv(256)
                    if not chunk:
                        break
                    head += chunk
            except OSError:
                pass
            line = head.split(b"\r\n", 1)[0].split()
            health = len(line) == 3 and line[0] in (b"GET", b"HEAD") and line[1] == b"/health"
            self._send_and_close(request, _HEALTH if health else busy)
        finally:
            self._overflow.release()

    def _send_and_close(self, request: Any, data: bytes) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(data)
        except OSError:
            pass
        self.shutdown_request(request)

    def server_close(self) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            closing.set()
            with self._count_lock:
                idle, self._idle = self._idle, 0
                # The watchdog is gone: a client that stays silent must not keep its worker past
                # stop(). Requests whose head is not in are answered 503 and closed, as the watchdog
                # does at their deadline; one whose app runs already gets the end of its body (a
                # trickled POST ends now), and its answer still goes out.
                for sock in list(self._deadlines) if self._pid == os.getpid() else ():
                    head = sock in self._heads
                    if head:
                        del self._deadlines[sock]
                        try:
                            sock.send(_STOPPING, _DONTWAIT)
                        except OSError:
                            pass
                    try:
                        sock.shutdown(socket.SHUT_RDWR if head else socket.SHUT_RD)
                    except OSError:
                        pass
            for _ in range(idle):  # the waiting workers end now, not after their idle timeout
                self._jobs.put(None)
        super().server_close()

    def join_workers(self, deadline: float) -> None:
        """Wait, until the monotonic ``deadline``, for the worker threads to end (answers being sent finish)."""
        with self._count_lock:
            workers = list(getattr(self, "_workers", ()))
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("autotrace server: error while serving %s", client_address, exc_info=True)


_RUNNING: weakref.WeakSet[_ThreadingWSGIServer] = weakref.WeakSet()  # for the fork hook below


def _after_fork_in_child() -> None:
    """A fresh lock for each server copied into a forked child: a parent thread may have held it."""
    for server in list(_RUNNING):
        server._count_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ServerHandle:
    """A server running on a daemon thread: ``.url``, ``.host``, ``.port``, ``.stop()``; a context manager."""

    def __init__(self, server: _ThreadingWSGIServer, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._stopped = False
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    @property
    def connections(self) -> int:
        """Connections being served now (a request's spans have ended once its connection is done)."""
        return int(getattr(self._server, "connections", 0))

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop serving, close the listening socket (the port is free again) and wait up to ``timeout`` for the workers.

        A connection still sending its request head is answered 503 and closed;
        an answer being made or sent is waited for, so its spans are recorded.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        if self._thread.is_alive():
            self._server.shutdown()  # returns once serve_forever's loop has exited
        self._server.server_close()
        self._thread.join(timeout)
        # The connections' threads too: none is left reading, and a request being answered is done
        # (its spans recorded) when stop() returns, unless the timeout comes first.
        self._server.join_workers(deadline)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, running={self.running})"


def serve(
    app: WSGIApp,
    host: str,
    port: int,
    *,
    access_log: bool,
    max_connections: int,
    max_connections_per_client: int,
    backlog: int,
    request_timeout: float,
    idle_timeout: float,
) -> ServerHandle:
    """Bind ``host:port`` and serve ``app`` on a daemon thread (arguments checked by the caller)."""
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    handler = _LoggingHandler if access_log else _QuietHandler
    server = server_class((host, port), handler, bind_and_activate=False)
    server.max_connections = max_connections
    server.max_per_client = max_connections_per_client
    server.request_queue_size = backlog
    server.request_timeout = float(request_timeout)
    server.idle_timeout = float(idle_timeout)
    try:
        server.server_bind()
        server.server_activate()
        server.set_app(app)
        bound_port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"autotrace-server-{bound_port}",
            daemon=True,
        )
        thread.start()
    except BaseException:
        server.server_close()
        raise
    return ServerHandle(server, thread, host, bound_port)
