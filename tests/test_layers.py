"""autotrace is one stack of layers: every module imports only from layers below it at run time.

The tiers below are the declared stack, lowest first (README, "How the code is
laid out"). A runtime import is any ``import`` statement, at module level or
inside a function, except those under ``if TYPE_CHECKING:``. A module may
import only modules of a lower tier; a module missing from the list, an
import upwards or sideways, or an import cycle fails the test.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotrace

PACKAGE = Path(autotrace.__file__).parent

TIERS: list[list[str]] = [
    ["_version", "_limits", "_env", "_serving", "_summary"],  # constants, text parsers; the threaded WSGI server;
    # trace summaries and span statistics for /traces/summary and /stats (standard library only)
    ["_model"],  # value types: kinds, status, span context, events, links; ids
    ["_current", "_errors", "_secret_names"],  # the ContextVar; failures counted and logged once; secret names
    ["_stacktrace", "_stderr", "_resource", "attributes", "_secrets", "_metrics", "_inflight"],  # exception text,
    # log fallback, resource, attribute values, secret names and text; metrics' hot-path side; open roots
    ["otlp", "sampling", "_render", "_tail"],  # spans -> OTLP/JSON; samplers; a bounded, redacting repr;
    # provisional traces of tail sampling
    ["_otlp_json"],  # spans -> OTLP/JSON bytes, without otlp's dicts
    ["store"],  # whole traces in memory
    ["_state"],  # what the hot path reads; finish(span); flush()
    ["redaction"],  # what capture keeps, secrets hidden
    ["spans"],  # Span, NonRecordingSpan
    ["context", "_w3c", "_urls", "_decoded"],  # current_span, use_span, threads; W3C headers; URLs as spans
    # record them; what both OTLP decoders share (ReceiveError, Decoded, build_span)
    ["_decode_json", "_decode_protobuf"],  # OTLP/JSON and protobuf requests decoded into spans
    ["_receiver"],  # POST /v1/traces: the HTTP side, counters
    ["export._base"],  # the exporter base class
    ["export.console", "export.files", "export.otlp_settings", "export._protobuf"],
    ["export.otlp_http"],  # transport
    ["export.env"],  # exporters from OTEL_* variables
    ["export.batch"],  # the batching processor
    ["export"],  # the package's re-exports
    ["config", "metrics"],  # TraceConfig as data; metrics snapshot, reset, Prometheus text
    ["provider"],  # the installed pipeline: apply_config, shutdown
    ["tracer"],  # the hot path: start, span(), record_span
    ["_process", "decorators", "logs", "testing", "_outgoing"],  # _outgoing: httpx and requests CLIENT spans
    ["propagation"],
    ["genai"],
    ["inference"],
    ["wsgi", "asgi", "_guard"],
    ["server"],  # routes, viewer, start_in_background
    ["demo"],
    ["__init__"],  # the public names
    ["cli"],
    ["__main__"],
]


def modules_of(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name relative to it (``export.batch``; ``__init__`` for the root)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that runs at run time (``if TYPE_CHECKING:`` bodies skipped)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _import_nodes(node)


def runtime_imports(name: str, path: Path, modules: dict[str, Path], root: str) -> set[str]:
    """The package modules ``name`` imports at run time (a submodule's import runs its package's too)."""
    is_package = path.name == "__init__.py"
    here = [] if name == "__init__" else name.split(".")
    package = here if is_package else here[:-1]
    targets: set[str] = set()

    # A module's own packages have run before it: importing them again imports nothing.
    ancestors = {".".join(here[:end]) for end in range(1, len(here))}

    def add(dotted: list[str]) -> None:
        if not dotted:
            targets.add("__init__")  # a name from the root package itself
        for end in range(1, len(dotted) + 1):  # importing a.b.c runs a.b first (the root always runs)
            key = ".".join(dotted[:end])
            if key in modules and key not in ancestors:
                targets.add(key)

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == root:
                    add(parts[1:])
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            dotted = base + (node.module.split(".") if node.module else [])
        elif node.module and node.module.split(".")[0] == root:
            dotted = node.module.split(".")[1:]
        else:
            continue
        submodules = [alias.name for alias in node.names if ".".join([*dotted, alias.name]) in modules]
        if dotted or len(submodules) < len(node.names):  # `from . import x` imports x, not the root's names
            add(dotted)
        for alias in submodules:  # `from . import x` and `from .export import batch` import modules
            add([*dotted, alias])
    targets.discard(name)
    return targets


def layering_problems(package: Path, tiers: list[list[str]]) -> list[str]:
    """What breaks the stack: unplaced modules, imports not strictly downwards, import cycles."""
    modules = modules_of(package)
    tier_of = {module: level for level, names in enumerate(tiers) for module in names}
    problems = [f"{m} is in no tier" for m in modules if m not in tier_of]
    graph = {m: runtime_imports(m, p, modules, package.name) for m, p in modules.items()}
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module in tier_of and target in tier_of and tier_of[target] >= tier_of[module]:
                problems.append(f"{module} (tier {tier_of[module]}) imports {target} (tier {tier_of[target]})")
    problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules, found by depth-first search."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_module_imports_only_from_lower_tiers() -> None:
    """Each autotrace module is in a tier and imports at run time only from lower tiers; no cycle."""
    assert layering_problems(PACKAGE, TIERS) == []


def test_every_declared_tier_name_is_a_module() -> None:
    """The tier list names only modules that exist (no stale entry hides a moved module)."""
    modules = modules_of(PACKAGE)
    assert [name for tier in TIERS for name in tier if name not in modules] == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("_model.py", "from .tracer import span as _span\n", ("_model", "tracer")),
        ("spans.py", "def _late() -> None:\n    from . import decorators\n", ("spans", "decorators")),
        ("export/batch.py", "from .. import provider\n", ("export.batch", "provider")),
        ("attributes.py", "from . import _stacktrace\n", ("attributes", "_stacktrace")),
        ("store.py", "import autotrace.spans\n", ("store", "spans")),
    ],
)
def test_an_injected_upward_import_fails_the_check(
    tmp_path: Path, module: str, line: str, expected: tuple[str, str]
) -> None:
    """A copy of the package with one upward (or sideways) import added, at module level or in a function, fails."""
    copy = tmp_path / "autotrace"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_problems(copy, TIERS) == []
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + "\n\n" + line, encoding="utf-8")
    problems = layering_problems(copy, TIERS)
    importer, imported = expected
    assert any(p.startswith(f"{importer} (tier ") and f" imports {imported} (tier " in p for p in problems), problems


def test_an_injected_cycle_is_reported_as_a_cycle(tmp_path: Path) -> None:
    """An import that closes a loop is reported as an import cycle, whatever the tiers say."""
    copy = tmp_path / "autotrace"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "_env.py").write_text((copy / "_env.py").read_text() + "\nfrom . import _limits\n")
    (copy / "_limits.py").write_text((copy / "_limits.py").read_text() + "\nfrom . import _env\n")
    problems = layering_problems(copy, TIERS)
    assert any(p.startswith("import cycle: ") and "_env" in p and "_limits" in p for p in problems), problems


def test_typing_only_imports_are_allowed(tmp_path: Path) -> None:
    """An upward import under ``if TYPE_CHECKING:`` is no runtime import and passes the check."""
    copy = tmp_path / "autotrace"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "_model.py"
    extra = "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .tracer import span\n"
    target.write_text(target.read_text() + extra)
    assert layering_problems(copy, TIERS) == []


def _importable_names() -> list[str]:
    names = []
    for name in modules_of(PACKAGE):
        if name == "__main__":
            continue  # running it runs the CLI
        names.append("autotrace" if name == "__init__" else f"autotrace.{name}")
    return names


def _import_in_fresh_interpreter(names: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTOTRACE_"))}
    return subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """`import autotrace.<module>` works on its own, for every module, in a new interpreter."""
    failed = {}
    for name in _importable_names():
        result = _import_in_fresh_interpreter([name])
        if result.returncode != 0:
            failed[name] = result.stderr[-2000:]
    assert failed == {}


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_all_modules_import_in_any_order(order: str) -> None:
    """Importing every module one after another works in sorted, reversed and a shuffled order."""
    names = sorted(_importable_names())
    if order == "reversed":
        names.reverse()
    elif order == "shuffled":
        random.Random(13).shuffle(names)
    result = _import_in_fresh_interpreter(names)
    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_layout_section_lists_the_declared_tiers() -> None:
    """README's "How the code is laid out" names the same modules, tier by tier, as TIERS."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    listed = []
    for line in section.splitlines():
        if line.startswith("- `"):
            names = line[2:].split(": ", 1)[0]
            listed.append([name.strip().strip("`") for name in names.split(",")])
    assert listed == TIERS
