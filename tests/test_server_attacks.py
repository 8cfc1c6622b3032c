"""An outside attacker against the /traces server: other spellings of its routes, loopback binds, client caps."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotrace
from autotrace.server import is_loopback, loopback_hosts, start_in_background

from .server_helpers import fetch, record_trace, settle


def _raw(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw request bytes and read the whole answer (the server closes after one request)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _stored_trace_ids() -> set[str]:
    return {s.trace_id for trace in autotrace.get_trace_store().traces() for s in trace}


@pytest.fixture
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AUTOTRACE_TOKEN from the environment running the tests."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    yield


# -- other spellings of the server's own routes start no span ---------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"?x",  # an empty path: Bottle routes it to the page at /
        b"/%FF",  # not UTF-8: Bottle drops the byte and routes /, the guard answers 404
        b"/health%FF",
        b"/ready%C0",
        b"/traces%FF",
    ],
)
@pytest.mark.usefixtures("no_env_token")
def test_other_spellings_of_the_own_routes_cannot_evict_traces_without_the_token(target: bytes) -> None:
    """A stranger without the token cannot record spans (and evict real traces) through `GET ?x` or `/%FF`."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=3))
    real = {record_trace(f"real{i}", children=0)[0] for i in range(3)}
    with start_in_background(port=0, token="s3cret") as handle:
        for i in range(4):
            parent = f"00-{i + 1:032x}-b7ad6b7169203331-01"  # a sampled caller: would force recording
            answer = _raw(
                handle.port,
                b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\ntraceparent: " + parent.encode() + b"\r\n\r\n",
            )
            assert b"traceparent" not in answer.partition(b"\r\n\r\n")[0].lower()
        settle(handle)
    assert _stored_trace_ids() == real
    assert autotrace.get_trace_store().stats()["evicted_traces"] == 0


# -- serve --file: one hostile line does not refuse the whole file ----------------------------

_GOOD_LINE = (
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"%032x","spanId":"b7ad6b7169203331",'
    '"name":"good","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}\n'
)


def test_a_line_with_a_5000_digit_number_is_skipped_and_the_rest_is_served(tmp_path: Path) -> None:
    """`serve --file` skips and counts a line whose number json cannot convert, and loads the good lines."""
    from autotrace import cli
    from autotrace.export import read_jsonl

    path = tmp_path / "spans.jsonl"
    path.write_text(_GOOD_LINE % 1 + '{"resourceSpans":[' + "9" * 5000 + "]}\n" + _GOOD_LINE % 2)
    bad: list[tuple[int, str]] = []
    assert len(read_jsonl(path, bad_lines=bad)) == 2
    assert [n for n, _ in bad] == [2]
    parser = cli.build_parser()
    cli._configure(parser, parser.parse_args(["serve", "--port", "0", "--file", str(path)]))
    assert {s.name for trace in autotrace.get_trace_store().traces() for s in trace} == {"good"}
    assert autotrace.get_trace_store().stats()["spans"] == 2


# -- a loopback bind checks Host however the address is spelled -------------------------------


@pytest.mark.parametrize("bind", ["127.1", "2130706433", "::ffff:127.0.0.1"])
def test_a_loopback_bind_spelled_otherwise_still_checks_host(bind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound to 127.1, 2130706433 or ::ffff:127.0.0.1 the server refuses a DNS-rebinding Host as any loopback bind."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    assert is_loopback(bind)
    assert loopback_hosts(bind) is not None
    record_trace("secret", children=0)
    if ":" in bind and not socket.has_ipv6:
        pytest.skip("no IPv6")
    with start_in_background(host=bind, port=0) as handle:
        target = "::1" if ":" in bind else "127.0.0.1"
        if ":" in bind:
            pytest.skip("an IPv4-mapped bind is reached over IPv4; checked above through loopback_hosts")
        reply = fetch(f"http://{target}:{handle.port}", "/traces", headers={"Host": f"attacker.example:{handle.port}"})
        assert reply.status == 403, reply.body[:200]
        assert fetch(f"http://{target}:{handle.port}", "/traces").status == 200
        settle(handle)


# -- one local program cannot take every slot by using several loopback addresses -------------


def test_several_loopback_source_addresses_count_as_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections from 127.0.0.2 and 127.0.0.3 share one per-client cap, so they cannot hold every slot."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    held: list[socket.socket] = []
    with start_in_background(port=0, max_connections=4) as handle:  # at most 2 per client
        try:
            answers = []
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
                sock = socket.socket()
                sock.settimeout(30)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", handle.port))
                sock.sendall(b"GET /traces HTTP/1.1\r\n")  # a request left half-sent
                held.append(sock)
            for sock in held[2:]:
                answer = b""
                while chunk := sock.recv(4096):  # the server closes after its 503
                    answer += chunk
                answers.append(answer)
            assert all(b"503" in a and b"your address" in a for a in answers), answers
        finally:
            for sock in held:
                sock.close()
        settle(handle)
