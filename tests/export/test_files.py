"""FileExporter and its reader, and the console exporter's format."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autotrace
from autotrace.export import (
    ConsoleExporter,
    FileExporter,
    decode_spans,
    load_jsonl_into,
    read_jsonl,
)
from autotrace.otlp import encode_span
from autotrace.spans import Span, SpanContext
from autotrace.testing import capture_spans
from tests.otlp_check import validate

from .conftest import spans_of


def rich_trace() -> None:
    """One trace using every field the encoder writes."""
    other = SpanContext(0x1234, 0x99, sampled=True, is_remote=True, trace_state="k=v")
    with autotrace.span(
        "generate",
        kind="server",
        attributes={
            "s": "text é",
            "i": 2**62,
            "f": 0.5,
            "nan": float("nan"),
            "inf": float("-inf"),
            "b": True,
            "list": [1, 2, 3],
            "strs": ["a", "b"],
        },
        links=[other],
    ) as root:
        root.add_event("first_token", {"n": 1})
        with autotrace.span("decode") as child:
            child.set_status("error", "boom")
        try:
            with autotrace.span("fails"):
                raise ValueError("bad")
        except ValueError:
            pass


def test_file_round_trip_is_valid_otlp_and_rebuilds_identical_spans(tmp_path: Path) -> None:
    """Lines are OTLP requests the proto schema accepts; spans loaded back re-encode to the same JSON."""
    path = tmp_path / "traces.jsonl"
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[FileExporter(path)]))
    with capture_spans() as spans:
        rich_trace()
    assert autotrace.flush(30)
    with autotrace.span("second-batch"):
        pass
    assert autotrace.shutdown(30)
    docs = read_jsonl(path)
    assert len(docs) == 2  # one line per batch
    written = [sp for doc in docs for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    for doc in docs:
        spans_of(validate(doc))
    assert written[:3] == [encode_span(s) for s in spans]
    store = autotrace.TraceStore()
    assert load_jsonl_into(store, path) == 4
    rebuilt = [s for trace in store.traces() for s in trace]
    assert sorted(json.dumps(encode_span(s), sort_keys=True) for s in rebuilt) == sorted(
        json.dumps(sp, sort_keys=True) for sp in written
    )
    served = store.export()  # what /traces would answer
    assert sum(len(ss["spans"]) for rs in served["resourceSpans"] for ss in rs["scopeSpans"]) == 4


def test_file_appends_and_keeps_what_was_there(tmp_path: Path) -> None:
    """The exporter appends to an existing file, one line per export call."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"resourceSpans": []}\n')
    exporter = FileExporter(str(path))
    assert exporter.export([Span("a", end_time_unix_nano=None)])
    assert exporter.export([Span("b"), Span("c")])
    exporter.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert [len(decode_spans(json.loads(line))) for line in lines] == [0, 1, 2]
    assert exporter.stats() == {"exported": 3, "failed": 0}


def test_file_lines_stay_whole_when_threads_write_at_once(tmp_path: Path) -> None:
    """Concurrent exports never interleave lines."""
    path = tmp_path / "t.jsonl"
    exporter = FileExporter(path)
    big = {"payload": "z" * 20_000}

    def write() -> None:
        for _ in range(20):
            exporter.export([Span("w", attributes=big) for _ in range(3)])

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    docs = read_jsonl(path)
    assert len(docs) == 80
    assert all(len(decode_spans(d)) == 3 for d in docs)


def test_file_exporter_rejects_a_missing_folder_and_counts_write_failures(tmp_path: Path) -> None:
    """A path in a missing folder is a clear ValueError; a write that fails later is counted, not raised."""
    with pytest.raises(ValueError, match="does not exist"):
        FileExporter(tmp_path / "nope" / "t.jsonl")
    with pytest.raises(ValueError, match="folder"):
        FileExporter(tmp_path)
    target = tmp_path / "gone"
    target.mkdir()
    exporter = FileExporter(target / "t.jsonl")
    target.rmdir()
    assert exporter.export([Span("x")]) is False
    assert exporter.stats()["failed"] == 1


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    """With strict=True, a line that is not JSON (or not a request) is a ValueError with file and line number."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"resourceSpans": []}\n\n{oops\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:3: not JSON"):
        read_jsonl(path, strict=True)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r":1: not an OTLP"):
        read_jsonl(path, strict=True)


def test_a_remote_parent_trace_state_and_flags_survive_a_jsonl_line() -> None:
    """Spans below a remote parent read back with their traceState and span flags (random, remote parent) intact."""
    remote = SpanContext(0xAB, 0xCD, True, True, "vendor=x", random=False)
    with capture_spans() as spans, autotrace.span("server", parent=remote), autotrace.span("inner"):
        pass
    original = [encode_span(s) for s in spans]
    assert [(sp["flags"], sp["traceState"]) for sp in original] == [(0x101, "vendor=x"), (0x301, "vendor=x")]
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": original}]}]})
    rebuilt = decode_spans(json.loads(line))
    assert [encode_span(s) for s in rebuilt] == original
    assert rebuilt[1].get_span_context() == SpanContext(0xAB, rebuilt[1]._span_id, True, False, "vendor=x", False)


def test_decode_spans_accepts_base64_ids_and_rejects_broken_spans() -> None:
    """Ids in protobuf's base64 JSON form are read too; zero or malformed ids are refused with a reason."""
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "AAAAAAAAAAAAAAAAAAAAAQ==",
                                "spanId": "AAAAAAAAAAI=",
                                "name": "x",
                                "startTimeUnixNano": 5,
                                "endTimeUnixNano": "9",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (span,) = decode_spans(doc)
    assert (span.trace_id, span.span_id, span.duration_ns) == ("0" * 31 + "1", "0" * 15 + "2", 4)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "0" * 16
    with pytest.raises(ValueError, match="spanId is all zeros"):
        decode_spans(doc)


def test_console_prints_one_indented_line_per_span() -> None:
    """Children are indented under their parent, with duration in ms, status and a few attributes."""
    out = io.StringIO()
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[ConsoleExporter(out)]))
    with autotrace.span("handler", kind="server", attributes={"http.route": "/generate"}) as root:
        with autotrace.span("tokenize", attributes={"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}):
            pass
        with autotrace.span("decode") as d:
            d.set_status("error", "boom")
    assert autotrace.flush(30)
    lines = out.getvalue().splitlines()
    tid = root.trace_id[:8]
    assert re.fullmatch(rf"{tid} handler \[server\] \d+\.\d\d ms UNSET  http\.route='/generate'", lines[0])
    assert re.fullmatch(rf"{tid}   tokenize \d+\.\d\d ms UNSET  a=1 b=2 c=3 d=4 \+1 more", lines[1])
    assert re.fullmatch(rf"{tid}   decode \d+\.\d\d ms ERROR \('boom'\)", lines[2])
    assert len(lines) == 3


def test_console_defaults_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream the exporter writes to whatever sys.stderr is when it writes."""
    exporter = ConsoleExporter()
    assert exporter.export([Span("hello")])
    assert "hello" in capsys.readouterr().err


def test_console_shows_a_remote_parent_child_as_a_root() -> None:
    """A span whose parent is elsewhere starts its own tree instead of disappearing."""
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, sampled=True, is_remote=True)
    out = io.StringIO()
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[ConsoleExporter(out)]))
    with autotrace.span("server", parent=ctx):
        pass
    assert autotrace.flush(30)
    assert out.getvalue().startswith("0af76519 server ")


def test_protobuf_messages_match_the_official_json_mapping() -> None:
    """The exporter's field-by-field protobuf equals ParseDict of the same OTLP/JSON (every field kind)."""
    from autotrace.export._protobuf import _Protobuf
    from autotrace.otlp import encode_spans

    with capture_spans() as spans:
        rich_trace()
        with autotrace.span("odd", attributes={"empty": [], "neg": -3, "zero": 0.0}) as s:
            s.add_event("e", {"x": "y"})
    doc = encode_spans(spans)
    built = _Protobuf().request(doc)
    assert built == validate(doc)
    assert len(built.SerializeToString()) > 0


_values = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4),
    st.lists(st.text(max_size=5), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(max_size=30),
    attributes=st.dictionaries(st.text(min_size=1, max_size=10), _values, max_size=6),
    kind=st.sampled_from(["internal", "server", "client", "producer", "consumer"]),
    error=st.one_of(st.none(), st.text(max_size=10)),
)
def test_any_span_survives_a_trip_through_a_jsonl_line(
    name: str, attributes: dict[str, object], kind: str, error: str | None
) -> None:
    """encode -> JSON text -> decode -> encode gives the same OTLP/JSON for any name, attributes, kind, status."""
    span = Span(name, attributes=attributes, kind=kind, start_time_unix_nano=10**18, end_time_unix_nano=10**18 + 5)
    span.add_event("ev", attributes)
    if error is not None:
        span.set_status("error", error)
    original = encode_span(span)
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [original]}]}]}, allow_nan=False)
    (rebuilt,) = decode_spans(json.loads(line))
    assert json.dumps(encode_span(rebuilt), sort_keys=True) == json.dumps(original, sort_keys=True)
