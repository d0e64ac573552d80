"""ARM SMMUv3 hardware model (see :mod:`hw.smmuv3.unit`)."""

from hw.smmuv3.config import Smmuv3Config
from hw.smmuv3.entries import Evt, Op
from hw.smmuv3.unit import Smmuv3Stats, Smmuv3Unit
from hw.translation import StaleTranslationError

__all__ = ["Evt", "Op", "Smmuv3Config", "Smmuv3Stats", "Smmuv3Unit", "StaleTranslationError"]
