"""The package version."""

__version__ = "0.1.0"
"""The version of autotrace, the only place it is written (packaging reads it from here)."""
