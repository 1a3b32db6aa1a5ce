"""hypothesis strategies shared by the test files: random SDEs, times and data shapes."""

from __future__ import annotations

from hypothesis import strategies as st

from sdelab.sde import SubVPSDE, VESDE, VPSDE


@st.composite
def sdes(draw, kinds=("ve", "vp-linear", "vp-cosine", "subvp-linear", "subvp-cosine")):
    """A random SDE of one of the five configurations, with random but sensible parameters."""
    kind = draw(st.sampled_from(kinds))
    if kind == "ve":
        sigma_min = draw(st.floats(0.005, 0.1))
        sigma_max = draw(st.floats(2.0, 50.0))
        return VESDE(sigma_min=sigma_min, sigma_max=sigma_max)
    cls = VPSDE if kind.startswith("vp") else SubVPSDE
    if kind.endswith("linear"):
        beta_min = draw(st.floats(0.05, 1.0))
        beta_max = draw(st.floats(5.0, 25.0))
        return cls(schedule="linear", beta_min=beta_min, beta_max=beta_max)
    s = draw(st.floats(0.001, 0.02))
    beta_max = draw(st.floats(5.0, 40.0))
    return cls(schedule="cosine", s=s, beta_max=beta_max)


trailing_shapes = st.sampled_from([(1,), (2,), (3,), (1, 2, 2), (2, 1, 3)])
