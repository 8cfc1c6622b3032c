"""OTLP/HTTP export against a real loopback receiver that parses with opentelemetry-proto."""

from __future__ import annotations

import email.utils
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import autotrace
from autotrace.export import BatchSpanProcessor, OTLPHttpExporter, parse_retry_after
from autotrace.propagation import extract
from autotrace.testing import capture_spans

from .conftest import Receiver, closed_port

ROOT = Path(__file__).resolve().parents[2]


def install(exporter: OTLPHttpExporter, **batch: float) -> BatchSpanProcessor:
    """Configure autotrace (always sampling) with one batch processor around ``exporter``."""
    proc = BatchSpanProcessor(exporter, **batch)  # type: ignore[arg-type]
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
    return proc


@autotrace.traced("work")
def work(i: int) -> int:
    with autotrace.span("step", attributes={"i": i}):
        pass
    return i


def produce(count: int, prefix: str = "span") -> None:
    """End ``count`` root spans named ``{prefix}-{n}``."""
    for n in range(count):
        with autotrace.span(f"{prefix}-{n}", attributes={"n": n}):
            pass


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autotrace" and text in r.getMessage()]


# -- delivery ---------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "compression"), [("json", "gzip"), ("protobuf", "none"), ("json", "none")])
def test_every_span_of_a_10000_span_run_arrives_exactly_once(
    receiver: Receiver, encoding: str, compression: str
) -> None:
    """10,000 spans from 4 threads reach the receiver once each, valid under the official proto schema."""
    exporter = OTLPHttpExporter(receiver.url, encoding=encoding, compression=compression, timeout=30)
    proc = install(exporter, max_queue_size=20_000, schedule_delay=0.2)
    with capture_spans() as spans:
        threads = [threading.Thread(target=lambda: [work(i) for i in range(1250)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(spans) == 10_000
    assert autotrace.flush(120)
    assert receiver.errors == []
    got = [(s["trace_id"], s["span_id"]) for s in receiver.spans]
    assert len(got) == 10_000
    assert set(got) == {(s.trace_id, s.span_id) for s in spans}
    assert proc.stats() == {"queued": 0, "exported": 10_000, "dropped": 0, "failed": 0, "retried": 0}
    content_type = "application/x-protobuf" if encoding == "protobuf" else "application/json"
    for request in receiver.requests:
        assert request["path"] == "/v1/traces"
        assert request["headers"]["Content-Type"] == content_type
        assert request["headers"].get("Content-Encoding") == ("gzip" if compression == "gzip" else None)
        assert request["spans"] <= 512
    # the in-memory store keeps working beside the exporter (its newest 1000 traces)
    assert autotrace.trace_count() == 1000


def test_headers_and_attributes_reach_the_collector(receiver: Receiver) -> None:
    """Configured headers are sent on every request; span attributes arrive as typed AnyValues."""
    exporter = OTLPHttpExporter(receiver.url, headers="x-api-key=s%20cret,tenant=a")
    install(exporter)
    with autotrace.span("generate", kind="server", attributes={"gen_ai.usage.output_tokens": 42, "ok": True}):
        pass
    assert autotrace.flush(30)
    headers = receiver.requests[0]["headers"]
    assert headers["x-api-key"] == "s cret" and headers["tenant"] == "a"
    assert headers["User-Agent"].startswith("autotrace/")
    (span,) = receiver.spans
    assert span["name"] == "generate"
    assert span["attributes"]["gen_ai.usage.output_tokens"] == {"intValue": "42"}
    assert span["attributes"]["ok"] == {"boolValue": True}


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_span_flags_and_trace_state_reach_the_collector(receiver: Receiver, encoding: str) -> None:
    """Span flags (W3C flags, 0x100 known, 0x200 remote parent) and traceState arrive, in JSON and in protobuf."""
    exporter = OTLPHttpExporter(receiver.url, encoding=encoding)
    install(exporter)
    remote = extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "vendor=x"})
    with autotrace.span("server", kind="server", parent=remote):
        with autotrace.span("inner"):
            pass
    with autotrace.span("local"):
        pass
    assert autotrace.flush(30)
    got = {s["name"]: (s["flags"], s["trace_state"]) for s in receiver.spans}
    assert got == {"server": (0x301, "vendor=x"), "inner": (0x101, "vendor=x"), "local": (0x103, "")}


def test_big_batches_are_split_below_the_request_limit(receiver: Receiver) -> None:
    """A batch larger than max_request_bytes goes out as several smaller requests, no span lost."""
    exporter = OTLPHttpExporter(receiver.url, max_request_bytes=8192)
    install(exporter, schedule_delay=30.0)
    for n in range(200):
        with autotrace.span(f"big-{n}", attributes={"payload": "x" * 300}):
            pass
    assert autotrace.flush(30)
    assert len(receiver.requests) > 1
    assert all(int(r["headers"]["Content-Length"]) <= 8192 for r in receiver.requests)
    assert sorted(receiver.span_names()) == sorted(f"big-{n}" for n in range(200))


def test_a_span_bigger_than_the_limit_is_dropped_and_counted(receiver: Receiver) -> None:
    """A single span that cannot fit a request is counted as failed, the others still go."""
    exporter = OTLPHttpExporter(receiver.url, max_request_bytes=2048)
    proc = install(exporter, schedule_delay=30.0)
    with autotrace.span("small"):
        pass
    with autotrace.span("huge", attributes={"blob": "y" * 5000}):
        pass
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert receiver.span_names() == ["small"]
    assert proc.stats()["failed"] == 1 and proc.stats()["exported"] == 1
    assert exporter.stats()["exported"] == 1 and exporter.stats()["failed"] == 1


# -- faults -------------------------------------------------------------------------------


def test_receiver_down_counts_failures_logs_once_and_shuts_down_in_time(caplog: pytest.LogCaptureFixture) -> None:
    """Connection refused: calls still return, spans are retried then counted failed, one log line."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    exporter = OTLPHttpExporter(f"http://127.0.0.1:{closed_port()}/v1/traces", timeout=1.0, backoff_base=0.05)
    proc = install(exporter, schedule_delay=30.0)
    for i in range(100):
        assert work(i) == i
    assert not autotrace.flush(30)  # spans failed: flush says so
    for i in range(50):
        work(i)
    assert not autotrace.flush(30)  # spans failed: flush says so
    stats = proc.stats()
    assert stats["failed"] == 300 and stats["exported"] == 0 and stats["dropped"] == 0
    assert stats["retried"] >= 2
    assert len(warnings_about(caplog, "connection error")) == 1
    work(0)
    started = time.monotonic()
    autotrace.shutdown(3.0)
    assert time.monotonic() - started < 8.0


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_is_retried_and_every_span_arrives_once(receiver: Receiver, status: int) -> None:
    """429/502/503/504 twice, then 200: the batch is sent again and each span arrives exactly once."""
    receiver.script({"status": status}, {"status": status})
    exporter = OTLPHttpExporter(receiver.url, timeout=20, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(40)
    assert autotrace.flush(30)
    assert len(receiver.requests) == 3
    assert sorted(receiver.span_names()) == sorted(f"span-{n}" for n in range(40))
    assert proc.stats() == {"queued": 0, "exported": 40, "dropped": 0, "failed": 0, "retried": 2}


def test_503_with_retry_after_waits_as_told_then_delivers_once(receiver: Receiver) -> None:
    """A 503 with Retry-After: 1 delays the retry by about a second (not the 10 ms backoff)."""
    receiver.script({"status": 503, "headers": {"Retry-After": "1"}})
    exporter = OTLPHttpExporter(receiver.url, timeout=20, backoff_base=0.01)
    install(exporter, schedule_delay=30.0)
    produce(25)
    assert autotrace.flush(30)
    first, second = receiver.requests
    assert second["time"] - first["time"] >= 0.9
    assert sorted(receiver.span_names()) == sorted(f"span-{n}" for n in range(25))


def test_retry_after_past_the_export_timeout_gives_up_at_once(receiver: Receiver) -> None:
    """A Retry-After longer than the time left is not slept through: the batch fails fast."""
    receiver.script({"status": 503, "headers": {"Retry-After": "120"}})
    exporter = OTLPHttpExporter(receiver.url, timeout=2.0, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(5)
    started = time.monotonic()
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert time.monotonic() - started < 10
    assert len(receiver.requests) == 1 and proc.stats()["failed"] == 5


def test_retries_stop_inside_the_export_timeout(receiver: Receiver) -> None:
    """A collector answering 503 forever costs one export timeout, not the whole backoff series."""
    receiver.script(*[{"status": 503}] * 50)
    exporter = OTLPHttpExporter(receiver.url, timeout=1.0, backoff_base=0.2)
    proc = install(exporter, schedule_delay=30.0)
    produce(5)
    started = time.monotonic()
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert time.monotonic() - started < 10
    assert 1 <= len(receiver.requests) <= 4  # 0.2 + 0.4 (+ jitter) fit in 1 s; 0.8 more does not
    assert proc.stats()["failed"] == 5 and proc.stats()["exported"] == 0


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_other_errors_are_not_retried_and_are_counted(
    receiver: Receiver, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Any other 4xx/5xx drops the batch at once (one request), counts it and logs once per kind."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    receiver.script({"status": status}, {"status": status})
    exporter = OTLPHttpExporter(receiver.url, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(10)
    assert not autotrace.flush(30)  # spans failed: flush says so
    produce(10)
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert len(receiver.requests) == 2
    assert proc.stats()["failed"] == 20 and proc.stats()["retried"] == 0
    assert len(warnings_about(caplog, f"HTTP {status}")) == 1
    produce(3)
    assert autotrace.flush(30)
    assert len(receiver.spans) == 3  # the next batch goes through


def test_partial_success_is_logged_and_never_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """A 200 carrying partialSuccess counts the rejected spans, logs the message and sends nothing again."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    receiver.script({"partial": (3, "spans too old")})
    exporter = OTLPHttpExporter(receiver.url)
    proc = install(exporter, schedule_delay=30.0)
    produce(10)
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert len(receiver.requests) == 1
    assert proc.stats()["exported"] == 7 and proc.stats()["failed"] == 3
    assert exporter.stats()["rejected"] == 3 and exporter.stats()["exported"] == 7
    assert exporter.stats()["retried"] == 0
    (message,) = warnings_about(caplog, "partial success")
    assert "rejected 3 of 10" in message and "spans too old" in message


def test_partial_success_is_read_from_protobuf_responses(receiver: Receiver) -> None:
    """With protobuf encoding the ExportTraceServiceResponse's partial_success is decoded too."""
    receiver.script({"partial": (2, "nope")})
    exporter = OTLPHttpExporter(receiver.url, encoding="protobuf", compression="gzip")
    install(exporter, schedule_delay=30.0)
    produce(6)
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert exporter.stats()["rejected"] == 2 and exporter.stats()["exported"] == 4
    assert receiver.errors == []


def test_a_json_answer_to_a_protobuf_request_is_read_as_json(receiver: Receiver) -> None:
    """Some servers (Phoenix) answer protobuf requests in JSON: the partial success is still read."""
    body = b'{"partialSuccess": {"rejectedSpans": "1", "errorMessage": "dup"}}'
    receiver.script({"body": body, "ctype": "application/json"})
    exporter = OTLPHttpExporter(receiver.url, encoding="protobuf")
    install(exporter, schedule_delay=30.0)
    produce(4)
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert exporter.stats()["rejected"] == 1 and exporter.stats()["exported"] == 3


def test_connection_closed_mid_request_is_retried_and_delivered_once(receiver: Receiver) -> None:
    """The collector hanging up mid-body is a connection error: retried, each span arrives once."""
    receiver.script({"close": True})
    exporter = OTLPHttpExporter(receiver.url, timeout=20, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(30)
    assert autotrace.flush(30)
    assert len(receiver.requests) == 2
    assert sorted(receiver.span_names()) == sorted(f"span-{n}" for n in range(30))
    assert proc.stats()["retried"] == 1 and proc.stats()["failed"] == 0


def test_a_collector_hanging_past_the_timeout_fails_the_batch_only(receiver: Receiver) -> None:
    """A request with no answer within the export timeout is counted failed; later batches go through."""
    receiver.script({"hang": True})
    exporter = OTLPHttpExporter(receiver.url, timeout=0.5, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(7, "lost")
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert proc.stats()["failed"] == 7
    produce(5, "kept")
    assert autotrace.flush(30)
    assert sorted(receiver.span_names()) == sorted(f"kept-{n}" for n in range(5))


class DripServer:
    """A raw-socket collector that answers 200 with Content-Length: 40, then sends the body one byte per 0.25 s."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The traces endpoint."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/traces"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        v
                        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                        if k.strip().lower() == b"content-length"
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
                for _ in range(40):
                    if self.stop.wait(0.25):
                        return
                    conn.sendall(b" ")
            except (OSError, StopIteration, ValueError):
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_collector_drip_feeding_its_answer_is_cut_off_at_the_export_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """The timeout bounds the whole request: a 200 whose body drips (a byte per 0.25 s) is cut off, counted exported."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    server = DripServer()
    try:
        exporter = OTLPHttpExporter(server.url, timeout=1.0, backoff_base=0.01)
        spans = [autotrace.Span(f"drip-{n}") for n in range(6)]
        started = time.monotonic()
        # The 200 status line arrived whole: the collector took the batch, so it is neither failed nor sent again.
        assert exporter.export(spans) is True
        assert time.monotonic() - started < 3.0  # not 10 s (40 bytes at 0.25 s each)
        assert exporter.stats()["exported"] == 6 and exporter.stats()["failed"] == 0
        assert server.requests == 1
        assert warnings_about(caplog, "(timeout)") == []
        # The next export gets its own full timeout on a new connection, and ends the same way.
        started = time.monotonic()
        assert exporter.export(spans[:2]) is True
        assert time.monotonic() - started < 3.0
        assert exporter.stats()["exported"] == 8 and server.requests == 2
    finally:
        server.close()


def test_reusing_an_exporter_after_shutdown_logs_why_nothing_is_sent_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """configure(exporters=[e]) again after shutdown(): spans are counted failed and one warning names the shutdown."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    exporter = OTLPHttpExporter(receiver.url, timeout=5)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[exporter]))
    assert autotrace.shutdown(5)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[exporter]))
    for round_ in range(3):
        produce(2, f"late{round_}")
        assert not autotrace.flush(5)  # spans failed: flush says so
    assert exporter.stats()["failed"] == 6 and receiver.requests == []
    shown = warnings_about(caplog, "shut down")
    assert len(shown) == 1 and "make a new one" in shown[0]
    assert autotrace.tracer.errors()[f"OTLP export to {receiver.url} (shut down)"] == 3


def test_a_hanging_collector_never_blocks_the_instrumented_code_and_shutdown_is_bounded(receiver: Receiver) -> None:
    """While the worker waits on a hung request, traced calls keep returning; shutdown(1) returns in time."""
    receiver.script({"hang": True})
    exporter = OTLPHttpExporter(receiver.url, timeout=120)
    proc = install(exporter, schedule_delay=0.05)
    produce(10)
    assert receiver.hanging.wait(30), "the exporter never reached the receiver"
    # The worker is now blocked in the network. If on_end waited for it, this thread would hang too.
    calls = threading.Thread(target=lambda: [work(i) for i in range(500)], daemon=True)
    calls.start()
    calls.join(60)
    assert not calls.is_alive()
    started = time.monotonic()
    assert autotrace.shutdown(1.0) is False  # could not deliver in time, and says so
    assert time.monotonic() - started < 10
    # shutting the exporter down aborted the hung request: the worker ends soon after
    proc._worker.join(30)
    assert not proc._worker.is_alive()
    assert proc.stats() == {"queued": 0, "exported": 0, "dropped": 0, "failed": 1010, "retried": 0}


def test_a_full_queue_drops_and_counts_while_the_collector_hangs(receiver: Receiver) -> None:
    """With the worker stuck on a hung collector, spans past max_queue_size are dropped and counted."""
    receiver.script({"hang": True})
    exporter = OTLPHttpExporter(receiver.url, timeout=120, backoff_base=0.01)
    proc = install(exporter, schedule_delay=0.05, max_queue_size=50, max_export_batch_size=10)
    base = autotrace.export.stats()  # process-wide: other tests' drops are in it too
    produce(1)
    assert receiver.hanging.wait(30)
    produce(200)
    stats = proc.stats()
    assert stats["queued"] == 50 and stats["dropped"] == 150
    assert autotrace.export.stats()["dropped"] - base["dropped"] == 150
    receiver.release.set()  # the hung request is cut off unanswered: retried, then everything queued goes
    assert autotrace.flush(60)
    assert len(receiver.spans) == 51 and len({s["span_id"] for s in receiver.spans}) == 51
    assert proc.stats() == {"queued": 0, "exported": 51, "dropped": 150, "failed": 0, "retried": 1}


# -- Retry-After --------------------------------------------------------------------------


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delay-seconds or an HTTP date; junk and missing values give None."""
    now = time.time()
    assert parse_retry_after("7") == 7.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


# -- processes ----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_exports_its_own_spans_and_the_parents_are_not_duplicated(receiver: Receiver) -> None:
    """After os.fork the child has a fresh queue and worker: its spans arrive; the parent's queue is not resent."""
    exporter = OTLPHttpExporter(receiver.url, timeout=20)
    proc = install(exporter, schedule_delay=60.0)
    produce(20, "parent")
    assert proc.stats()["queued"] == 20  # still queued at fork time
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            produce(30, "child")
            ok = autotrace.flush(30)
            stats = proc.stats()
            code = 0 if ok and stats["exported"] == 30 and stats["queued"] == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert autotrace.flush(30)
    names = receiver.span_names()
    assert sorted(n for n in names if n.startswith("parent")) == sorted(f"parent-{n}" for n in range(20))
    assert sorted(n for n in names if n.startswith("child")) == sorted(f"child-{n}" for n in range(30))
    assert len(names) == 50
    assert proc.stats()["exported"] == 20


def _worker_body() -> None:
    produce(15, "mp")  # no flush: multiprocessing's exit finalizers must send these


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_multiprocessing_fork_workers_send_their_spans_on_exit(receiver: Receiver) -> None:
    """A multiprocessing worker (which leaves through os._exit) still exports what it queued."""
    exporter = OTLPHttpExporter(receiver.url, timeout=20)
    install(exporter, schedule_delay=60.0)
    worker = multiprocessing.get_context("fork").Process(target=_worker_body)
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert receiver.wait_for(15, timeout=30)
    assert sorted(receiver.span_names()) == sorted(f"mp-{n}" for n in range(15))


def test_queued_spans_are_sent_at_interpreter_exit_configured_from_env(receiver: Receiver) -> None:
    """A program configured only by OTEL_* variables exports its queued spans at exit (atexit hook)."""
    script = (
        "import autotrace\n"
        "for i in range(12):\n"
        "    with autotrace.span(f'exit-{i}'):\n"
        "        pass\n"
        "assert autotrace.export.stats()['queued'] == 12\n"
    )
    base = receiver.url.rsplit("/v1/traces", 1)[0]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AUTOTRACE_SAMPLE_RATE": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": base,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(receiver.span_names()) == sorted(f"exit-{i}" for i in range(12))
    assert receiver.requests[0]["headers"]["Content-Type"] == "application/x-protobuf"
    assert receiver.errors == []


# -- TLS ------------------------------------------------------------------------------------


def test_https_with_a_trusted_ca_bundle_delivers(tls_receiver: tuple[Receiver, Path]) -> None:
    """OTEL_EXPORTER_OTLP_CERTIFICATE names the CA to trust; spans then arrive over TLS."""
    receiver, cert = tls_receiver
    exporter = OTLPHttpExporter(
        env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert)}
    )
    install(exporter, schedule_delay=30.0)
    produce(5)
    assert autotrace.flush(30)
    assert sorted(receiver.span_names()) == sorted(f"span-{n}" for n in range(5))


def test_an_untrusted_certificate_fails_without_retrying(tls_receiver: tuple[Receiver, Path]) -> None:
    """A certificate the exporter cannot verify drops the batch at once (retrying would not help)."""
    receiver, _ = tls_receiver
    exporter = OTLPHttpExporter(receiver.url, backoff_base=0.01)
    proc = install(exporter, schedule_delay=30.0)
    produce(5)
    assert not autotrace.flush(30)  # spans failed: flush says so
    assert receiver.spans == []
    assert proc.stats()["failed"] == 5 and proc.stats()["retried"] == 0


def test_tls_file_settings_are_checked(tmp_path: Path) -> None:
    """A missing CA or client certificate file is a ValueError naming the variable or argument."""
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_CERTIFICATE"):
        OTLPHttpExporter("https://c:4318/v1/traces", env={"OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "no.pem")})
    with pytest.raises(ValueError, match="client_certificate_file"):
        OTLPHttpExporter("https://c:4318/v1/traces", client_certificate_file=str(tmp_path / "no.pem"), env={})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="certificate_file: not a usable CA bundle"):
        OTLPHttpExporter("https://c:4318/v1/traces", certificate_file=str(junk), env={})


def test_several_exporters_at_once_beside_the_store(receiver: Receiver, tmp_path: Path) -> None:
    """OTLP, file and console exporters from OTEL_TRACES_EXPORTER all get every span; the store keeps them too."""
    import io

    from autotrace.export import ConsoleExporter, read_jsonl

    env = {
        "OTEL_TRACES_EXPORTER": "otlp,file,console",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "AUTOTRACE_EXPORT_FILE": str(tmp_path / "t.jsonl"),
        "AUTOTRACE_SAMPLE_RATE": "1",
    }
    base = autotrace.export.stats()  # process-wide: other tests' exports are in it too
    config = autotrace.TraceConfig.from_env(env)
    out = io.StringIO()
    for exporter in config.exporters:
        if isinstance(exporter, ConsoleExporter):
            exporter.stream = out
    autotrace.configure(config)
    for i in range(20):
        work(i)
    assert autotrace.flush(30)
    assert len(receiver.spans) == 40
    assert (
        sum(
            len(ss["spans"])
            for d in read_jsonl(tmp_path / "t.jsonl")
            for rs in d["resourceSpans"]
            for ss in rs["scopeSpans"]
        )
        == 40
    )
    assert len(out.getvalue().splitlines()) == 40
    assert autotrace.get_trace_store().span_count() == 40
    assert autotrace.export.stats()["exported"] - base["exported"] == 120
