"""Export failures and dropped spans show on stderr, once, when the application set up no logging."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DEAD_COLLECTOR = """
import sys
import autotrace
from autotrace.export import OTLPHttpExporter

{setup}
url = f"http://127.0.0.1:{{sys.argv[1]}}/v1/traces"
autotrace.configure(sample_rate=1.0, exporters=[OTLPHttpExporter(url, timeout=0.5, max_retries=1)])
results = []
for batch in range(3):
    for i in range(5):
        with autotrace.span(f"s{{batch}}.{{i}}"):
            pass
    results.append(autotrace.flush(30))
print(results, autotrace.export.stats()["failed"])
"""


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_a_dead_collector_is_one_stderr_line_and_flush_says_false(dead_port: int) -> None:
    """Three failed flushes to a refusing collector: flush() is False each time, stderr has one line naming it."""
    done = run(DEAD_COLLECTOR.format(setup=""), str(dead_port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[False,", "False,", "False]", "15"]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("autotrace: OTLP export to ") and f"127.0.0.1:{dead_port}" in lines[0]
    assert "dropped 5 spans" in lines[0] and "ConnectionRefusedError" in lines[0]


def test_an_application_handler_gets_the_warning_instead(dead_port: int) -> None:
    """With logging configured by the application, the warning goes to its handler and nothing else reaches stderr."""
    setup = "import logging; logging.basicConfig(stream=sys.stdout, format='APP %(name)s %(message)s')"
    done = run(DEAD_COLLECTOR.format(setup=setup), str(dead_port))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    app_lines = [line for line in done.stdout.splitlines() if line.startswith("APP autotrace autotrace: OTLP export")]
    assert len(app_lines) == 1, done.stdout
    assert done.stdout.splitlines()[-1] == "[False, False, False] 15"


def test_a_full_export_queue_is_said_once() -> None:
    """Spans dropped because the export queue is full: one stderr line saying so, the drops counted."""
    code = """
import threading
import autotrace
from autotrace.export import BatchSpanProcessor

class Stuck:
    release = threading.Event()
    def export(self, spans):
        self.release.wait(60)
        return True

exporter = Stuck()
processor = BatchSpanProcessor(exporter, max_queue_size=1, max_export_batch_size=1)
autotrace.configure(sample_rate=1.0, exporters=[processor])
for i in range(20):
    with autotrace.span("s"):
        pass
exporter.release.set()
print(autotrace.export.stats()["dropped"] >= 18)
"""
    done = run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("autotrace: the export queue is full (max_queue_size=1)")


def test_the_fallback_stops_after_its_cap() -> None:
    """A flood of distinct warnings is cut off at MAX_LINES lines plus one line saying so."""
    code = """
import logging
import autotrace
from autotrace._stderr import MAX_LINES
log = logging.getLogger("autotrace")
for i in range(MAX_LINES + 50):
    log.warning("autotrace: warning %d\\nsecond line", i)
"""
    done = run(code)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    from autotrace._stderr import MAX_LINES

    assert len(lines) == MAX_LINES + 1
    assert lines[0] == "autotrace: warning 0 second line"
    assert lines[-1].startswith(f"autotrace: more than {MAX_LINES} warnings")
