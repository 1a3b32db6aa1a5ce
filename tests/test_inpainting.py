"""Imputation and colorization by the replacement method, against exact Gaussian answers.

For Gaussian data N(m, Sigma) the replacement method has a closed-form small-step limit (below),
so the samplers' output can be checked against exact moments. That limit is *not* the exact
conditional Gaussian p(x_u | x_o = y): the method substitutes a freshly noised observation
(Song et al. 2021, App. I.2 write the approximation as such), and the tests pin down both facts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from sdelab import make_sde
from sdelab import samplers as smp
from sdelab.inpainting import (
    COLOR_TRANSFORM,
    as_mask,
    box_mask,
    colorize,
    from_decoupled,
    impute,
    random_mask,
    to_decoupled,
)
from sdelab.toy import gaussian

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def random_gaussian(d, seed, event_shape=None):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=f64)
    cov = A @ A.T / d + 0.3 * torch.eye(d, dtype=f64)
    mean = torch.randn(d, generator=g, dtype=f64)
    return gaussian(mean, cov, event_shape=event_shape)


# ---------------------------------------------------------------------------------------------
# Mechanics: observed entries, masks, consistency with the plain samplers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["euler_maruyama", "reverse_diffusion", "predictor_corrector"])
@pytest.mark.parametrize("mask_kind", ["numpy", "bool_shared", "float_per_sample"])
def test_observed_entries_equal_the_input_exactly(sampler, mask_kind):
    sde = make_sde("vp-linear")
    gm = random_gaussian(16, 0, event_shape=(1, 4, 4))
    g = torch.Generator().manual_seed(1)
    y = gm.sample(6, g)
    shared = box_mask((1, 4, 4), 1, 1, 2, 3)
    mask = {"numpy": shared.numpy(), "bool_shared": shared,
            "float_per_sample": random_mask((6, 1, 4, 4), 0.5, g, per_channel=True).double()}[mask_kind]
    m = as_mask(mask, y)
    y_in = torch.where(m, y, torch.full_like(y, math.nan))  # unobserved entries are never read
    res = impute(gm.score_fn(sde), sde, y_in, mask, steps=10, sampler=sampler, generator=2)
    assert torch.equal(res.x[m], y[m])
    assert torch.isfinite(res.x).all() and res.x.shape == y.shape
    assert res.nfe == (20 if sampler == "predictor_corrector" else 10)


def test_nothing_observed_is_the_plain_sampler_and_everything_observed_is_the_input():
    sde = make_sde("ve")
    gm = random_gaussian(3, 1)
    x_T = sde.prior_sample((50, 3), generator=torch.Generator().manual_seed(0), dtype=f64)
    none = torch.zeros(3, dtype=torch.bool)
    a = impute(gm.score_fn(sde), sde, torch.zeros(50, 3, dtype=f64), none, steps=15, x_T=x_T,
               generator=torch.Generator().manual_seed(1))
    b = smp.euler_maruyama(gm.score_fn(sde), sde, x_T, steps=15, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.x, b.x)
    y = gm.sample(50, torch.Generator().manual_seed(2))
    assert torch.equal(impute(gm.score_fn(sde), sde, y, ~none, steps=3, generator=3).x, y)


def test_predictor_corrector_without_corrector_is_reverse_diffusion_and_trajectory():
    sde = make_sde("subvp-linear")
    gm = random_gaussian(4, 2)
    y = gm.sample(20, torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, True, False])
    kw = dict(steps=8, generator=None, return_trajectory=True)
    a = impute(gm.score_fn(sde), sde, y, mask, sampler="predictor_corrector", corrector_steps=0,
               **{**kw, "generator": torch.Generator().manual_seed(5)})
    b = impute(gm.score_fn(sde), sde, y, mask, sampler="reverse_diffusion", **{**kw, "generator": torch.Generator().manual_seed(5)})
    assert torch.equal(a.x, b.x) and a.trajectory.shape == (9, 20, 4)
    # along the way the observed entries hold alpha(t) y + sigma(t) z: their spread around alpha y
    # is sigma(t) (z-test on 20 x 2 draws at the middle time, 5 SE of a chi-square variance)
    t_mid = b.times[4].item()
    alpha, sigma = sde.marginal_coeffs(torch.tensor([t_mid], dtype=f64))
    resid = (b.trajectory[4][:, mask] - alpha * y[:, mask]) / sigma
    assert abs(resid.pow(2).mean().item() - 1) < 5 * math.sqrt(2 / resid.numel())


def test_denoise_replaces_only_unknown_entries():
    sde = make_sde("vp-linear")
    gm = random_gaussian(4, 3)
    y = gm.sample(10, torch.Generator().manual_seed(0))
    mask = torch.tensor([True, True, False, False])
    res = impute(gm.score_fn(sde), sde, y, mask, steps=5, generator=1, final_denoise=True)
    assert res.nfe == 6 and torch.equal(res.x[:, :2], y[:, :2])


def test_masks():
    m = box_mask((1, 5, 6), 1, 2, 2, 3)
    assert m.dtype == torch.bool and m.sum() == 30 - 6 and not m[0, 1:3, 2:5].any()
    r = random_mask((3, 40, 40), 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(r[0], r[1])  # channels observed together
    assert abs(r[0].double().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 1600)
    x = torch.zeros(2, 3, 4)
    assert as_mask(np.ones((3, 4)), x).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="0 and 1"):
        as_mask(torch.full((3, 4), 0.5), x)
    with pytest.raises(ValueError, match="broadcast"):
        as_mask(torch.ones(5, 4, dtype=torch.bool), x)
    with pytest.raises(TypeError, match="mask"):
        as_mask([[1, 0]], x)
    with pytest.raises(ValueError, match="sampler"):
        impute(lambda x, t: x, make_sde("ve"), x, np.ones((3, 4)), steps=2, sampler="heun")


# ---------------------------------------------------------------------------------------------
# Gaussian data: the replacement method's exact small-step limit.
#
# Unknown block u, observed block o, y the observation; C(t) = alpha^2 Sigma + sigma^2 I, P = C^-1.
# The exact score's u-part is s_u = -P_uu (x_u - alpha m_u) - P_uo (x_o - alpha m_o), and the
# method puts x_o = alpha y + sigma xi with a fresh xi at every step. Per step that noise moves x_u
# by g^2 h P_uo sigma xi, whose variance is O(h^2): summed over 1/h steps it vanishes as h -> 0
# (part of the discretisation bias, bounded below). So x_u follows, in reverse time, the linear SDE
#   dx_u = [f x_u + g^2 (P_uu (x_u - alpha m_u) + alpha P_uo (y - m_o))] dt + g dw,
# whose mean M and covariance V obey (t decreasing, A = f I + g^2 P_uu)
#   dM/dt = f M + g^2 (P_uu (M - alpha m_u) + alpha P_uo (y - m_o)),  dV/dt = A V + V A^T - g^2 I,
# solved here by scipy (rtol 1e-10) from the chains' start x_u(T) ~ N(alpha_T m_u, C_uu(T)).
# The exact conditional is instead N(alpha mu_c, alpha^2 Sigma_c + sigma^2 I) with
# mu_c = m_u + Sigma_uo Sigma_oo^-1 (y - m_o): the two differ unless Sigma_uo = 0.
# Tolerances as in tests/test_samplers.py: whitened z-scores of mean and covariance, Z = 5, and the
# discretisation bias (weak order 1) bounded from a coarse run with S/10 steps on independent
# noise: |z(S)| <= Z + (|z(S/10)| + Z)/10.
# ---------------------------------------------------------------------------------------------
def replacement_limit(sde, mean, cov, obs, y):
    """Mean and covariance of x_u at eps under the replacement method's small-step limit."""
    mean, cov = mean.numpy(), cov.numpy()
    u = ~obs.numpy()
    o = obs.numpy()
    d_u = int(u.sum())

    def coeffs(t):
        tt = torch.tensor([t], dtype=f64)
        a, s = sde.marginal_coeffs(tt)
        return a.item(), s.item(), sde.drift_coeff(tt).item(), sde.diffusion_coeff(tt).item() ** 2

    def rhs(t, z):
        M, V = z[:d_u], z[d_u:].reshape(d_u, d_u)
        a, s, f, g2 = coeffs(t)
        P = np.linalg.inv(a * a * cov + s * s * np.eye(len(mean)))
        Puu, Puo = P[np.ix_(u, u)], P[np.ix_(u, o)]
        dM = f * M + g2 * (Puu @ (M - a * mean[u]) + a * Puo @ (y.numpy() - mean[o]))
        A = f * np.eye(d_u) + g2 * Puu
        dV = A @ V + V @ A.T - g2 * np.eye(d_u)
        return np.concatenate([dM, dV.ravel()])

    a, s, _, _ = coeffs(sde.T)
    C_T = a * a * cov + s * s * np.eye(len(mean))
    z0 = np.concatenate([a * mean[u], C_T[np.ix_(u, u)].ravel()])
    sol = solve_ivp(rhs, (sde.T, sde.eps), z0, rtol=1e-10, atol=1e-12, method="LSODA")
    M, V = sol.y[:d_u, -1], sol.y[d_u:, -1].reshape(d_u, d_u)
    return torch.tensor(M, dtype=f64), torch.tensor(0.5 * (V + V.T), dtype=f64)


def z_scores(x, mean, cov):
    n, d = x.shape
    L = torch.linalg.cholesky(cov)
    w = torch.linalg.solve_triangular(L, (x - mean).T, upper=False).T
    eye = torch.eye(d, dtype=f64)
    scale = torch.where(eye.bool(), math.sqrt((n - 1) / 2), math.sqrt(n - 1))
    iu = torch.triu_indices(d, d)
    return torch.cat([w.mean(0) * math.sqrt(n), ((torch.cov(w.T) - eye) * scale)[iu[0], iu[1]]]).abs()


def conditional(sde, mean, cov, obs, y):
    """The exact conditional p_eps(x_u | x_o(0) = y): N(alpha mu_c, alpha^2 Sigma_c + sigma^2 I)."""
    u, o = ~obs, obs
    S_uo, S_oo = cov[u][:, o], cov[o][:, o]
    mu_c = mean[u] + S_uo @ torch.linalg.solve(S_oo, y - mean[o])
    S_c = cov[u][:, u] - S_uo @ torch.linalg.solve(S_oo, S_uo.T)
    a, s = (v.item() for v in sde.marginal_coeffs(torch.tensor([sde.eps], dtype=f64)))
    return a * mu_c, a * a * S_c + s * s * torch.eye(int(u.sum()), dtype=f64)


N_IMP, Z, K_COARSE, STEPS = 3000, 5.0, 10, 200


@pytest.mark.parametrize("sde_name", ["ve", "vp-linear", "subvp-linear"])
@pytest.mark.parametrize("sampler", ["euler_maruyama", "reverse_diffusion"])
def test_gaussian_imputation_matches_the_replacement_limit(sampler, sde_name):
    sde = make_sde(sde_name)
    gm = random_gaussian(4, 7)
    obs = torch.tensor([True, False, True, False])
    y = gm.means[0, obs] + torch.tensor([1.0, -0.8], dtype=f64)  # an observation off the mean
    g = torch.Generator().manual_seed(8)
    M, V = replacement_limit(sde, gm.means[0], gm.covs[0], obs, y)
    runs = []
    for steps, seed in ((STEPS, 9), (STEPS // K_COARSE, 10)):
        x_T = sde.perturb(gm.sample(N_IMP, g), sde.T, generator=g)[0]
        yy = torch.zeros(N_IMP, 4, dtype=f64)
        yy[:, obs] = y
        res = impute(gm.score_fn(sde), sde, yy, obs, steps=steps, sampler=sampler, x_T=x_T,
                     generator=torch.Generator().manual_seed(seed))
        assert torch.equal(res.x[:, obs], yy[:, obs])
        runs.append(res.x[:, ~obs])
    z_fine, z_coarse = z_scores(runs[0], M, V), z_scores(runs[1], M, V)
    allowed = Z + (z_coarse + Z) / K_COARSE
    assert (z_fine <= allowed).all(), f"z-scores {z_fine.tolist()} exceed {allowed.tolist()}"
    # ... and the exact conditional Gaussian is *not* what the replacement method samples: against
    # it the same samples give z-scores far beyond any tolerance above (about 40 here)
    mc, Vc = conditional(sde, gm.means[0], gm.covs[0], obs, y)
    assert z_scores(runs[0], mc, Vc).max() > 3 * Z


# ---------------------------------------------------------------------------------------------
# Colorization on synthetic colour data (offline there is no colour image set)
# ---------------------------------------------------------------------------------------------
def test_colour_transform_is_orthogonal_with_the_gray_direction_first():
    M = COLOR_TRANSFORM
    torch.testing.assert_close(M.T @ M, torch.eye(3, dtype=f64), rtol=0, atol=1e-15)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=f64)
    u = to_decoupled(x)
    torch.testing.assert_close(u[:, 0], x.sum(1) / math.sqrt(3), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(from_decoupled(u), x, rtol=1e-14, atol=1e-14)


def test_colorization_keeps_the_gray_image_and_matches_the_replacement_limit():
    # A Gaussian on 3x2x2 colour images (d = 12) with exact scores. In decoupled coordinates
    # u = M^T x (per pixel), the data are N(Q^T m, Q^T Sigma Q), Q = blockdiag of M over the pixels,
    # and colorization is imputation with the gray channel observed: same limit and tolerances as
    # above (8 unknown coordinates: 8 + 36 z-scores, two-sided 6e-7 each).
    sde = make_sde("vp-linear")
    gm = random_gaussian(12, 11, event_shape=(3, 2, 2))
    g = torch.Generator().manual_seed(12)
    target = gm.sample(1, g)
    gray = target.mean(1, keepdim=True)
    # the linear map x (flattened C, H, W) -> u (flattened): columns are the images of unit vectors
    Q = to_decoupled(torch.eye(12, dtype=f64).reshape(12, 3, 2, 2)).reshape(12, 12).T
    m_u, S_u = Q @ gm.means[0], Q @ gm.covs[0] @ Q.T
    obs = torch.zeros(3, 2, 2, dtype=torch.bool)
    obs[0] = True
    obs = obs.flatten()
    M, V = replacement_limit(sde, m_u, S_u, obs, (Q @ target.flatten())[obs])
    runs = []
    for steps, seed in ((STEPS, 13), (STEPS // K_COARSE, 14)):
        x_T = sde.perturb(gm.sample(N_IMP, g), sde.T, generator=g)[0]
        res = colorize(gm.score_fn(sde), sde, gray.expand(N_IMP, 1, 2, 2), steps=steps, x_T=to_decoupled(x_T),
                       generator=torch.Generator().manual_seed(seed))
        assert res.x.shape == (N_IMP, 3, 2, 2)
        torch.testing.assert_close(res.x.mean(1, keepdim=True), gray.expand(N_IMP, 1, 2, 2), rtol=0, atol=1e-14)
        runs.append(to_decoupled(res.x).flatten(1)[:, ~obs])
    z_fine, z_coarse = z_scores(runs[0], M, V), z_scores(runs[1], M, V)
    allowed = Z + (z_coarse + Z) / K_COARSE
    assert (z_fine <= allowed).all(), f"z-scores {z_fine.tolist()} exceed {allowed.tolist()}"
