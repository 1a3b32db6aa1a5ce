"""Test configuration: a fixed hypothesis profile and float64 defaults where tests ask for them."""

import os

import torch
from hypothesis import HealthCheck, settings

# CI and a reader's laptop get the same, derandomized examples: a failure is reproducible and
# the suite's cost is fixed. `HYPOTHESIS_PROFILE=explore` draws fresh examples for local hunting.
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
