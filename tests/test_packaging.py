"""Release metadata: one version everywhere, the license, and what the package index shows.

Building the sdist and wheel and running the wheel from a fresh venv is slower and needs the
network, so it is a step of .ci/run (with .ci/wheel_smoke.py), not a test here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import autotrace

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DIST = "autotrace-inference"


def pyproject() -> dict[str, Any]:
    """The parsed pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def installed() -> metadata.PackageMetadata:
    """The metadata of the installed distribution (pip install -e . writes it from pyproject.toml)."""
    try:
        return metadata.metadata(DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{DIST} is not installed: pip install -e . (an install from before the rename is 'autotrace')")


def test_version_is_one_and_the_same_everywhere() -> None:
    """`autotrace --version`, `python -m autotrace --version` and the metadata all say autotrace.__version__."""
    script = shutil.which("autotrace", path=str(Path(sys.executable).parent))
    assert script, "the autotrace command is not installed beside this python"
    for command in ([script], [sys.executable, "-m", "autotrace"]):
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"autotrace {autotrace.__version__}"
    assert installed()["Version"] == autotrace.__version__
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "autotrace._version.__version__"}


def test_pyproject_declares_the_release_metadata() -> None:
    """The distribution name, PEP 639 license fields, a setuptools that reads them, and the runtime dependencies."""
    config = pyproject()
    project = config["project"]
    assert project["name"] == DIST
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in config["build-system"]["requires"]
    assert project["description"] and project["keywords"]
    assert [re.split(r"[<>=!~; ]", dep)[0] for dep in project["dependencies"]] == ["wrapt", "bottle"]
    assert "urls" not in project  # no project URLs until there are real ones
    assert set(config["tool"]["setuptools"]["package-data"]["autotrace"]) >= {"py.typed", "*.html"}


def test_installed_metadata_is_what_an_index_shows() -> None:
    """The built metadata has the license expression and file, the classifiers, and no legacy license classifier."""
    meta = installed()
    assert meta["Name"] == DIST
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = set(meta.get_all("Classifier") or [])
    assert not [c for c in classifiers if c.startswith("License ::")], "PEP 639 forbids license classifiers"
    expected = {f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)}
    expected |= {"Typing :: Typed", "Operating System :: OS Independent"}
    assert expected <= classifiers
    assert meta["Requires-Python"] == ">=3.10"
    assert sorted(r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r) == [
        "bottle>=0.12.25",
        "wrapt>=1.14",
    ]


def test_license_is_the_apache_2_0_text() -> None:
    """LICENSE is the full Apache License 2.0, as the metadata says."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 150


def test_package_description_renders_on_an_index() -> None:
    """The long description has no images and no links relative to the repository, which an index cannot show."""
    readme = pyproject()["project"]["readme"]
    text = (ROOT / readme).read_text(encoding="utf-8")
    assert "![" not in text and "<img" not in text.lower()
    targets = re.findall(r"\]\(([^)]*)\)", text)
    assert all(t.startswith(("https://", "http://")) for t in targets), targets
    assert "pip install autotrace-inference" in text and "import autotrace" in text


def test_package_description_example_runs(tmp_path: Path) -> None:
    """The python block of the package description runs as printed and prints its two spans as OTLP/JSON."""
    text = (ROOT / pyproject()["project"]["readme"]).read_text(encoding="utf-8")
    match = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "the package description has no python block"
    script = tmp_path / "example.py"
    script.write_text(match.group(1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    names = sorted(s["name"] for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"])
    assert names == ["generate", "tokenize"]


def test_readme_and_changelog_for_the_release() -> None:
    """The README says the distribution and the import name; CHANGELOG.md keeps an Unreleased section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install autotrace-inference" in readme
    assert "autotrace[" not in readme, "extras go on the distribution name: autotrace-inference[...]"
    assert "python docs/build.py" in readme
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
    assert changelog[0] == "# Changelog"
    assert "## [Unreleased]" in changelog


def test_readme_names_every_public_submodule_of_the_api_reference() -> None:
    """README "API reference" lists exactly the public submodules docs/build.py documents."""
    pytest.importorskip("pdoc")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import build
    finally:
        sys.path.remove(str(ROOT / "docs"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## API reference", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"the public\s+submodules \(([^)]*)\)", section)
    assert listed, "the API reference section lists the public submodules in parentheses"
    named = {f"autotrace.{m}" for m in re.findall(r"`(\w+)`", listed.group(1))}
    assert named == set(build.public_modules()) - {"autotrace"}
