"""Check a built wheel from a fresh venv that has it installed, away from the source tree.

    venv/bin/python wheel_smoke.py dist/autotrace_inference-X-py3-none-any.whl README.md

Run it with the venv's python from a directory outside the checkout. It checks the wheel's
files (the viewer's assets in, nothing of tests/), that autotrace is imported from the venv
with only wrapt and bottle beside it, `autotrace --version`, the README's first example, and
`autotrace demo --traffic 5` up to its traffic and traces, stopped by SIGTERM as Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path


def check_wheel_files(wheel: Path) -> None:
    """The wheel holds the package with its assets and no tests."""
    names = zipfile.ZipFile(wheel).namelist()
    for asset in ("autotrace/viewer.html", "autotrace/py.typed", "autotrace/_version.py"):
        assert asset in names, f"{asset} is not in {wheel.name}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), f"no LICENSE in {wheel.name}"
    stray = [n for n in names if not n.startswith(("autotrace/", "autotrace_inference-"))]
    assert not stray, f"{wheel.name} carries files outside the package: {stray}"


def check_installed() -> None:
    """autotrace comes from this venv, with wrapt and bottle as its only other packages."""
    import autotrace

    assert Path(autotrace.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), autotrace.__file__
    assert metadata.version("autotrace-inference") == autotrace.__version__
    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    extra = names - {"autotrace-inference", "wrapt", "bottle", "pip", "setuptools", "wheel"}
    assert not extra, f"packages beyond the runtime dependencies: {sorted(extra)}"
    command = Path(sys.executable).with_name("autotrace")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.strip() == f"autotrace {autotrace.__version__}", version.stdout


def check_readme_example(readme: Path, workdir: Path) -> None:
    """The README's first python block runs and prints OTLP/JSON with its two spans."""
    match = re.search(r"^```python\n(.*?)^```", readme.read_text(encoding="utf-8"), re.S | re.M)
    assert match, f"{readme} has no python block"
    script = workdir / "readme_example.py"
    script.write_text(match.group(1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    done = subprocess.run([sys.executable, script], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spans = [
        s["name"] for rs in json.loads(done.stdout)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    ]
    assert sorted(spans) == ["generate", "tokenize"], spans


def check_demo(workdir: Path) -> None:
    """`autotrace demo --traffic 5` serves the viewer and its traces, and stops cleanly on SIGTERM."""
    command = [str(Path(sys.executable).with_name("autotrace")), "demo", "--traffic", "5", "--port", "0"]
    demo = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The demo serves until Ctrl-C: a watchdog ends it if it ever hangs before SIGTERM is sent.
    watchdog = threading.Timer(60, demo.kill)
    watchdog.start()
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("autotrace demo: sent"):
                break
        assert lines and lines[-1].startswith("autotrace demo: sent 5 of 5"), "".join(lines)
        url = re.search(r"listening on (\S+)", lines[0])
        assert url, lines[0]
        with urllib.request.urlopen(url.group(1) + "/", timeout=10) as page:
            assert b"<html" in page.read().lower(), "GET / did not serve the viewer page"
        with urllib.request.urlopen(url.group(1) + "/traces", timeout=10) as answer:
            traces = json.load(answer)
        names = {s["name"] for rs in traces["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
        assert "text_completion tiny-llm" in names, sorted(names)
        demo.send_signal(signal.SIGTERM)
        out, err = demo.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, f"exit {demo.returncode}: {err}"
    assert "autotrace demo: stopped" in out, out


def main() -> int:
    """Run every check; an AssertionError names the one that failed."""
    wheel, readme = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    assert not os.environ.get("PYTHONPATH"), "run without PYTHONPATH, so the source tree is not on the path"
    check_wheel_files(wheel)
    check_installed()
    with tempfile.TemporaryDirectory() as tmp:
        check_readme_example(readme, Path(tmp))
        check_demo(Path(tmp))
    print(f"wheel smoke: {wheel.name} installs and runs from a fresh venv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
