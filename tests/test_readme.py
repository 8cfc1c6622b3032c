"""The README's quick start runs as printed and shows a trace."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> str:
    """The first ```python block of README.md: the quick start under the title."""
    match = re.search(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)
    assert match, "README.md has no python code block"
    return match.group(1)


def test_quick_start_runs_verbatim_and_prints_its_spans(tmp_path: Path) -> None:
    """Run the quick start as a script in a clean environment: its output is OTLP/JSON with both spans."""
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
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
    assert {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "4"}} in spans["tokenize"]["attributes"]


def test_the_sampler_arg_default_is_what_the_code_does() -> None:
    """README: OTEL_TRACES_SAMPLER_ARG defaults to 1.0 under a ratio sampler; with nothing set autotrace records 0.1."""
    from autotrace.config import TraceConfig

    row = next(
        line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `OTEL_TRACES_SAMPLER_ARG`")
    )
    assert "1.0 when `OTEL_TRACES_SAMPLER` names a ratio sampler" in row and "autotrace records 0.1" in row
    for sampler in ("traceidratio", "parentbased_traceidratio"):
        assert TraceConfig.from_env({"OTEL_TRACES_SAMPLER": sampler}).sample_rate == 1.0
    assert TraceConfig.from_env({}).sample_rate == 0.1
    assert TraceConfig.from_env({"OTEL_TRACES_SAMPLER_ARG": "0.25"}).sample_rate == 0.25
