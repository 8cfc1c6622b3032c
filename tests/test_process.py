"""Spans survive the ways processes end: pool workers terminated by SIGTERM, and SIGTERM itself (opt-in)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autotrace
from autotrace.export import read_jsonl

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and start methods")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _spans(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    docs = read_jsonl(path)
    return [s for doc in docs for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def _pool_example() -> str:
    """The README's process-pool example (the python block right after **Process pools.**)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\*\*Process pools\.\*\*.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no process-pool example"
    return match.group(1)


@pytest.mark.parametrize("method", ["as printed", "fork", "spawn", "forkserver"])
def test_pool_workers_deliver_every_span_before_the_pool_terminates_them(tmp_path: Path, method: str) -> None:
    """The README's `with Pool() as pool:` example, as printed and under each start method: 200 of 200 spans."""
    code = _pool_example()
    if method != "as printed":
        code = code.replace("multiprocessing.Pool(", f'multiprocessing.get_context("{method}").Pool(')
        assert "get_context" in code
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200"]
    spans = _spans(tmp_path / "spans.jsonl")
    assert len(spans) == 200 == len({s["spanId"] for s in spans})
    assert {s["name"] for s in spans} == {"work"}


ATTACHED_POOL = textwrap.dedent(
    """
    import multiprocessing, sys
    import autotrace
    from autotrace import propagation, span
    from autotrace.export import FileExporter

    PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


    def setup():
        autotrace.configure(sample_rate=1.0, exporters=[FileExporter(sys.argv[1])])


    def work(x):
        with propagation.attach(PARENT):  # the caller's context, sent with the job
            with span("work"):
                return x


    if __name__ == "__main__":
        setup()
        with multiprocessing.get_context("fork").Pool(2, initializer=setup) as pool:
            pool.map(work, range(50))
    """
)


def test_pool_tasks_continuing_a_remote_trace_deliver_their_spans(tmp_path: Path) -> None:
    """A task whose span has a remote parent made current by propagation.attach() is flushed at its end too."""
    (tmp_path / "attached.py").write_text(ATTACHED_POOL, encoding="utf-8")
    out = tmp_path / "spans.jsonl"
    done = subprocess.run(
        [sys.executable, "attached.py", str(out)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    spans = _spans(out)
    assert len(spans) == 50
    assert {s["parentSpanId"] for s in spans} == {"b7ad6b7169203331"}


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import autotrace
    from autotrace import span
    from autotrace.export import BatchSpanProcessor, FileExporter

    path, mode = sys.argv[1], sys.argv[2]


    class Stuck:
        def export(self, spans):
            time.sleep(120)
            return True


    exporter = Stuck() if mode == "stuck" else FileExporter(path)
    autotrace.configure(sample_rate=1.0, exporters=[BatchSpanProcessor(exporter, schedule_delay=60)])
    if mode == "chained":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(7))
    if mode == "ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode != "none":
        autotrace.flush_on_sigterm(timeout=0.5 if mode == "stuck" else 5.0)
    for i in range(100):
        with span("work", attributes={"i": i}):
            pass
    print("ready", flush=True)
    for _ in range(1200):
        time.sleep(0.1)
        if mode == "ignored" and exporter.stats()["exported"] == 100:
            sys.exit(0)  # flushed by the signal, which was then ignored: still running
    """
)


def _terminated(tmp_path: Path, mode: str) -> tuple[int, list[dict[str, object]]]:
    """Run the script in ``mode``, SIGTERM it once its spans are queued; its exit status and the spans it wrote."""
    script = tmp_path / "victim.py"
    script.write_text(SIGTERM_SCRIPT, encoding="utf-8")
    out = tmp_path / f"{mode}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), mode], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, _spans(out)


def test_sigterm_with_flush_on_sigterm_delivers_queued_spans_and_dies_of_the_signal(tmp_path: Path) -> None:
    """flush_on_sigterm(): the 100 queued spans reach the file, then the exit status is SIGTERM's."""
    code, spans = _terminated(tmp_path, "default")
    assert code == -signal.SIGTERM
    assert len(spans) == 100 == len({s["spanId"] for s in spans})


def test_sigterm_flush_chains_to_the_handler_installed_before(tmp_path: Path) -> None:
    """A Python SIGTERM handler installed before (sys.exit(7)) runs after the flush: status 7, all spans."""
    code, spans = _terminated(tmp_path, "chained")
    assert code == 7
    assert len(spans) == 100


def test_sigterm_flush_under_sig_ign_flushes_and_keeps_running(tmp_path: Path) -> None:
    """With SIGTERM ignored before the opt-in, the signal flushes the spans and the process goes on (exit 0)."""
    code, spans = _terminated(tmp_path, "ignored")
    assert code == 0
    assert len(spans) == 100


def test_sigterm_flush_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    """An exporter stuck forever does not keep a SIGTERMed process alive: it still dies of the signal."""
    code, _ = _terminated(tmp_path, "stuck")
    assert code == -signal.SIGTERM


def test_without_the_opt_in_sigterm_loses_the_queued_spans(tmp_path: Path) -> None:
    """What the README warns about: SIGTERM with no handler ends the process with its queue unsent."""
    code, spans = _terminated(tmp_path, "none")
    assert code == -signal.SIGTERM
    assert spans == []


def test_flush_on_sigterm_rejects_bad_timeouts_and_other_threads() -> None:
    """A bad timeout, or a call from a thread other than the main one, is a ValueError saying why."""
    import threading

    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="timeout"):
            autotrace.flush_on_sigterm(bad)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def call() -> None:
        try:
            autotrace.flush_on_sigterm(1.0)
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    t.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
