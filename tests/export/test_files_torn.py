"""A full disk or a file size limit never leaves a torn line, and the reader skips a bad line instead of failing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autotrace
from autotrace.export import FileExporter, load_jsonl_into, read_jsonl
from autotrace.spans import Span
from autotrace.store import TraceStore
from autotrace.testing import capture_spans
from tests.otlp_check import validate

from .conftest import spans_of

# Run in a child: RLIMIT_FSIZE is process-wide. Batch A fits, batch B is cut short by the limit (the
# kernel writes up to it, then refuses with EFBIG), batch C goes out once the limit is lifted.
_CHILD = textwrap.dedent(
    """
    import json, logging, os, resource, signal, sys
    import autotrace
    from autotrace.export import FileExporter
    from autotrace.testing import capture_spans

    def batch(prefix, count):
        with capture_spans() as got:
            for n in range(count):
                with autotrace.span(f"{prefix}{n}", attributes={"pad": "x" * 200}):
                    pass
        return list(got)

    logging.basicConfig()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
    path = sys.argv[1]
    exporter = FileExporter(path)
    a, b, c = batch("a", 2), batch("b", 40), batch("c", 3)
    results = [exporter.export(a)]
    size = os.path.getsize(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, hard))
    results.append(exporter.export(b))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    results.append(exporter.export(c))
    exporter.shutdown()
    print(json.dumps({"results": results, "stats": exporter.stats(), "limit_hit_at": size + 1000}))
    """
)


def test_a_write_cut_short_by_the_file_size_limit_leaves_no_torn_line(tmp_path: Path) -> None:
    """A short write (RLIMIT_FSIZE) is cut back off the file, counted failed; the batches around it stay whole."""
    path = tmp_path / "t.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["results"] == [True, False, True]
    assert report["stats"] == {"exported": 5, "failed": 40}
    docs = read_jsonl(path, strict=True)  # every line a whole request
    names = [s["name"] for doc in docs for s in spans_of(validate(doc))]
    assert names == ["a0", "a1", "c0", "c1", "c2"]
    assert path.read_bytes().endswith(b"\n")
    assert "EFBIG" in done.stderr or "File too large" in done.stderr  # logged: the limit was really hit


def test_a_full_disk_is_a_counted_failure(tmp_path: Path) -> None:
    """ENOSPC (/dev/full) fails the batch, counted failed, with no exception reaching the caller."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    exporter = FileExporter("/dev/full")
    try:
        assert exporter.export([Span("x"), Span("y")]) is False
        assert exporter.stats() == {"exported": 0, "failed": 2}
    finally:
        exporter.shutdown()


def _write_with_torn_line(path: Path) -> None:
    with capture_spans() as got:
        for name in ("first", "second"):
            with autotrace.span(name):
                pass
    exporter = FileExporter(path)
    exporter.export(got[:1])
    exporter.shutdown()
    whole = path.read_bytes()
    with open(path, "ab") as fh:  # what the old exporter left after a failed write: half a line, no newline
        fh.write(whole[: len(whole) // 2])
        fh.write(b"\n\xff\xfe not utf-8\n[1, 2]\n")
    exporter = FileExporter(path)
    exporter.export(got[1:])
    exporter.shutdown()


def test_the_reader_skips_and_reports_bad_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Torn, non-UTF-8 and non-request lines are skipped with their numbers, logged once; good lines are read."""
    path = tmp_path / "t.jsonl"
    _write_with_torn_line(path)
    bad: list[tuple[int, str]] = []
    with caplog.at_level(logging.WARNING, logger="autotrace"):
        docs = read_jsonl(path, bad_lines=bad)
    assert [s["name"] for doc in docs for s in spans_of(validate(doc))] == ["first", "second"]
    assert [(n, reason.split(" (")[0]) for n, reason in bad] == [
        (2, "not JSON"),
        (3, "not UTF-8"),
        (4, "not an OTLP ExportTraceServiceRequest"),
    ]
    (message,) = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
    assert "skipped 3 bad lines" in message and "line 2: not JSON" in message
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not JSON"):
        read_jsonl(path, strict=True)


def test_loading_a_file_with_a_torn_line_keeps_the_good_batches(tmp_path: Path) -> None:
    """load_jsonl_into (serve --file) loads the requests around a bad line and reports the bad ones."""
    path = tmp_path / "t.jsonl"
    _write_with_torn_line(path)
    with open(path, "a") as fh:  # JSON and a request, but a span that cannot be rebuilt
        fh.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "traceId": "zz"}]}]}]}\n')
    store = TraceStore()
    bad: list[tuple[int, str]] = []
    assert load_jsonl_into(store, path, bad_lines=bad) == 2
    assert sorted(s.name for trace in store.traces() for s in trace) == ["first", "second"]
    assert [n for n, _ in bad] == [2, 3, 4, 6]
