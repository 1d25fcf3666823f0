"""Shared pytest configuration: hypothesis profiles and optional-dependency markers."""

import os

from hypothesis import HealthCheck, settings

# CI: no deadline (shared 2-core runners), derandomised so a run is reproducible.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=40)
# A longer randomised search for local bug hunting: HYPOTHESIS_PROFILE=thorough pytest.
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=list(HealthCheck))
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
