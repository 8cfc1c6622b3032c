"""A client process for the multi-process test: calls the server inside a traced request.

Usage: ``python _client_proc.py URL``. Prints one JSON line: its own spans and
the traceparent the server sent back.
"""

from __future__ import annotations

import json
import sys

import autotrace
from autotrace.propagation import traced_urlopen
from autotrace.testing import capture_spans


@autotrace.traced("client_request", kind="internal")
def call(url: str) -> tuple[int, str]:
    with traced_urlopen(url, timeout=30) as resp:
        resp.read()
        return resp.status, resp.headers.get("traceparent", "")


def main() -> None:
    autotrace.configure(sample_rate=1.0, service_name="interop-client")
    with capture_spans() as spans:
        status, returned = call(sys.argv[1])
    out = {
        "status": status,
        "response_traceparent": returned,
        "spans": [
            {"name": s.name, "trace_id": s.trace_id, "span_id": s.span_id, "parent": s.parent_span_id, "kind": s.kind}
            for s in spans
        ],
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
