"""The README's examples run as printed: every ```python block, and the shell sessions that talk to them.

Each ```python block runs as a script in a fresh interpreter (clean environment, its own
temporary directory, a timeout). A block that cannot run on its own says so on its first line
with ``# needs: <what>``: it is only compiled, and such blocks stay rare (``MAX_NEEDS``).

A python block that serves (it calls ``start_in_background(``) and the ```console block right
after it whose commands are all ``curl`` form a pair: the program is started, the commands are
run by a shell while it serves, and their output is compared with the printed one; then the
program gets Ctrl-C and must exit cleanly. A ```console block starting with ``$ autotrace demo``
or ``$ autotrace serve`` is run the same way. The README's port 8080 is swapped for a free one.
A standalone block's output is checked too: a ```text block right after it is its whole output
(decimal numbers, the times, masked), and ``print(...)  # 1 1 1`` comments that start with Python
literals are lines of it. ```bash and ```yaml blocks are not run (installs, gunicorn, Prometheus).

Printed output is compared like this: JSON is matched as a subset (every printed key with its
printed value; extra keys in the real answer are fine), other text exactly; output containing
``...`` is condensed, so only its shape is checked (valid JSON when it starts with ``{``).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 60
MAX_NEEDS = 2
README_PORT = "8080"


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    line: int  # line number of its opening fence
    code: str

    @property
    def where(self) -> str:
        return f"README.md line {self.line} (```{self.lang} block)"


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md, in order; an unclosed fence is an error naming its line."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^(```+)\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), None)
        assert end is not None, f"README.md line {i + 1}: the ``` fence is never closed"
        blocks.append(Block(lang, i + 1, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def needs(block: Block) -> str | None:
    """What a block says it needs to run (``# needs: ...`` on its first line), or None."""
    first = block.code.lstrip().split("\n", 1)[0]
    match = re.match(r"#\s*needs:\s*(.+)", first)
    return match.group(1).strip() if match else None


def session(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the output printed under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].strip(), []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def serving_pairs() -> list[tuple[Block, Block]]:
    """(python block that serves, the curl session printed right after it)."""
    pairs = []
    for block, after in itertools.pairwise(BLOCKS):
        if block.lang == "python" and "start_in_background(" in block.code and after.lang == "console":
            commands = [cmd for cmd, _ in session(after)]
            if commands and all(cmd.startswith("curl ") for cmd in commands):
                pairs.append((block, after))
    return pairs


PAIRS = serving_pairs()
# A ```text block right after a python block is what that block prints.
PRINTS = {
    id(block): after for block, after in itertools.pairwise(BLOCKS) if block.lang == "python" and after.lang == "text"
}
SERVED = {id(block) for block, _ in PAIRS}
STANDALONE = [b for b in PYTHON if id(b) not in SERVED]
CLI_SESSIONS = [b for b in BLOCKS if b.lang == "console" and re.match(r"\$ autotrace (demo|serve)\b", b.code.lstrip())]


def clean_env() -> dict[str, str]:
    """The environment of a newcomer: none of autotrace's or OpenTelemetry's variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def with_port(text: str, port: str) -> str:
    return re.sub(rf"\b{README_PORT}\b", port, text)


def literal(text: str) -> bool:
    """True when ``text`` is one Python literal (``8``, ``['error', 'slow']``)."""
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return True


def default_sigint() -> None:
    # A Ctrl-C must reach the child as KeyboardInterrupt even when the test runner ignores SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- comparing printed output with the real one -----------------------------------------------


def contains(actual: Any, printed: Any) -> bool:
    """True when ``actual`` has everything ``printed`` shows: dict keys as a subset, lists item by item."""
    if isinstance(printed, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in printed.items())
    if isinstance(printed, list):
        return isinstance(actual, list) and len(actual) == len(printed) and all(map(contains, actual, printed))
    return bool(actual == printed)


def mismatch(command: str, printed: list[str], actual: str) -> str | None:
    """Why ``actual`` is not the output the README printed for ``command`` (None when it is)."""
    shown = "\n".join(printed).strip()
    if not shown:
        return None
    if "..." in shown:  # condensed in the README: the shape only
        if shown.startswith("{"):
            try:
                json.loads(actual)
            except ValueError:
                return f"`{command}` printed no JSON document:\n{actual[:2000]}"
        return None
    try:
        documents = [json.loads(line) for line in printed]
    except ValueError:
        if actual.strip() != shown:
            return f"`{command}` printed\n{actual}\ninstead of\n{shown}"
        return None
    try:
        got = [json.loads(line) for line in actual.splitlines() if line.strip()]
    except ValueError:
        got = []
    if len(got) != len(documents) or not all(map(contains, got, documents)):
        return f"`{command}` printed\n{actual}\ninstead of (as a subset)\n{shown}"
    return None


def run_session(where: str, steps: list[tuple[str, list[str]]], port: str, cwd: Path) -> None:
    assert shutil.which("curl"), "the README's shell sessions need curl"
    for command, printed in steps:
        real = with_port(command, port)
        expected = [with_port(line, port) for line in printed]
        # A read-only request may be answered while the server still files the span of the
        # request before it (it ends just after its last byte): ask again, up to a bound.
        reads = not re.search(r"-X|--request|clear=|DELETE", real)
        for _attempt in range(50 if reads else 1):
            done = subprocess.run(
                real, shell=True, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
            )
            assert done.returncode == 0, f"{where}: `{real}` exited {done.returncode}: {done.stderr}"
            problem = mismatch(real, expected, done.stdout)
            if problem is None:
                break
            threading.Event().wait(0.1)
        assert problem is None, f"{where}: {problem}"


class Program:
    """A long-running example started in the background; its stdout lines arrive on a queue."""

    def __init__(self, where: str, args: list[str], cwd: Path) -> None:
        self.where = where
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, predicate: Any) -> list[str]:
        """Stdout lines up to and including the first one matching ``predicate``."""
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"{self.where}: no such output within {TIMEOUT} s; printed so far: {seen}")
            if line is None:
                self.proc.wait(TIMEOUT)
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"{self.where}: exited {self.proc.returncode} before serving: {seen}\n{stderr}")
            seen.append(line)
            if predicate(line):
                return seen

    def interrupt(self) -> int:
        """Ctrl-C, then the exit status."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            pytest.fail(f"{self.where}: still running {TIMEOUT} s after Ctrl-C")

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr else ""


# -- the tests ----------------------------------------------------------------------------------


def test_the_readme_has_its_examples() -> None:
    """The parser finds the quick start, a serving pair and a CLI session (so the tests below test something)."""
    assert len(PYTHON) >= 10 and PYTHON[0].line < 20
    assert PAIRS and CLI_SESSIONS
    marked = [b.where for b in PYTHON if needs(b)]
    assert len(marked) <= MAX_NEEDS, f"too many README blocks that cannot run as printed: {marked}"


@pytest.mark.parametrize("block", STANDALONE, ids=lambda b: f"line{b.line}")
def test_python_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    """Each ```python block runs as a script in a fresh interpreter, exits 0 and prints no traceback."""
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    if needs(block):
        compile(block.code, str(script), "exec")  # says what it needs instead of running here
        return
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: still running after {TIMEOUT} s (a server example needs its curl session)")
    assert done.returncode == 0, f"{block.where} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, f"{block.where} printed a traceback:\n{done.stderr}"
    out = [line.strip() for line in done.stdout.splitlines()]
    # `print(...)  # 1 1 1` (or `# 8: why`): a comment that starts with Python literals is what
    # that print shows, and such lines come out in that order; other comments only explain.
    lines = iter(out)
    for comment in re.findall(r"^[ \t]*print\(.*\)[ \t]+#[ \t]*(.+)$", block.code, flags=re.M):
        shown = comment.split(": ", 1)[0].strip()
        if not (literal(shown) or all(literal(token) for token in shown.split())):
            continue
        assert any(line == shown for line in lines), f"{block.where}: printed {out}, not {shown!r} in that order"
    printed = PRINTS.get(id(block))
    if printed is not None:  # the ```text block after it, times masked (they vary)
        masked = [re.sub(r"\d+\.\d+", "<n>", line.strip()) for line in printed.code.splitlines()]
        assert [re.sub(r"\d+\.\d+", "<n>", line) for line in out] == masked, (
            f"{block.where} printed\n{done.stdout}\nnot what {printed.where} shows"
        )


@pytest.mark.parametrize(("program", "console"), PAIRS, ids=lambda b: f"line{b.line}")
def test_serving_example_answers_the_curl_session_printed_after_it(
    program: Block, console: Block, tmp_path: Path
) -> None:
    """The serving example keeps serving; the curl commands printed after it get the printed answers; Ctrl-C exits 0."""
    port = free_port()
    script = tmp_path / "readme_app.py"
    script.write_text(with_port(program.code, port), encoding="utf-8")
    app = Program(program.where, [sys.executable, str(script)], tmp_path)
    app.read_until(lambda line: True)  # its first line says it is serving
    run_session(console.where, session(console), port, tmp_path)
    status = app.interrupt()
    assert status == 0, f"{program.where}: Ctrl-C gave exit status {status}:\n{app.stderr()}"


@pytest.mark.parametrize("console", CLI_SESSIONS, ids=lambda b: f"line{b.line}")
def test_cli_session_runs_as_printed(console: Block, tmp_path: Path) -> None:
    """`autotrace demo`/`serve` as printed: its banner, then the printed curl answers; Ctrl-C exits 0."""
    (command, banner), *rest = session(console)
    port = free_port()
    args = command.split("#", 1)[0].split()
    app = Program(console.where, [sys.executable, "-m", "autotrace", *args[1:], "--port", port], tmp_path)
    expected = [with_port(line, port) for line in banner]
    printed = app.read_until(lambda line: line == expected[-1])
    assert printed == expected, f"{console.where}: `{command}` printed\n" + "\n".join(printed)
    run_session(console.where, rest, port, tmp_path)
    status = app.interrupt()
    assert status == 0, f"{console.where}: Ctrl-C gave exit status {status}:\n{app.stderr()}"


def test_quick_start_prints_its_spans_and_sets_the_sample_rate(tmp_path: Path) -> None:
    """The quick start sets the sample rate and says the default; its output is OTLP/JSON with both spans."""
    quick_start = PYTHON[0].code
    assert "sample_rate=1.0" in quick_start and "0.1" in quick_start and "10%" in quick_start
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    (resource_spans,) = doc["resourceSpans"]
    service = {kv["key"]: kv["value"] for kv in resource_spans["resource"]["attributes"]}["service.name"]
    assert service == {"stringValue": "tiny-llm"}
    spans = {s["name"]: s for scope in resource_spans["scopeSpans"] for s in scope["spans"]}
    assert sorted(spans) == ["generate", "tokenize"]
    assert spans["tokenize"]["parentSpanId"] == spans["generate"]["spanId"]
    assert spans["generate"]["kind"] == 2  # kind="server"
    assert {"key": "tokens.count", "value": {"intValue": "4"}} in spans["tokenize"]["attributes"]


def test_genai_names_only_on_model_calls_in_the_readme_examples() -> None:
    """A README example uses gen_ai.* names only on a model-call span, one that says its gen_ai.operation.name."""
    for block in PYTHON:
        if "gen_ai.operation.name" in block.code:
            continue  # a model call, as the GenAI conventions require it to say
        for match in re.finditer(r"gen_ai\.[\w.]+", block.code):
            line = block.line + block.code[: match.start()].count("\n") + 1
            pytest.fail(f"README.md line {line}: {match.group()} on a span that is not a model call (use app.*)")


def test_the_sampler_arg_default_is_what_the_code_does() -> None:
    """README: OTEL_TRACES_SAMPLER_ARG defaults to 1.0 under a ratio sampler; with nothing set autotrace records 0.1."""
    from autotrace.config import TraceConfig

    row = next(line for line in README.read_text().splitlines() if line.startswith("| `OTEL_TRACES_SAMPLER_ARG`"))
    assert "1.0 when `OTEL_TRACES_SAMPLER` names a ratio sampler" in row and "autotrace records 0.1" in row
    for sampler in ("traceidratio", "parentbased_traceidratio"):
        assert TraceConfig.from_env({"OTEL_TRACES_SAMPLER": sampler}).sample_rate == 1.0
    assert TraceConfig.from_env({}).sample_rate == 0.1
    assert TraceConfig.from_env({"OTEL_TRACES_SAMPLER_ARG": "0.25"}).sample_rate == 0.25


def test_printed_ready_answers_show_every_key_the_server_sends() -> None:
    """Every `/ready` answer printed in the README has exactly the keys a real /ready answer has."""
    import urllib.request

    from autotrace.server import start_in_background
    from autotrace.store import TraceStore

    with start_in_background(port=0, store=TraceStore()) as server:
        with urllib.request.urlopen(f"{server.url}/ready", timeout=TIMEOUT) as answer:
            real = set(json.loads(answer.read()))
    printed = [
        (block.line, out)
        for block in BLOCKS
        if block.lang == "console"
        for command, output in session(block)
        if command.split("#", 1)[0].rstrip().endswith("/ready")
        for out in output
    ]
    assert len(printed) >= 2, "the README prints /ready answers in its serving and demo sessions"
    for line, out in printed:
        assert set(json.loads(out)) == real, f"README.md block at line {line}: /ready printed {out}; real keys {real}"


def test_package_description_example_runs_and_keeps_genai_names_for_model_calls(tmp_path: Path) -> None:
    """docs/description.md (the index page): its python example runs, with gen_ai.* names on model calls only."""
    text = (ROOT / "docs" / "description.md").read_text(encoding="utf-8")
    examples = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert examples, "the package description shows a python example"
    for code in examples:
        if "gen_ai.operation.name" not in code:
            assert not re.search(r"gen_ai\.[\w.]+", code), f"gen_ai.* on a span that is not a model call:\n{code}"
        script = tmp_path / "description_example.py"
        script.write_text(code, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
