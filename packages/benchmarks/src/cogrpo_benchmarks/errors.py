"""One-line errors for missing benchmark data and missing optional dependencies."""

from __future__ import annotations

from cogrpo.errors import CogrpoError

#: How a user passes a benchmark's data path on the command line (``factory(path=...)``).
PATH_FLAG = "--bench-opt path=DIR"

#: How a user passes any other benchmark option on the command line.
OPTION_FLAG = "--bench-opt"


class BenchmarkDataError(CogrpoError):
    """A benchmark's prompt / question files are missing or malformed; the message names the
    expected files and layout and where to put them."""


class MissingDependencyError(CogrpoError):
    """An optional package a benchmark needs (detector, VQA model) is not installed; the message
    names the packages and the option that avoids them."""


def missing_modules(*modules: str) -> list[str]:
    """The subset of ``modules`` that cannot be imported (checked without importing them)."""
    import importlib.util

    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing
