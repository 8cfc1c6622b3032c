"""``python -m autotrace``: the same program as the ``autotrace`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
