"""The miners, ``reprkit.miners.x`` (they live in :mod:`reprkit.losses.mining`)."""

from .losses.mining import *  # noqa: F401,F403
from .losses.mining import __all__  # noqa: F401
