"""A hostile collector on a raw loopback socket: answers cut short, garbled or odd, counted exactly."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import autotrace
import autotrace.export
from autotrace.export import FileExporter, OTLPHttpExporter, read_jsonl
from autotrace.export.otlp_http import parse_retry_after
from autotrace.spans import Span
from autotrace.testing import capture_spans

from .conftest import Receiver

Reply = bytes | Callable[[socket.socket], None]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def spans(count: int) -> list[Span]:
    """``count`` finished root spans."""
    with capture_spans() as got:
        for n in range(count):
            with autotrace.span(f"s{n}"):
                pass
    return list(got)


class RawCollector:
    """Reads whole requests off raw sockets and answers each with the next scripted bytes (then 200)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.bodies = 0  # requests whose whole body was read: what a collector would have stored
        self.targets: list[str] = []  # request targets, in order
        self.heads: list[list[tuple[str, str]]] = []  # each request's header lines as (name, value)
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            for _ in range(50):  # bounded: no test sends more
                request_line = reader.readline()
                if not request_line:
                    return
                length = 0
                head: list[tuple[str, str]] = []
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    head.append((name, value.strip()))
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                with self.lock:
                    self.targets.append(request_line.split()[1].decode("latin-1"))
                    self.heads.append(head)
                    self.bodies += 1
                    reply = self.replies.pop(0) if self.replies else OK
                if callable(reply):
                    reply(conn)
                    return
                conn.sendall(reply)
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def collector() -> Iterator[Callable[..., RawCollector]]:
    """Makes raw collectors and closes them after the test."""
    made: list[RawCollector] = []

    def make(*replies: Reply) -> RawCollector:
        made.append(RawCollector(*replies))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _send(c: RawCollector, count: int = 3, timeout: float = 10.0) -> tuple[bool, dict[str, int]]:
    exporter = OTLPHttpExporter(c.url, max_retries=3, backoff_base=0.01, timeout=timeout)
    try:
        ok = exporter.export(spans(count))
        return ok, exporter.stats()
    finally:
        exporter.shutdown()


def test_a_200_whose_chunked_body_is_garbled_is_not_sent_again(collector: Callable[..., RawCollector]) -> None:
    """A 2xx status line took the batch even when its chunked body is garbage: exported once, no re-send."""
    c = collector(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    ok, stats = _send(c)
    assert ok is True
    assert c.bodies == 1
    assert stats == {"exported": 3, "failed": 0, "rejected": 0, "retried": 0, "requests": 1}


def test_a_200_whose_body_is_cut_by_a_reset_is_not_sent_again(collector: Callable[..., RawCollector]) -> None:
    """A 2xx followed by a connection reset mid-body is a delivery, counted exported, never re-sent."""

    def reset_mid_body(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    c = collector(reset_mid_body)
    ok, stats = _send(c)
    assert ok is True
    assert c.bodies == 1
    assert stats["exported"] == 3 and stats["failed"] == 0 and stats["requests"] == 1


def test_a_200_drip_fed_past_the_timeout_counts_as_exported(collector: Callable[..., RawCollector]) -> None:
    """A 2xx whose body never finishes within the export timeout was still delivered: exported, not failed."""
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        stop.wait(30)  # the rest never comes; the exporter's watchdog ends the request

    c = collector(drip)
    try:
        ok, stats = _send(c, timeout=0.5)
    finally:
        stop.set()
    assert ok is True
    assert c.bodies == 1
    assert stats == {"exported": 3, "failed": 0, "rejected": 0, "retried": 0, "requests": 1}


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9", "\u0663", "1\u00b3"])
def test_retry_after_with_non_ascii_digits_is_ignored(value: str) -> None:
    """A Retry-After of superscript or Arabic-Indic digits is not a delay (and never raises)."""
    assert parse_retry_after(value) is None


def test_a_503_with_a_superscript_retry_after_is_retried_not_raised(collector: Callable[..., RawCollector]) -> None:
    """'Retry-After: \u00b2' (one Latin-1 byte) makes the exporter back off as usual, not raise out of export()."""
    c = collector(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
    ok, stats = _send(c)
    assert ok is True
    assert c.bodies == 2
    assert stats == {"exported": 3, "failed": 0, "rejected": 0, "retried": 1, "requests": 2}


@pytest.mark.parametrize(
    ("retry_after", "sent", "ok"),
    [
        (b"-5", 2, True),  # not delay-seconds: the usual backoff
        (b"soon", 2, True),
        (b"1.5", 2, True),
        (b"Wed, 21 Oct 2015 07:28:00 GMT", 2, True),  # a date in the past: at once
        (b"99999999999999999999", 1, False),  # past the export timeout: dropped now, counted
        (b"9" * 5000, 1, False),
    ],
)
def test_odd_retry_after_values_are_bounded_and_counted(
    collector: Callable[..., RawCollector], retry_after: bytes, sent: int, ok: bool
) -> None:
    """Negative, fractional, garbage, past-date and enormous Retry-After values: bounded, every span counted once."""
    c = collector(b"HTTP/1.1 429 Slow down\r\nRetry-After: " + retry_after + b"\r\nContent-Length: 0\r\n\r\n")
    result, stats = _send(c)
    assert result is ok
    assert c.bodies == sent
    assert stats["exported"] + stats["failed"] == 3
    assert stats["exported"] == (3 if ok else 0)


@pytest.mark.parametrize("status", [b"301 Moved", b"307 Temporary Redirect", b"413 Too Large", b"400 Bad"])
def test_redirects_and_refusals_are_dropped_once_and_counted(
    collector: Callable[..., RawCollector], status: bytes
) -> None:
    """3xx (not followed: it could send spans elsewhere) and 4xx answers drop the batch, counted, not retried."""
    c = collector(b"HTTP/1.1 " + status + b"\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n")
    ok, stats = _send(c)
    assert ok is False
    assert c.bodies == 1
    assert stats == {"exported": 0, "failed": 3, "rejected": 0, "retried": 0, "requests": 1}


def test_an_http_1_0_answer_without_length_ends_at_close(collector: Callable[..., RawCollector]) -> None:
    """An HTTP/1.0 200 with no Content-Length, ended by closing: one delivery, and the next export reconnects."""

    def old_server(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}")

    c = collector(old_server, old_server)
    exporter = OTLPHttpExporter(c.url, max_retries=3, backoff_base=0.01, timeout=10)
    try:
        assert exporter.export(spans(2)) is True
        assert exporter.export(spans(2)) is True
        assert c.bodies == 2
        assert exporter.stats() == {"exported": 4, "failed": 0, "rejected": 0, "retried": 0, "requests": 2}
    finally:
        exporter.shutdown()


def test_a_gzip_answer_to_a_success_is_still_a_success(collector: Callable[..., RawCollector]) -> None:
    """A 200 whose body is gzip (which autotrace never asked for) is a success, counted once."""
    c = collector(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc")
    ok, stats = _send(c)
    assert ok is True and c.bodies == 1
    assert stats["exported"] == 3 and stats["requests"] == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"api-key": "\u20ac5"},
        "api-key=%E2%82%AC5",
        {"api-key": "a\x01b"},
        {"api-key": "a\x7fb"},
        "api-key=a%00b",
        {"api-k\u00e9y": "1"},
        {"api-key(1)": "1"},
        {"api-key/": "1"},
    ],
)
def test_a_header_http_cannot_carry_is_refused_when_configured(headers: dict[str, str] | str) -> None:
    """A header name that is no HTTP token, or a value with control characters or outside Latin-1, is a ValueError."""
    with pytest.raises(ValueError, match="api-k"):
        OTLPHttpExporter("http://127.0.0.1:9/v1/traces", headers=headers)


def test_a_header_value_from_the_environment_outside_latin1_is_refused() -> None:
    """OTEL_EXPORTER_OTLP_HEADERS decoding to a non-Latin-1 value fails at configuration, naming the variable."""
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        OTLPHttpExporter(env={"OTEL_EXPORTER_OTLP_HEADERS": "api-key=%E2%82%AC5"})


def test_a_latin1_header_value_is_sent(collector: Callable[..., RawCollector]) -> None:
    """Token names and Latin-1 values with spaces and tabs are accepted and sent as given."""
    c = collector()
    exporter = OTLPHttpExporter(c.url, headers={"X-Name_1.~!": "caf\u00e9\tau lait"}, timeout=10)
    try:
        assert exporter.export(spans(1)) is True
    finally:
        exporter.shutdown()
    assert ("X-Name_1.~!", "caf\u00e9\tau lait") in c.heads[0]


@pytest.mark.parametrize(
    "headers",
    [
        "content-type=text/plain",
        "Content-Length=5",
        "content-encoding=gzip",
        "transfer-encoding=chunked",
    ],
)
def test_configured_headers_cannot_break_the_body_framing(receiver: Receiver, headers: str) -> None:
    """OTEL_EXPORTER_OTLP_HEADERS naming Content-Type/-Length/-Encoding or Transfer-Encoding never reach the wire."""
    exporter = OTLPHttpExporter(
        env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_HEADERS": headers}
    )
    try:
        assert exporter.export(spans(3)) is True
        assert receiver.errors == []
        assert sorted(receiver.span_names()) == ["s0", "s1", "s2"]
        sent = {k.lower(): v for k, v in receiver.requests[0]["headers"].items()}
        assert sent["content-type"] == "application/json"
        assert "content-encoding" not in sent and "transfer-encoding" not in sent
    finally:
        exporter.shutdown()


def test_a_configured_user_agent_replaces_the_exporters_own(collector: Callable[..., RawCollector]) -> None:
    """A 'user-agent' header in any spelling is sent once, the user's, not beside autotrace's."""
    c = collector()
    exporter = OTLPHttpExporter(c.url, headers="user-agent=my-app/1.0", timeout=10)
    try:
        assert exporter.export(spans(1)) is True
    finally:
        exporter.shutdown()
    agents = [v for k, v in c.heads[0] if k.lower() == "user-agent"]
    assert agents == ["my-app/1.0"]


@pytest.mark.parametrize(
    ("base", "target"),
    [
        ("http://127.0.0.1:{port}?tenant=a", "/v1/traces?tenant=a"),
        ("http://127.0.0.1:{port}/otlp/?tenant=a", "/otlp/v1/traces?tenant=a"),
        ("http://127.0.0.1:{port}/otlp#frag", "/otlp/v1/traces"),
    ],
)
def test_a_base_endpoint_with_a_query_gets_v1_traces_on_its_path(
    collector: Callable[..., RawCollector], base: str, target: str
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT with a query: /v1/traces goes on the path, the query is kept, no fragment sent."""
    c = collector()
    exporter = OTLPHttpExporter(env={"OTEL_EXPORTER_OTLP_ENDPOINT": base.format(port=c.port)}, timeout=10)
    try:
        assert exporter.export(spans(1)) is True
    finally:
        exporter.shutdown()
    assert c.targets == [target]


def test_a_base_endpoint_without_a_scheme_is_named_as_given() -> None:
    """'host:4318' in OTEL_EXPORTER_OTLP_ENDPOINT is refused showing that value and saying the scheme is needed."""
    with pytest.raises(ValueError, match=r"got 'collector:4318' \(the scheme is required"):
        OTLPHttpExporter(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


@pytest.mark.parametrize("interim", [b"103 Early Hints\r\nLink: </v1>; rel=preload", b"102 Processing"])
def test_an_interim_1xx_answer_before_the_200_is_skipped(
    collector: Callable[..., RawCollector], interim: bytes
) -> None:
    """A 102/103 before the final 200 (a CDN's Early Hints) is not the answer: the batch counts exported, sent once."""
    c = collector(b"HTTP/1.1 " + interim + b"\r\n\r\n" + OK)
    exporter = OTLPHttpExporter(c.url, max_retries=3, backoff_base=0.01, timeout=10)
    try:
        assert exporter.export(spans(3)) is True
        assert exporter.export(spans(1)) is True  # the connection is still in step with the collector
        assert c.bodies == 2
        assert exporter.stats() == {"exported": 4, "failed": 0, "rejected": 0, "retried": 0, "requests": 2}
    finally:
        exporter.shutdown()


def test_endless_interim_answers_are_a_bounded_failure(collector: Callable[..., RawCollector]) -> None:
    """A collector answering only 103s is given up on after a bounded number, counted as failed."""
    c = collector(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 40)
    exporter = OTLPHttpExporter(c.url, max_retries=0, timeout=10)
    try:
        assert exporter.export(spans(2)) is False
        assert exporter.stats()["failed"] == 2 and exporter.stats()["exported"] == 0
    finally:
        exporter.shutdown()


class ChaosCollector(RawCollector):
    """Answers each request with a seeded random misbehaviour and records which spans it saw and acknowledged.

    "Acknowledged" means a 2xx status line went out: the batch is stored, whatever follows it.
    """

    ACTIONS = ("ok", "ok", "ok", "503", "429", "garbled200", "early103", "reset", "ok_then_close", "http10", "cut")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seen: Counter[str] = Counter()
        self.acked: Counter[str] = Counter()
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            for _ in range(1000):  # bounded: far more than one connection carries here
                if not reader.readline():
                    return
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                doc = json.loads(reader.read(length))
                names = [s["name"] for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
                with self.lock:
                    action = self.rng.choice(self.ACTIONS)
                    self.seen.update(names)
                    if action in ("ok", "garbled200", "early103", "ok_then_close", "http10"):
                        self.acked.update(names)
                if action == "ok":
                    conn.sendall(OK)
                elif action == "503":
                    conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
                elif action == "429":
                    conn.sendall(b"HTTP/1.1 429 Slow\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
                elif action == "early103":
                    conn.sendall(b"HTTP/1.1 103 Early Hints\r\n\r\n" + OK)
                else:
                    if action == "garbled200":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                    elif action == "ok_then_close":
                        conn.sendall(OK)
                    elif action == "http10":
                        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n{}")
                    elif action == "cut":
                        conn.sendall(b"HTTP/1.1 20")  # no status: the batch may be sent again
                    else:  # reset after reading the whole body, before any answer
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
        except (OSError, ValueError):
            pass
        finally:
            reader.close()
            conn.close()


@pytest.mark.parametrize("seed", [3, 5])
def test_a_flaky_collector_gets_every_span_counted_exactly_once(seed: int) -> None:
    """Through resets, cut status lines, 103s, garbled 200s and 429/503: exported == acknowledged, none acked twice."""
    chaos = ChaosCollector(seed)
    try:
        exporter = OTLPHttpExporter(chaos.url, timeout=10, backoff_base=0.01, max_retries=3)
        processor = autotrace.export.BatchSpanProcessor(
            exporter, max_export_batch_size=20, schedule_delay=0.05, max_queue_size=5000
        )
        autotrace.configure(sample_rate=1.0, exporters=[processor])

        def work(k: int) -> None:
            for n in range(80):
                with autotrace.span(f"w{k}-{n}"):
                    pass

        threads = [threading.Thread(target=work, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert autotrace.shutdown(60) is True
        stats, counted = processor.stats(), exporter.stats()
        assert stats["exported"] + stats["failed"] + stats["dropped"] == 400
        assert stats["dropped"] == 0
        assert len(chaos.seen) == 400  # every span reached the collector at least once
        assert max(chaos.acked.values()) == 1  # no span was stored twice
        assert counted["exported"] == stats["exported"] == sum(chaos.acked.values())
        assert counted["failed"] == stats["failed"] == 400 - len(chaos.acked)
    finally:
        chaos.close()


def test_credentials_in_the_endpoint_are_sent_as_basic_authentication(collector: Callable[..., RawCollector]) -> None:
    """user:password@ in OTEL_EXPORTER_OTLP_ENDPOINT (percent-decoded) becomes Authorization: Basic, never the Host."""
    c = collector()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://us%40er:p%3Ass@127.0.0.1:{c.port}"}
    exporter = OTLPHttpExporter(env=env, timeout=10)
    try:
        assert exporter.export(spans(1)) is True
        assert "p%3Ass" not in repr(exporter)
    finally:
        exporter.shutdown()
    head = dict(c.heads[0])
    assert head["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert head["Host"] == f"127.0.0.1:{c.port}"
    assert c.targets == ["/v1/traces"]


def test_a_configured_authorization_header_wins_over_endpoint_credentials(
    collector: Callable[..., RawCollector],
) -> None:
    """An Authorization header from OTEL_EXPORTER_OTLP_HEADERS is sent alone, not beside one made from the URL."""
    c = collector()
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://u:p@127.0.0.1:{c.port}/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t0k",
    }
    exporter = OTLPHttpExporter(env=env, timeout=10)
    try:
        assert exporter.export(spans(1)) is True
    finally:
        exporter.shutdown()
    assert [v for k, v in c.heads[0] if k.lower() == "authorization"] == ["Bearer t0k"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_forked_processes_share_a_jsonl_file_without_losing_or_tearing_a_line(tmp_path: Path) -> None:
    """Four forked children and the parent append 5 KB spans to one file at once: read_jsonl gets each span once."""
    path = tmp_path / "traces.jsonl"
    exporter = FileExporter(path)
    processor = autotrace.export.BatchSpanProcessor(exporter, max_export_batch_size=25, schedule_delay=0.01)
    autotrace.configure(sample_rate=1.0, exporters=[processor])
    for n in range(50):
        with autotrace.span(f"parent-before-{n}", attributes={"pad": "p" * 5000}):
            pass
    children = []
    for k in range(4):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for n in range(150):
                    with autotrace.span(f"child{k}-{n}", attributes={"pad": "c" * 5000}):
                        pass
                status = 0 if autotrace.shutdown(20) else 2
            finally:
                os._exit(status)
        children.append(pid)
    for n in range(50):
        with autotrace.span(f"parent-after-{n}"):
            pass
    deadline = time.monotonic() + 60
    for pid in children:
        while True:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(code) == 0
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("a forked child did not finish")
            time.sleep(0.02)
    assert autotrace.shutdown(20) is True
    bad: list[tuple[int, str]] = []
    docs = read_jsonl(path, bad_lines=bad)
    names = Counter(
        s["name"] for d in docs for rs in d["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    )
    assert bad == []
    assert len(names) == 100 + 4 * 150 and max(names.values()) == 1


class EarlyAnswerCollector(RawCollector):
    """Reads only the request head and a few body bytes, answers at once, and resets the connection."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while reader.readline() not in (b"\r\n", b""):
                pass
            reader.read(16)
            with self.lock:
                self.bodies += 1
            conn.sendall(self.answer)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            reader.close()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()


def big_spans(count: int) -> list[Span]:
    """``count`` spans of about 20 KB each: more than the socket buffers take before the collector stops reading."""
    with capture_spans() as got:
        for n in range(count):
            with autotrace.span(f"big{n}", attributes={"pad": "x" * 20_000}):
                pass
    return list(got)


@pytest.mark.parametrize("status", [b"413 Payload Too Large", b"401 Unauthorized"])
def test_an_answer_sent_before_the_body_was_read_is_the_answer(status: bytes) -> None:
    """A 413/401 sent before the collector read the 4 MB body, then a reset: dropped once as that status, no retry."""
    c = EarlyAnswerCollector(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    try:
        exporter = OTLPHttpExporter(c.url, timeout=10, backoff_base=0.01, max_retries=3)
        try:
            assert exporter.export(big_spans(200)) is False
            assert exporter.stats() == {"exported": 0, "failed": 200, "rejected": 0, "retried": 0, "requests": 1}
            assert c.bodies == 1
        finally:
            exporter.shutdown()
    finally:
        c.close()


def test_a_4xx_whose_body_is_cut_is_still_a_4xx(collector: Callable[..., RawCollector]) -> None:
    """A 400 whose body is cut by a reset is dropped as a 400 (not retried as a connection failure)."""

    def cut(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n{")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    c = collector(cut, cut, cut, cut)
    ok, stats = _send(c)
    assert ok is False
    assert c.bodies == 1
    assert stats == {"exported": 0, "failed": 3, "rejected": 0, "retried": 0, "requests": 1}
