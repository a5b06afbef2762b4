"""triage: find what is eating p95 of an ML inference service, from OpenTelemetry traces and Prometheus metrics.

One import namespace for the project's top-level folders, mapped in pyproject.toml (``package-dir``):
``collectors/`` is ``triage.collectors``, ``analyzers/`` is ``triage.analyzers``, and so on. Layers, lowest
first: collectors → analyzers → remediations → sessions → tui | lab → cli (docs/architecture.md).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("triage")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
