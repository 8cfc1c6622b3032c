"""benchmarks/asgi.py --smoke serves every variant under uvicorn and reports its figures (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HAVE_OTEL = importlib.util.find_spec("opentelemetry.instrumentation.asgi") is not None


def number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_asgi_benchmark_smoke_reports_every_server_and_the_bar_unjudged(tmp_path: Path) -> None:
    """--smoke: bare, autotrace (sampled, default) and OpenTelemetry rows with figures; the bar printed, not judged."""
    out = tmp_path / "asgi.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "asgi.py"), "--smoke", "--diagnose", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    assert doc["mode"] == "smoke" and doc["bar"]["judged"] is False
    expected = ["bare", "autotrace", "autotrace_default", "bare_again", "passthrough", "span_only"]
    expected += ["otel"] if HAVE_OTEL else []
    assert set(expected) <= set(doc["servers"]), sorted(doc["servers"])
    for key in expected:
        server = doc["servers"][key]
        for figure in ("requests_per_s", "ratio_to_bare"):
            assert number(server[figure]["median"]) and server[figure]["median"] > 0, (key, server)
    assert doc["servers"]["bare"]["ratio_to_bare"]["median"] == 1.0
    assert "| autotrace TracingMiddleware, sample_rate=1 |" in done.stdout
    assert "(smoke, not judged)" in done.stdout
