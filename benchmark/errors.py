"""Errors the suite reports to users: each names the file at fault and the remedy."""

from __future__ import annotations


class BenchmarkError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(BenchmarkError):
    """A protocol, dataset card, class-name or template file is wrong."""


class DataError(BenchmarkError):
    """A dataset is missing, incomplete, or holds a bad file."""


class CheckpointError(BenchmarkError):
    """A weights file is missing, corrupt, or does not fit the method."""


class NumericalError(BenchmarkError):
    """A method produced NaN or Inf scores."""
