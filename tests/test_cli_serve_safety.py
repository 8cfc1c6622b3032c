"""`autotrace serve`: the token kept out of `ps`, and hostile --file input as a usage error, not a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotrace import cli

from .server_helpers import fetch
from .test_cli import ROOT, URL, Running, _env


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


def _configure(argv: list[str]) -> None:
    """Parse ``argv`` and apply it as `autotrace` would, without starting a server."""
    parser = cli.build_parser()
    cli._configure(parser, parser.parse_args(argv))


def test_token_file_guards_the_server_and_keeps_the_token_out_of_argv(run: type[Running], tmp_path: Path) -> None:
    """`serve --token-file PATH` requires the token from the file's first line; argv never holds it."""
    path = tmp_path / "token"
    path.write_text("f1le-t0ken\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    serve = run("serve", "--port", "0", "--token-file", str(path))
    url = serve.wait_for(URL.pattern).group(1)
    assert "f1le-t0ken" not in " ".join(serve.proc.args)  # type: ignore[arg-type]
    assert fetch(url, "/traces").status == 401
    assert fetch(url, "/traces", headers={"Authorization": "Bearer f1le-t0ken"}).status == 200
    assert serve.stop() == 0
    assert serve.proc.stderr is not None and "warning" not in serve.proc.stderr.read()


def test_the_token_from_the_environment_guards_serve(run: type[Running]) -> None:
    """AUTOTRACE_TOKEN is the other documented way: no flag, no warning."""
    serve = run("serve", "--port", "0", env=_env(AUTOTRACE_TOKEN="env-t0ken"))
    url = serve.wait_for(URL.pattern).group(1)
    assert fetch(url, "/traces").status == 401
    assert fetch(url, "/traces", headers={"Authorization": "Bearer env-t0ken"}).status == 200
    assert serve.stop() == 0


def test_token_on_the_command_line_still_works_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """`--token T` keeps working but warns on stderr that ps shows it, without printing the token."""
    _configure(["serve", "--port", "0", "--token", "cl1-t0ken"])
    err = capsys.readouterr().err
    assert "--token is visible" in err and "--token-file" in err and "cl1-t0ken" not in err


@pytest.mark.parametrize(
    "content, argv_extra, message",
    [
        ("", [], "is empty"),
        ("\n\n", [], "is empty"),
        (None, [], "cannot read"),
        ("t", ["--token", "x"], "not both"),
    ],
    ids=["empty", "blank", "missing", "both"],
)
def test_bad_token_files_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, argv_extra: list[str], message: str
) -> None:
    """An empty, blank or unreadable --token-file, or --token with it, exits 2 naming the problem."""
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        _configure(["serve", "--port", "0", "--token-file", str(path), *argv_extra])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


_BIG = (
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",'
    '"spanId":"b7ad6b7169203331","name":"x","startTimeUnixNano":1e400,"endTimeUnixNano":"2"}]}]}]}\n'
)


@pytest.mark.parametrize(
    "content",
    [
        _BIG,
        "[" * 5000 + "]" * 5000 + "\n",
        '{"resourceSpans":' + "[" * 5000 + "]" * 5000 + "}\n",
        '{"resourceSpans":7}\n',
    ],
    ids=["1e400", "deep-array", "deep-inside", "wrong-type"],
)
def test_hostile_files_are_a_clear_error_or_skipped_never_a_traceback(tmp_path: Path, content: str) -> None:
    """`serve --file` on 1e400 or 5,000-deep nesting exits 2 with a message naming --file (or skips the line)."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotrace", "serve", "--port", "0", "--file", str(path)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        if proc.poll() is None and first:  # the reader skipped the bad line: it serves what was good
            assert "loaded 0 spans" in first or "listening" in first, first
            proc.send_signal(__import__("signal").SIGINT)
            proc.wait(60)
            assert "Traceback" not in proc.stderr.read()
            return
        proc.wait(60)
        err = proc.stderr.read()
        assert proc.returncode == 2, err
        assert "--file" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert os.path.exists(path)
