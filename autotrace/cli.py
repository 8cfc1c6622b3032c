"""The ``autotrace`` command (also ``python -m autotrace``): ``serve`` and ``demo``.

autotrace serve --port 8080          # the /traces server on its own
autotrace demo --traffic 5           # a toy inference server, traced, with traffic
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 65535; got {text!r}")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535; got {value}")
    return value


def _float_between(low: float, high: float, unit: str = "") -> Callable[[str], float]:
    """A parser of a number from ``low`` to ``high`` (``unit`` names what it counts in its errors)."""
    bounds = f"from {low:g} to {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number{unit and ' of' + unit} {bounds}; got {text!r}")
        if math.isnan(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {bounds}{unit}; got {text}")
        return value

    return parse


_rate = _float_between(0.0, 1.0)
_delay = _float_between(0.0, 10.0, " seconds")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}; got {value}")
        return value

    return parse


def _non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _add_common(p: argparse.ArgumentParser, *, default_rate: float | None) -> None:
    p.add_argument("--host", type=_non_empty, default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to bind; 0 picks a free one (default: 8080)")
    rate_default = "$AUTOTRACE_SAMPLE_RATE, else 0.1" if default_rate is None else str(default_rate)
    p.add_argument(
        "--sample-rate",
        type=_rate,
        default=default_rate,
        metavar="RATE",
        help=f"share of traces recorded, 0..1 (default: {rate_default})",
    )
    p.add_argument(
        "--max-traces",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="traces kept in memory (default: $AUTOTRACE_MAX_TRACES, else 1000)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="read the bearer token from PATH (its first line); every route but /health and / then "
        "requires 'Authorization: Bearer TOKEN' (default: $AUTOTRACE_TOKEN)",
    )
    p.add_argument(
        "--token",
        type=_non_empty,
        default=None,
        help="the token itself; other users can read it in 'ps', so prefer --token-file or $AUTOTRACE_TOKEN",
    )
    p.add_argument("--access-log", action="store_true", help="print one line per request on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``autotrace`` command."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="autotrace",
        description="Serve autotrace's traces over HTTP, or try it on a demo inference server.",
    )
    parser.add_argument("--version", action="version", version=f"autotrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve /traces, /health, /ready and the viewer",
        description="Serve a trace store: GET /traces (OTLP/JSON), DELETE /traces, /health, /ready, "
        "the trace viewer at /, and POST /v1/traces, an OTLP/HTTP receiver that other processes' "
        "exporters (OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT) send their spans to.",
    )
    _add_common(serve, default_rate=None)
    # Errors found after parsing (--file, --token-file) show the subcommand's usage, as argparse's own do.
    serve.set_defaults(usage_error=serve.error)
    serve.add_argument(
        "--file",
        metavar="PATH",
        action="append",
        help="load a JSON Lines file written by FileExporter (one OTLP/JSON request per line) and serve it; "
        "repeat for several files (one per worker or rank): their traces go into one store, joined by trace id",
    )
    serve.add_argument(
        "--max-receive-bytes",
        type=_int_at_least(1),
        default=None,
        metavar="BYTES",
        help="the largest body POST /v1/traces takes, before and after gzip (default: 8 MiB)",
    )
    demo = sub.add_parser(
        "demo",
        help="a small traced inference server with /generate, /models, /traces and the viewer",
        description="Run a toy inference server whose handlers are traced (POST /generate streams "
        "tokens; GET /models), with /traces and the viewer, and send it some traffic.",
    )
    _add_common(demo, default_rate=1.0)
    demo.set_defaults(usage_error=demo.error)
    demo.add_argument(
        "--traffic",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help="send N requests to /generate after starting, so traces show at once (default: 0)",
    )
    demo.add_argument(
        "--workers",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help="start N worker processes that each send --traffic requests (default 5) and export their spans "
        "to this server's POST /v1/traces, as many workers exporting to one autotrace serve do (default: 0)",
    )
    demo.add_argument(
        "--delay",
        type=_delay,
        default=0.002,
        metavar="SECONDS",
        help="pretend cost of one decode step (default: 0.002)",
    )
    return parser


def _configure(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    import autotrace

    fail: Callable[[str], NoReturn] = getattr(args, "usage_error", parser.error)

    overrides: dict[str, Any] = {}
    if args.sample_rate is not None:
        overrides["sample_rate"] = args.sample_rate
    if args.max_traces is not None:
        overrides["max_traces"] = args.max_traces
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if args.command == "demo" and not named:
        overrides["service_name"] = "autotrace-demo"
    try:
        store = autotrace.configure(**overrides)
    except ValueError as exc:
        fail(str(exc))
    _read_token(parser, args)
    for path in getattr(args, "file", None) or ():
        from .export import load_jsonl_into

        bad_lines: list[tuple[int, str]] = []
        try:
            loaded = load_jsonl_into(store, path, bad_lines=bad_lines)
        except (OSError, ValueError) as exc:
            fail(f"--file: {exc}")
        except RecursionError:
            fail(f"--file: {path} nests JSON too deeply to read; it is not a file FileExporter wrote")
        except (OverflowError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # Valid JSON that is not OTLP/JSON as FileExporter writes it (1e400 as a time, a list
            # where an object goes...): a usage error naming the file, not a traceback.
            fail(f"--file: {path} holds a value autotrace cannot read ({type(exc).__name__}: {exc})"[:500])
        skipped = f" (skipped {len(bad_lines)} bad lines, first at line {bad_lines[0][0]})" if bad_lines else ""
        _print(f"autotrace serve: loaded {loaded} spans from {path}{skipped}")


def _read_token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.token`` from --token-file; warn that --token shows the token in ``ps``."""
    fail: Callable[[str], NoReturn] = getattr(args, "usage_error", parser.error)
    path = args.token_file
    if path is not None and args.token is not None:
        fail("give --token or --token-file, not both")
    if args.token is not None:
        print(
            f"autotrace {args.command}: warning: --token is visible to every user of this machine (ps, "
            "/proc); use --token-file PATH or $AUTOTRACE_TOKEN",
            file=sys.stderr,
            flush=True,
        )
        return
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--token-file: cannot read {path}: {exc}")
    token = text.splitlines()[0].strip() if text.strip() else ""
    if not token:
        fail(f"--token-file: {path} is empty; put the token on its first line")
    args.token = token


class _StopSignals:
    """Turns Ctrl-C and SIGTERM into an event, from before the server starts until it has stopped."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, lambda signum, frame: self.event.set())
        return self.event

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def _print(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autotrace`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Signals become the stop event before anything is loaded or printed: a Ctrl-C that comes
    # while --file loads, or right after its "loaded" line, stops the command without a traceback.
    with _StopSignals() as stop:
        _configure(parser, args)
        return _run(args.command, args, stop)


def _run(command: str, args: argparse.Namespace, stop: threading.Event) -> int:
    from . import server

    hosts = server.loopback_hosts(args.host)  # bound to loopback: refuse other Host names (DNS rebinding)
    try:
        if command == "demo":
            from .demo import create_demo_app

            # The demo app traces its own requests: one SERVER span per request to
            # /generate and /models, continuing the caller's traceparent.
            app = create_demo_app(token=args.token, allowed_hosts=hosts, delay=args.delay)
        else:
            # serve has no routes of its own to trace: leave the store (maybe a --file) as loaded.
            limit = args.max_receive_bytes
            app = server.create_app(
                token=args.token,
                allowed_hosts=hosts,
                trace_requests=False,
                **({} if limit is None else {"max_receive_bytes": limit}),
            )
        handle = server.start_in_background(args.host, args.port, app=app, access_log=args.access_log)
    except OSError as exc:
        # A usage problem like a bad argument: one line naming the address, status 2, no traceback.
        address = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
        reason = exc.strerror or str(exc)
        hint = "; choose another --port (0 picks a free one)" if exc.errno == errno.EADDRINUSE else ""
        print(f"autotrace {command}: cannot listen on {address}: {reason}{hint}", file=sys.stderr, flush=True)
        return 2

    token = args.token or os.environ.get(server.TOKEN_ENV) or None
    if args.token:
        auth = " -H 'Authorization: Bearer <token>'"
    else:
        auth = ' -H "Authorization: Bearer $AUTOTRACE_TOKEN"' if token else ""
    url = handle.url
    with handle:
        _print(f"autotrace {command}: listening on {url}")
        if not token and not server.is_loopback(args.host):
            print(
                f"autotrace {command}: warning: {args.host} is reachable from other machines and no token is set "
                "(--token-file PATH or $AUTOTRACE_TOKEN)",
                file=sys.stderr,
                flush=True,
            )
        _print(
            f"  viewer    {url}/",
            f"  traces    curl{auth} '{url}/traces?limit=1'",
            f"  receiver  OTEL_EXPORTER_OTLP_ENDPOINT={url} (POST {url}/v1/traces, OTLP/HTTP)",
        )
        if command == "demo":
            _print(
                f"  generate  curl{auth} -N -X POST {url}/generate -H 'Content-Type: application/json' "
                '-d \'{"prompt": "hello", "max_tokens": 8}\'',
                f"  models    curl{auth} {url}/models",
            )
            if args.traffic:
                from .demo import send_traffic

                sent = send_traffic(url, args.traffic, token=token, stop=stop)
                _print(f"autotrace demo: sent {sent} of {args.traffic} requests to /generate")
            if args.workers:
                from .demo import start_workers

                each = args.traffic or 5
                procs = start_workers(url, args.workers, each, token)
                failed = sum(proc.wait() != 0 for proc in procs)
                _print(f"autotrace demo: {args.workers} worker processes sent {each} requests each ({failed} failed)")
        _print("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    _print(f"autotrace {command}: stopped")
    return 0
