"""Intel DSA (Data Streaming Accelerator) device model; see :mod:`hw.dsa.device`."""

from hw.dsa.config import DsaConfig
from hw.dsa.device import DsaDevice

__all__ = ["DsaConfig", "DsaDevice"]
