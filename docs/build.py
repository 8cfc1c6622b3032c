"""Build autotrace's API reference with pdoc, failing on any warning or undocumented public name.

    pip install -e '.[docs]'
    python docs/build.py                 # writes build/api/index.html
    python docs/build.py --check         # the checks only, nothing written

pdoc has no "warnings as errors" switch: this script records every warning pdoc raises
while it reads and renders the modules and exits 1 if there was one, or if a public
name has no docstring.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
import sys
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import pdoc.doc
import pdoc.doc_ast
import pdoc.render

import autotrace

# Submodules whose public names autotrace re-exports from the package itself (autotrace.__all__),
# or that are the command line: they get no page of their own. Every other submodule whose name
# does not start with "_" is public and gets a page, so a new one is documented (and checked)
# as soon as it lands.
INTERNAL = {
    "attributes",
    "cli",
    "config",
    "decorators",
    "inference",
    "otlp",
    "redaction",
    "sampling",
    "spans",
    "store",
    "tracer",
}


def public_modules() -> list[str]:
    """``autotrace`` and its public submodules, the pages of the reference."""
    names = ["autotrace"]
    for info in pkgutil.iter_modules(autotrace.__path__):
        if not info.name.startswith("_") and info.name not in INTERNAL:
            names.append(f"autotrace.{info.name}")
    return names


def _namedtuple_constructors_in_their_module() -> None:
    """Point each public NamedTuple's generated ``__new__`` at the module of its class.

    ``typing.NamedTuple`` builds ``__new__`` in a module of its own ("namedtuple_Link"), where
    pdoc cannot resolve the string annotations of a module using ``from __future__ import
    annotations`` and warns. Only this process's classes change, for the time of the build.
    """
    for name in public_modules():
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                new = value.__new__
                if getattr(new, "__module__", "").startswith("namedtuple_"):
                    new.__module__ = value.__module__


def public_members(module: pdoc.doc.Module) -> list[pdoc.doc.Doc[Any]]:
    """The module's public names: its ``__all__``, else what it defines without a leading underscore."""
    exported = getattr(module.obj, "__all__", None)
    if exported is not None:
        return [module.members[name] for name in exported if name in module.members]
    return [
        doc
        for name, doc in module.members.items()
        if not name.startswith("_") and doc.taken_from[0] == module.modulename
    ]


def _source_of(module: Any, name: str) -> Any | None:
    """The module ``name`` is imported from in ``module``'s source (``from .x import name``), if any."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(
            alias.name == name and alias.asname in (None, name) for alias in node.names
        ):
            package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
            target = "." * node.level + (node.module or "")
            return importlib.import_module(target, package) if node.level else importlib.import_module(target)
    return None


def fill_reexported_docstrings(module: pdoc.doc.Module) -> None:
    """Give a re-exported constant the docstring it has where it is defined.

    pdoc reads a variable's docstring from the module being documented only, so
    ``autotrace.__version__`` or ``autotrace.export.DEFAULT_ENDPOINT`` would show none.
    """
    for doc in public_members(module):
        if not isinstance(doc, pdoc.doc.Variable) or doc.docstring:
            continue
        source: Any = module.obj
        for _ in range(5):  # follow a short chain of re-exports
            source = _source_of(source, doc.name)
            if source is None:
                break
            text = pdoc.doc_ast.walk_tree(source).var_docstrings.get(doc.name)
            if text:
                doc.docstring = text
                break


def missing_docstrings(module: pdoc.doc.Module) -> list[str]:
    """Public names of ``module`` without a docstring: the module, its names, and their public methods."""
    missing = [] if module.docstring else [module.fullname]
    for doc in public_members(module):
        if not doc.docstring:
            missing.append(doc.fullname)
        if isinstance(doc, pdoc.doc.Class):
            for member in doc.own_members:
                if member.name.startswith("_"):
                    continue
                is_property = isinstance(
                    inspect.getattr_static(doc.obj, member.name, None), (property, cached_property)
                )
                if (isinstance(member, pdoc.doc.Function) or is_property) and not member.docstring:
                    missing.append(member.fullname)
    return missing


def build(output: Path | None) -> int:
    """Read, check and (unless ``output`` is None) render the reference; returns the exit status."""
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _namedtuple_constructors_in_their_module()
        modules = {name: pdoc.doc.Module.from_name(name) for name in public_modules()}
        count = 0
        for module in modules.values():
            fill_reexported_docstrings(module)
            problems += [f"no docstring: {name}" for name in missing_docstrings(module)]
            count += len(public_members(module))
        pages = {name: pdoc.render.html_module(module, modules) for name, module in modules.items()}
        index = pdoc.render.html_index(modules)
        search = pdoc.render.search_index(modules)
    problems += [f"pdoc warning: {w.category.__name__}: {w.message}" for w in caught]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"API reference: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if output is not None:
        for name, html in pages.items():
            path = output / f"{name.replace('.', '/')}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(html, encoding="utf-8")
        if index:
            (output / "index.html").write_text(index, encoding="utf-8")
        if search:
            (output / "search.js").write_text(search, encoding="utf-8")
    where = f", written to {output / 'index.html'}" if output is not None else ""
    print(f"API reference: {len(modules)} modules, {count} public names, all documented{where}")
    return 0


def main() -> int:
    """Entry point: parse the options and build."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("build/api"), help="directory (default: build/api)")
    parser.add_argument("--check", action="store_true", help="check only, write nothing")
    args = parser.parse_args()
    return build(None if args.check else args.output)


if __name__ == "__main__":
    sys.exit(main())
