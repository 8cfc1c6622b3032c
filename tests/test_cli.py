"""The autotrace command: --help, argument errors, and real `serve` / `demo` processes driven over loopback."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotrace
from autotrace import cli
from tests.otlp_check import validate

from .server_helpers import fetch, spans_of, trace_ids

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Running:
    """A real `python -m autotrace ...` process whose stdout lines are read on a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autotrace", *args],
            cwd=ROOT,
            env=env or _env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen!r}; stderr {err!r}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture()
def run() -> Iterator[type[Running]]:
    """Start processes with run(...); every one is killed after the test."""
    started: list[Running] = []

    class Tracked(Running):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Tracked
    for p in started:
        p.kill()


# -- help and argument errors -----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["demo"]])
def test_help_for_each_command(command: list[str]) -> None:
    """`python -m autotrace [serve|demo] --help` exits 0 and lists the options."""
    done = subprocess.run(
        [sys.executable, "-m", "autotrace", *command, "--help"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    if not command:
        assert "serve" in out and "demo" in out
        return
    for option in ("--host", "--port", "--sample-rate", "--max-traces", "--token"):
        assert option in out, option
    assert ("--traffic" in out) == (command == ["demo"])


BAD_ARGS = [
    ([], "required"),
    (["nope"], "invalid choice"),
    (["serve", "--port", "abc"], "--port"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--port", "-1"], "--port"),
    (["serve", "--sample-rate", "2"], "--sample-rate"),
    (["serve", "--sample-rate", "nan"], "--sample-rate"),
    (["serve", "--sample-rate", "x"], "--sample-rate"),
    (["serve", "--max-traces", "0"], "--max-traces"),
    (["serve", "--max-traces", "1.5"], "--max-traces"),
    (["serve", "--token", ""], "--token"),
    (["serve", "--host", ""], "--host"),
    (["serve", "--traffic", "3"], "unrecognized"),
    (["demo", "--traffic", "-1"], "--traffic"),
    (["demo", "--traffic", "many"], "--traffic"),
    (["demo", "--delay", "-1"], "--delay"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGS)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad argument is an argparse error: exit status 2 and a message naming it."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_environment_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad AUTOTRACE_* variable stops the command with exit 2 naming the variable."""
    monkeypatch.setenv("AUTOTRACE_MAX_TRACES", "lots")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--port", "0"])
    assert exit_info.value.code == 2
    assert "AUTOTRACE_MAX_TRACES" in capsys.readouterr().err


# -- real processes ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_demo_while_it_still_sends_traffic(run: type[Running], sig: int) -> None:
    """Ctrl-C or SIGTERM in the middle of `--traffic 100000` stops within about a request, with status 0."""
    demo = run("demo", "--port", "0", "--traffic", "100000", "--delay", "0.01")
    url = demo.wait_for(URL.pattern).group(1)
    deadline = time.monotonic() + 60
    while fetch(url, "/ready").json()["traces"] < 3:  # traffic is flowing
        assert time.monotonic() < deadline, "the demo's traffic never arrived"
        time.sleep(0.1)
    started = time.monotonic()
    assert demo.stop(sig, timeout=30) == 0
    assert time.monotonic() - started < 15
    sent = int(demo.wait_for(r"sent (\d+) of 100000 requests").group(1))
    assert 0 < sent < 100000
    demo.wait_for(r"autotrace demo: stopped")


def test_demo_with_traffic_serves_its_traces_over_http(run: type[Running]) -> None:
    """`autotrace demo --port 0 --traffic 5` prints its URL, records 5 traces, answers every route, stops on Ctrl-C."""
    demo = run("demo", "--port", "0", "--traffic", "5", "--max-traces", "50")
    url = demo.wait_for(URL.pattern).group(1)
    demo.wait_for(r"sent 5 of 5 requests")

    deadline = time.monotonic() + 30
    while True:  # a SERVER span ends just after its answer is sent
        doc = fetch(url, "/traces").json()
        servers = [s for s in spans_of(doc) if s["kind"] == 2]
        if len(servers) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    validate(doc)
    assert len(trace_ids(doc)) == 5
    spans = spans_of(doc)
    # Exactly one SERVER span per request (the demo app's own middleware, not a second
    # one from the CLI), child of send_traffic's CLIENT span and parent of the generation.
    assert len(servers) == 5 and {s["name"] for s in servers} == {"POST /generate"}
    assert sorted(s["traceId"] for s in servers) == sorted(trace_ids(doc))
    by_id = {s["spanId"]: s for s in spans}
    assert all(by_id[s["parentSpanId"]]["kind"] == 3 for s in servers)  # SPAN_KIND_CLIENT
    roots = [s for s in spans if s["name"] == "text_completion tiny-llm"]
    assert len(roots) == 5
    for root in roots:
        attrs = {kv["key"]: kv["value"] for kv in root["attributes"]}
        assert attrs["gen_ai.request.model"] == {"stringValue": "tiny-llm"}
        assert attrs["gen_ai.operation.name"] == {"stringValue": "text_completion"}
        assert int(attrs["gen_ai.usage.input_tokens"]["intValue"]) > 0
        assert 1 <= int(attrs["gen_ai.usage.output_tokens"]["intValue"]) <= 8
        children = {s["name"] for s in spans if s.get("parentSpanId") == root["spanId"]}
        assert {"tokenize", "prefill", "decode"} <= children
        assert by_id[root["parentSpanId"]]["kind"] == 2
    resource = {kv["key"]: kv["value"] for kv in doc["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "autotrace-demo"}

    assert len(trace_ids(fetch(url, "/traces?limit=1").json())) == 1
    models = fetch(url, "/models").json()
    assert models["data"][0]["id"] == "tiny-llm"
    reply = fetch(
        url,
        "/generate",
        method="POST",
        body=b'{"prompt": "hello there", "max_tokens": 4}',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200
    lines = reply.body.decode().splitlines()
    assert lines[-1].startswith('{"done": true')
    assert fetch(url, "/health").json() == {"status": "ok"}
    assert fetch(url, "/ready").json()["traces"] >= 7  # 5 + list_models + the generate above
    assert fetch(url, "/").headers["content-type"].startswith("text/html")
    names = [s["name"] for s in spans_of(fetch(url, "/traces?clear=true").json())]
    assert names.count("text_completion tiny-llm") == 6 and names.count("list_models") == 1
    assert "text_completion tiny-llm" not in [s["name"] for s in spans_of(fetch(url, "/traces").json())]

    assert demo.stop(signal.SIGINT) == 0
    demo.wait_for(r"autotrace demo: stopped")


def test_demo_on_all_interfaces_without_a_token_warns_once(run: type[Running]) -> None:
    """`demo --host 0.0.0.0` without a token prints one warning on stderr (not a second from the logger)."""
    demo = run("demo", "--host", "0.0.0.0", "--port", "0")
    demo.wait_for(r"Press Ctrl-C to stop")
    assert demo.stop(signal.SIGINT) == 0
    assert demo.proc.stderr is not None
    warnings = [line for line in demo.proc.stderr.read().splitlines() if "reachable from other machines" in line]
    assert warnings == [
        "autotrace demo: warning: 0.0.0.0 is reachable from other machines and no token is set "
        "(--token-file PATH or $AUTOTRACE_TOKEN)"
    ]


def test_serve_runs_until_sigterm_and_frees_the_port(run: type[Running]) -> None:
    """`autotrace serve --port 0` answers /traces and /health, and exits 0 on SIGTERM."""
    serve = run("serve", "--port", "0", "--sample-rate", "0.5", "--max-traces", "10")
    url = serve.wait_for(URL.pattern).group(1)
    assert fetch(url, "/traces").json() == {"resourceSpans": []}
    ready = fetch(url, "/ready").json()
    assert ready["max_traces"] == 10
    assert serve.stop(signal.SIGTERM) == 0
    port = int(url.rsplit(":", 1)[1])
    again = run("serve", "--port", str(port))
    assert again.wait_for(URL.pattern).group(1) == url
    assert again.stop() == 0


def test_token_from_the_command_line_guards_the_demo(run: type[Running]) -> None:
    """`demo --token T` answers 401 without the token, 200 with it, and its own traffic gets through."""
    demo = run("demo", "--port", "0", "--traffic", "2", "--token", "t0ken")
    url = demo.wait_for(URL.pattern).group(1)
    demo.wait_for(r"sent 2 of 2 requests")
    assert any("Authorization: Bearer <token>" in line for line in demo.seen)
    assert not any("t0ken" in line for line in demo.seen)  # the token itself is never printed
    assert fetch(url, "/traces").status == 401
    assert fetch(url, "/generate", method="POST", body=b'{"prompt": "x"}').status == 401
    reply = fetch(url, "/traces", headers={"Authorization": "Bearer t0ken"})
    assert reply.status == 200
    assert [s["name"] for s in spans_of(reply.json())].count("text_completion tiny-llm") == 2
    assert fetch(url, "/health").status == 200
    assert demo.stop() == 0


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_port_in_use_is_one_line_naming_the_address_and_exit_2(command: str) -> None:
    """A port another program listens on: one stderr line naming the address, no traceback, exit status 2."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "autotrace", command, "--port", port],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"autotrace {command}: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "--port" in line


def test_serve_file_serves_a_recorded_jsonl(run: type[Running], tmp_path: Path) -> None:
    """`serve --file PATH` serves the traces a FileExporter recorded, re-encoded identically."""
    from autotrace.export import FileExporter

    path = tmp_path / "traces.jsonl"
    exporter = FileExporter(path)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[exporter]))
    for i in range(3):
        with autotrace.span(f"root{i}", attributes={"i": i}):
            with autotrace.span("child"):
                pass
    autotrace.shutdown(5.0)
    recorded = sorted(s["spanId"] for line in path.read_text().splitlines() for s in spans_of(json.loads(line)))
    assert len(recorded) == 6
    serve = run("serve", "--port", "0", "--file", str(path))
    url = serve.wait_for(URL.pattern).group(1)
    assert any("loaded 6 spans" in line for line in serve.seen)
    doc = fetch(url, "/traces").json()
    validate(doc)
    assert sorted(s["spanId"] for s in spans_of(doc)) == recorded
    assert len(trace_ids(doc)) == 3
    assert serve.stop() == 0


def test_serve_file_missing_is_a_usage_error() -> None:
    """`serve --file` with a missing file exits 2 naming the option."""
    done = subprocess.run(
        [sys.executable, "-m", "autotrace", "serve", "--port", "0", "--file", "/nonexistent/x.jsonl"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--file" in done.stderr
