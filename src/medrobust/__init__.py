"""medrobust: measure and improve the adversarial robustness of medical classifiers.

ECG first (single-lead and 12-lead), medical images second. Tensors follow the
``(batch, leads, samples)`` convention; the sampling rate ``fs`` travels with every dataset.
"""

from medrobust.errors import CheckpointError, ConfigError, DataError, MedrobustError

__version__ = "0.1.0"

__all__ = ["__version__", "MedrobustError", "DataError", "ConfigError", "CheckpointError", "benchmark"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """``medrobust.benchmark(model, dataset="mitdb", ...)`` without importing torch at ``import medrobust``."""
    if name == "benchmark":
        import importlib

        return importlib.import_module("medrobust.benchmark")
    raise AttributeError(f"module 'medrobust' has no attribute {name!r}")
