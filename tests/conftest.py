"""Test configuration: the OpenMP wait policy, a fixed hypothesis profile, one thread for toy-sized modules."""

import os

# sdelab before torch: it bounds OpenMP's spin-wait, so the suite slows ~2x, not 3-40x, when
# another process holds a core (README, "A busy machine"). An explicit setting is kept.
import sdelab  # noqa: E402, F401

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# CI and a reader's laptop get the same, derandomized examples: a failure is reproducible and
# the suite's cost is fixed. `HYPOTHESIS_PROFILE=explore` draws fresh examples for local hunting.
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-tensor tests (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    On tensors of a few hundred entries a second thread only adds OpenMP barrier waits, and on a
    busy 2-core machine those made toy ODE solves 20-50x slower than with one thread. The default
    is restored for the next module. The thread count can change the last bits of a reduction,
    never by anything near these modules' tolerances.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
