"""One set of true/false words for environment variables and query parameters (autotrace._env)."""

from __future__ import annotations

import pytest

import autotrace
from autotrace._env import FALSE_WORDS, TRUE_WORDS, parse_bool
from autotrace.server import ServerHandle, parse_clear, start_in_background

from .server_helpers import fetch, record_trace, settle


def test_env_switches_and_query_switches_read_the_same_words() -> None:
    """Every word OTEL_SDK_DISABLED takes, ?clear= takes too, with the same meaning (on/off included)."""
    for word in sorted(TRUE_WORDS | FALSE_WORDS):
        for spelled in (word, word.upper(), f" {word} "):
            disabled = not autotrace.TraceConfig.from_env({"OTEL_SDK_DISABLED": spelled}).enabled
            assert parse_clear(spelled) is disabled is (word in TRUE_WORDS)


@pytest.mark.parametrize("word", ["maybe", "2", "truee", "y", "enabled"])
def test_a_word_outside_the_set_is_refused_by_both(word: str) -> None:
    """A word that is neither true nor false is a ValueError naming the setting, for env and query alike."""
    with pytest.raises(ValueError, match="OTEL_SDK_DISABLED"):
        autotrace.TraceConfig.from_env({"OTEL_SDK_DISABLED": word})
    with pytest.raises(ValueError, match="clear"):
        parse_clear(word)
    with pytest.raises(ValueError, match="X"):
        parse_bool("X", word)


def test_clear_on_over_http_clears() -> None:
    """GET /traces?clear=on is a clear (it was a 400 while env and query words differed)."""
    with start_in_background(port=0) as handle:
        server: ServerHandle = handle
        record_trace(children=0)
        reply = fetch(server.url, "/traces?clear=on")
        assert reply.status == 200, reply.body
        assert autotrace.trace_count() == 0
        settle(server)
