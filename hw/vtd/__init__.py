"""Intel VT-d DMA-remapping hardware model (see :mod:`hw.vtd.unit`)."""

from hw.vtd.config import VtdConfig
from hw.vtd.faults import FR
from hw.vtd.unit import StaleTranslationError, VtdStats, VtdUnit

__all__ = ["FR", "StaleTranslationError", "VtdConfig", "VtdStats", "VtdUnit"]
