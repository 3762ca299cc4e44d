"""The fastopt benchmark: ``fastopt-bench`` or ``python -m fastopt.bench`` (see cli.py)."""
from fastopt.bench.cli import main

__all__ = ["main"]
