"""The mistakes a newcomer makes first get an error that names the mistake and says what to write."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import autotrace
from autotrace import TraceConfig, span, traced


def test_with_traced_says_it_is_a_decorator_and_names_span() -> None:
    """`with traced("x"):` raises a TypeError saying traced() is a decorator and `with span(...)` is the block form."""
    with pytest.raises(TypeError, match=r"traced\(\) is a decorator.*with span\(name\)"):
        with traced("x"):  # type: ignore[attr-defined]
            pass


def test_async_with_traced_says_it_is_a_decorator() -> None:
    """`async with traced(kind=...)` raises the same TypeError."""

    async def main() -> None:
        async with traced(kind="server"):  # type: ignore[attr-defined]
            pass

    with pytest.raises(TypeError, match=r"traced\(\) is a decorator"):
        asyncio.run(main())


def test_traced_with_arguments_still_decorates() -> None:
    """`@traced("name", kind=...)` still returns the function's result and records one span of that name and kind."""
    autotrace.configure(sample_rate=1.0)

    @traced("named", kind="client")
    def double(x: int) -> int:
        return 2 * x

    with autotrace.testing.capture_spans() as spans:
        assert double(4) == 8
    assert spans.names() == ["named"]
    assert spans.one("named").kind == autotrace.SpanKind.CLIENT


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_span_as_decorator_says_it_is_a_context_manager(rate: float) -> None:
    """`@span("x")` on a function raises a TypeError naming the block form and @traced, sampled or not."""
    autotrace.configure(sample_rate=rate)
    with pytest.raises(TypeError, match=r"span\(\) is a context manager.*@traced\(name\)"):

        @span("x")  # type: ignore[operator]
        def f() -> None: ...


def test_a_child_span_and_current_span_give_the_same_advice() -> None:
    """A child span, and the non-recording span outside any, explain themselves the same way when called."""
    autotrace.configure(sample_rate=1.0)
    with span("parent"):
        with pytest.raises(TypeError, match=r"span\(\) is a context manager"):
            span("child")(print)  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"span\(\) is a context manager"):
        autotrace.current_span()(print)  # type: ignore[operator]


def test_configure_names_a_misspelt_setting_and_suggests_the_right_one() -> None:
    """configure(sample_rat=1.0) raises ValueError naming it and suggesting sample_rate, with or without a config."""
    with pytest.raises(
        ValueError, match=r"unknown TraceConfig setting\(s\): sample_rat \(did you mean sample_rate\?\)"
    ):
        autotrace.configure(sample_rat=1.0)
    with pytest.raises(ValueError, match=r"sample_rat \(did you mean sample_rate\?\)"):
        autotrace.configure(TraceConfig(), sample_rat=1.0)
    with pytest.raises(ValueError, match=r"unknown TraceConfig setting\(s\): nonsense$"):
        autotrace.configure(nonsense=1)


def test_configure_sample_rate_out_of_range_names_setting_and_value() -> None:
    """configure(sample_rate=2) raises ValueError naming sample_rate, its range and the value given."""
    with pytest.raises(ValueError, match=r"sample_rate must be between 0 and 1; got 2"):
        autotrace.configure(sample_rate=2)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["serve", "--file", "no-such-recording.jsonl"], "--file: "),
        (["demo", "--token-file", "no-such-token-file"], "--token-file: cannot read no-such-token-file"),
    ],
)
def test_cli_errors_after_parsing_show_the_subcommands_usage(argv: list[str], problem: str, tmp_path: Path) -> None:
    """A missing --file or --token-file exits 2 with the subcommand's usage and `autotrace <cmd>: error:` naming it."""
    done = subprocess.run(
        [sys.executable, "-m", "autotrace", *argv, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: autotrace {argv[0]} "), done.stderr
    assert f"autotrace {argv[0]}: error: {problem}" in done.stderr, done.stderr


def test_a_bad_otlp_endpoint_is_quoted_as_it_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318 (no scheme) is an error quoting 'localhost:4318' as set."""
    from autotrace.export import OTLPHttpExporter

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318", "OTEL_TRACES_EXPORTER": "otlp"}
    with pytest.raises(
        ValueError,
        match=r"^OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL.*'localhost:4318' \(the scheme",
    ):
        TraceConfig.from_env(env)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")
    with pytest.raises(ValueError, match=r"got 'localhost:4318' \(the scheme is required: http://host:4318\)$"):
        OTLPHttpExporter()


def test_span_attributes_given_as_pairs_are_reported_not_dropped_silently(caplog: pytest.LogCaptureFixture) -> None:
    """span(attributes=[(k, v)]) runs the block and counts a set_attributes failure saying a mapping is needed."""
    autotrace.configure(sample_rate=1.0)
    before = autotrace.tracer.errors().get("set_attributes", 0)
    with caplog.at_level("WARNING", logger="autotrace"):
        with span("x", attributes=[("a", 1)]) as s:  # type: ignore[arg-type]
            s.set_attribute("b", 2)
    assert dict(s.attributes) == {"b": 2}
    assert autotrace.tracer.errors().get("set_attributes", 0) == before + 1
    assert "attributes must be a mapping such as a dict; got list" in caplog.text
