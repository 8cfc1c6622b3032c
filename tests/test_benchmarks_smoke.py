"""benchmarks/run.py --smoke runs every case of issue 6 and writes its JSON (figures only, no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_OTEL = importlib.util.find_spec("opentelemetry.sdk") is not None

# issue 6's cases: bare call, wrapt pass-through, @traced sampled and unsampled, with span() sampled,
# a root with 10 nested children, async @traced, a traced generator per item
AUTOTRACE_CASES = [
    "bare",
    "wrapt",
    "traced_sampled",
    "traced_unsampled",
    "span_sampled",
    "span_unsampled",
    "bare_root",
    "root10",
    "bare_async",
    "async_sampled",
    "bare_gen",
    "gen_sampled",
    # issue 20: streams and async, sampled and not
    "async_unsampled",
    "gen_unsampled",
    "bare_agen",
    "agen_sampled",
    "agen_unsampled",
]
# the same cases with opentelemetry-sdk, when it is installed
OTEL_CASES = [
    "otel_sampled",
    "otel_unsampled",
    "otel_with_sampled",
    "otel_with_unsampled",
    "otel_root10",
    "otel_async",
    "otel_gen",
    "otel_agen",
]
MEMORY = ["traced_traces_of_10", "traced_traces_of_1", "traces_of_10", "traces_of_1"]


def number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def spread_ok(d: dict[str, Any]) -> None:
    """A median with its quartiles and range, all numbers, in order."""
    for k in ("median", "q1", "q3", "min", "max"):
        assert number(d[k]), (k, d)
    assert d["min"] <= d["median"] <= d["max"], d


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One --smoke run of the benchmark in a subprocess, its JSON written to a temporary path."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_every_timed_case_has_a_median_and_spread(smoke: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """Each single-thread case of the issue (and OpenTelemetry's when installed) has numeric figures."""
    _, doc = smoke
    assert doc["mode"] == "smoke"
    expected = AUTOTRACE_CASES + (OTEL_CASES if HAVE_OTEL else [])
    assert set(expected) <= set(doc["cases"]), sorted(set(expected) - set(doc["cases"]))
    for key in expected:
        c = doc["cases"][key]
        for k in ("median_ns", "q1_ns", "q3_ns", "min_ns", "max_ns"):
            assert number(c[k]) and c[k] > 0, (key, k, c)
        assert c["min_ns"] <= c["median_ns"] <= c["max_ns"], (key, c)
        assert c["rounds"] >= 2, (key, c)


def test_two_thread_throughput_is_reported(smoke: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """The 2-thread/1-thread ratio comes from interleaved pairs, with a spread, for both libraries."""
    _, doc = smoke
    sides = ["autotrace"] + (["opentelemetry"] if HAVE_OTEL else [])
    for side in sides:
        t = doc["threads"][side]
        for k in ("ratio", "cpu_ratio", "tail", "one_thread_ns_per_call", "two_threads_ns_per_call"):
            spread_ok(t[k])
        assert t["pairs"] >= 2 and len(t["ratios"]) == t["pairs"], t
        assert t["ratio"]["median"] > 0


def test_memory_and_export_are_reported(smoke: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """Bytes per stored span (traces of 10 and of 1 span) and export throughput, with spreads."""
    _, doc = smoke
    for key in MEMORY + (["otel_single_span"] if HAVE_OTEL else []):
        m = doc["memory"][key]
        spread_ok(m)
        assert m["median"] > 0, (key, m)
    ex = doc["export"]
    assert ex["spans"] == 10_000
    rates = ["export_traces_spans_per_s", "with_json_dumps_spans_per_s", "direct_json_spans_per_s"]
    for k in rates + (["otel_protobuf_spans_per_s"] if HAVE_OTEL else []):
        assert number(ex[k]) and ex[k] > 0
        assert ex[f"{k}_min"] <= ex[k] <= ex[f"{k}_max"]
    spread_ok(ex["direct_over_dumps"])


def test_bars_are_listed_but_not_judged(smoke: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    """A smoke run prints every bar and marks none of them as judged (it exits 0 whatever they say)."""
    proc, doc = smoke
    names = [b["bar"] for b in doc["bars"]]
    assert any("2-thread" in n for n in names) and any("bytes" in n for n in names), names
    assert any("json.dumps(export_traces())" in n for n in names), names
    if HAVE_OTEL:
        assert any("traced async generator sampled" in n for n in names), names
    assert all(b["judged"] is False for b in doc["bars"])
    assert "| bare call |" in proc.stdout
    assert "traces of 1 span" in proc.stdout


def test_export_faults_smoke_runs_every_mode_and_prints_its_bars() -> None:
    """benchmarks/export_faults.py --smoke: every collector mode in its own process, the bars printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "export_faults.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for mode in ("no exporter", "collector 200", "collector 503 always", "collector hangs", "connection refused"):
        assert f"| {mode} |" in out, mode
    assert out.count("(smoke, not judged)") == 7
    assert "| json, compression=gzip |" in out and "| protobuf, compression=none |" in out


def test_agen_steps_smoke_prints_every_step_of_the_async_generator_driver() -> None:
    """benchmarks/agen_steps.py --smoke: one row per step of the driver, the real rows and OTel's when installed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "agen_steps.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    labels = [r[0].strip() for r in rows[1:]]
    assert labels[:2] == ["bare async generator", "+ an async generator layer around it"], labels
    assert {"traced async generator, sampled", "traced async generator, unsampled"} <= set(labels)
    assert ("OTel async generator in start_as_current_span" in labels) == HAVE_OTEL
    assert all(float(r[1]) > 0 for r in rows[1:]), rows


def test_server_section_smoke_reports_every_route_and_client_count(tmp_path: Path) -> None:
    """run.py --server-only --smoke: /traces?limit=10 and the bare route at 1, 4, 16 clients; bars printed, unjudged."""
    out = tmp_path / "server.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--server-only", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    runs = doc["server"]["runs"]
    for route in ("traces", "bare"):
        for clients in (1, 4, 16):
            r = runs[f"{route}@{clients}"]
            assert r["requests"] > 0 and r["failures"] == 0, r
            for k in ("requests_per_s", "p50_ms", "p99_ms"):
                assert number(r[k]) and r[k] > 0, (k, r)
            assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
    assert [b["judged"] for b in doc["bars"]] == [False, False]
    assert "| `/traces?limit=10` | 16 |" in done.stdout and "(smoke, not judged)" in done.stdout
