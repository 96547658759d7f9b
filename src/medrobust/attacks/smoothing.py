"""Deprecated alias of :mod:`medrobust.attacks.sap_filter` (the SAP Gaussian filter), kept for existing imports."""

from medrobust.attacks.sap_filter import *  # noqa: F401,F403
from medrobust.attacks.sap_filter import HAN_FS, HAN_SIGMAS, HAN_SIZES, frequency_response, sap_kernel, smooth, smoothing_matrix  # noqa: F401
