"""exception.stacktrace: Python traceback text, made once per exception, bounded per span; one error.type rule."""

from __future__ import annotations

import linecache
import re
import socket
import traceback
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from autotrace import _stacktrace, llm, span, traced
from autotrace.propagation import traced_urlopen
from tests.conftest import all_spans

DEPTH = 300


@pytest.fixture
def getline_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the source lines looked up (each frame line formatted needs one); the real lookup still runs."""
    calls = [0]
    real = linecache.getline

    def counting(*args: Any, **kwargs: Any) -> str:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(linecache, "getline", counting)
    yield calls


@traced
def _recurse(n: int) -> None:
    if n == 0:
        raise ValueError("bottom")
    _recurse(n - 1)


def _stacktraces() -> list[str]:
    return [e.attributes["exception.stacktrace"] for s in all_spans() for e in s.events if e.name == "exception"]


def test_deep_traced_recursion_formats_each_frame_once(getline_calls: list[int]) -> None:
    """An exception through 300 traced levels costs linear work: each frame's line is made once, not once per level."""
    with pytest.raises(ValueError):
        _recurse(DEPTH)
    assert len(_stacktraces()) == DEPTH + 1
    frames = 2 * (DEPTH + 1)  # the traced wrapper's frame and the function's frame per level
    assert getline_calls[0] <= frames + 10  # O(N); formatting the whole traceback per level is O(N²): ~90,000


def test_each_span_stacktrace_is_bounded() -> None:
    """Every level's stacktrace shows at most MAX_FRAMES frames, says how many it left out, and ends at the raise."""
    with pytest.raises(ValueError):
        _recurse(DEPTH)
    texts = _stacktraces()
    for text in texts:
        assert text.startswith("Traceback (most recent call last):\n")
        assert text.count('  File "') <= _stacktrace.MAX_FRAMES
        assert len(text) <= _stacktrace.MAX_STACKTRACE
        assert text.endswith('raise ValueError("bottom")\nValueError: bottom\n')
    hidden = [int(n) for text in texts for n in re.findall(r"\[\.\.\. (\d+) frames not shown \.\.\.\]", text)]
    assert max(hidden) == 2 * (DEPTH + 1) - _stacktrace.MAX_FRAMES  # the outermost span's: all but MAX_FRAMES
    # The innermost span's own text is whole: its two frames, nothing left out.
    shortest = min(texts, key=len)
    assert shortest.count('  File "') == 2 and "not shown" not in shortest


def _without_carets(text: str) -> str:
    # Python 3.11+ adds lines of ^ and ~ under the failing expression; autotrace does not.
    return "".join(line for line in text.splitlines(keepends=True) if not re.fullmatch(r"\s*[\^~]+\s*\n?", line))


def _inner() -> None:
    raise KeyError("missing")


def _outer() -> None:
    try:
        _inner()
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc


def test_stacktrace_is_pythons_traceback_text() -> None:
    """For a short chained exception the text is what traceback.format_exception prints (without caret lines)."""
    with pytest.raises(RuntimeError) as info, span("work"):
        _outer()
    (text,) = _stacktraces()
    expected = "".join(traceback.format_exception(info.value))
    # The span recorded the exception where it left the `with` block: the frames
    # above this test function are not in its text.
    assert _without_carets(text) == _without_carets(expected)
    assert "The above exception was the direct cause of the following exception:" in text


def test_same_exception_recorded_twice_at_one_level_is_walked_once(getline_calls: list[int]) -> None:
    """Recording one exception on two spans at the same frame reuses the frames already walked."""
    try:
        _recurse(3)
    except ValueError as exc:
        err = exc
    before = getline_calls[0]
    with span("a") as a, span("b") as b:
        a.record_exception(err)
        b.record_exception(err)
    assert getline_calls[0] - before <= 1  # at most the one new frame (this test's) is formatted


class ModelUnavailable(Exception):
    """An exception class outside builtins."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_error_type_is_the_exception_type_everywhere() -> None:
    """error.type is the fully qualified class name (as exception.type) for outgoing calls and LLM spans alike."""
    with pytest.raises(urllib.error.URLError), span("root"):
        traced_urlopen(f"http://127.0.0.1:{_closed_port()}/", timeout=5)
    with pytest.raises(ModelUnavailable), llm(model="m"):
        raise ModelUnavailable("down")
    by_name = {s.name: s for s in all_spans()}
    client = by_name["GET"]
    assert client.attributes["error.type"] == "urllib.error.URLError"
    (llm_span,) = [s for s in all_spans() if "error.type" in s.attributes and s is not client]
    assert llm_span.attributes["error.type"] == f"{__name__}.ModelUnavailable"
