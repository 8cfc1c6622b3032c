"""Command line: filled in by the server issue."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the autotrace command."""
    raise SystemExit("autotrace: the command line is not built yet")
