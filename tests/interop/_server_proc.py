"""A server process for the multi-process test: a traced Bottle app on 127.0.0.1, port 0.

Prints ``{"port": N}`` on its first stdout line, then serves until killed.
``GET /spans`` (untraced) answers with its spans as OTLP/JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import bottle

import autotrace
from autotrace.wsgi import TracingMiddleware


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@autotrace.traced("tokenize")
def tokenize(prompt: str) -> list[str]:
    return prompt.split()


def main() -> None:
    # Sample nothing of its own: every server span exists only because the client's flag said so.
    autotrace.configure(sample_rate=0.0, service_name="interop-server")
    app = bottle.Bottle()

    @app.get("/generate/<model>")
    def generate(model: str) -> dict[str, Any]:
        return {"model": model, "tokens": len(tokenize("a b c"))}

    @app.get("/spans")
    def spans() -> dict[str, Any]:
        return autotrace.export_traces()

    server = make_server("127.0.0.1", 0, TracingMiddleware(app, excluded_paths=("/spans",)), handler_class=_Quiet)
    sys.stdout.write(json.dumps({"port": server.server_port}) + "\n")
    sys.stdout.flush()
    server.serve_forever(0.05)


if __name__ == "__main__":
    main()
