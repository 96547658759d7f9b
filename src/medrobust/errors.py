"""Exception types.

Every error medrobust raises on bad input is a :class:`MedrobustError` whose message names the
file or argument at fault and says how to fix it. The CLI prints these without a traceback.
"""

from __future__ import annotations


class MedrobustError(Exception):
    """Base class of all medrobust input errors."""


class DataError(MedrobustError, ValueError):
    """A data file or directory is missing, truncated, corrupt or inconsistent."""


class ConfigError(MedrobustError, ValueError):
    """An argument or configuration value is invalid."""


class CheckpointError(MedrobustError, ValueError):
    """A checkpoint is missing, corrupt, or does not match what it is used with."""
