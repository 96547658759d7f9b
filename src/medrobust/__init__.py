"""medrobust: measure and improve the adversarial robustness of medical classifiers.

ECG first (single-lead and 12-lead), medical images second. Tensors follow the
``(batch, leads, samples)`` convention; the sampling rate ``fs`` travels with every dataset.
"""

from medrobust.errors import CheckpointError, ConfigError, DataError, MedrobustError

__version__ = "0.1.0"

__all__ = ["__version__", "MedrobustError", "DataError", "ConfigError", "CheckpointError"]
