"""Tempering schedules: the fixed grid and the KL-controlled adaptive step."""

import numpy as np
import pytest

from cgbench.tempering import fixed_schedule, kl_change, next_beta


@pytest.mark.parametrize("beta_0, beta_target, delta, expected", [
    (0.5, 1.0, 0.25, [0.5, 0.75, 1.0]),
    (0.1, 1.0, 0.4, [0.1, 0.5, 0.9, 1.0]),              # last increment shorter (0.1)
    (0.01, 1.0, 0.33, [0.01, 0.34, 0.67, 1.0]),         # (1−0.01)/0.33 = 3.0000000000000004
    (0.2, 1.0, 0.2, [0.2, 0.4, 0.6, 0.8, 1.0]),         # 0.8/0.2 = 4.000000000000001
    (1.0, 1.0, 0.1, [1.0]),
    (0.3, 1.0, 5.0, [0.3, 1.0]),
])
def test_fixed_schedule_values(beta_0, beta_target, delta, expected):
    np.testing.assert_allclose(fixed_schedule(beta_0, beta_target, delta), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta_0, beta_target, delta", [
    (0.01, 1.0, 0.01), (1e-3, 1.0, 0.05), (0.1, 1.0, 0.1), (0.05, 2.0, 0.3), (1e-3, 1.0, 0.33),
])
def test_fixed_schedule_spacing(beta_0, beta_target, delta):
    betas = fixed_schedule(beta_0, beta_target, delta)
    assert betas[0] == beta_0 and betas[-1] == beta_target
    steps = np.diff(betas)
    assert np.all(steps > 0)
    np.testing.assert_allclose(steps[:-1], delta, atol=1e-9)
    assert 1e-9 < steps[-1] <= delta + 1e-9  # the last increment may be shorter, never longer
    assert len(betas) == int(np.ceil((beta_target - beta_0) / delta - 1e-9)) + 1


@pytest.mark.parametrize("args", [(0.0, 1.0, 0.1), (-0.1, 1.0, 0.1), (1.0, 0.5, 0.1), (0.1, 1.0, 0.0),
                                  (0.1, 1.0, -0.1)])
def test_fixed_schedule_rejects_bad_input(args):
    with pytest.raises(ValueError):
        fixed_schedule(*args)


def chain_energies(n_z, n_s, *, between_sd, within_sd, seed, offset=5.0):
    """U_is = a_i + ε_is: a_i ~ N(offset, between_sd²) is the z-dependent ⟨U⟩_z, and
    ε_is ~ N(0, within_sd²) the fluctuation of the fast coordinates along the chain of z_i."""
    rng = np.random.default_rng(seed)
    a = rng.normal(offset, between_sd, size=(n_z, 1))
    return a + rng.normal(0.0, within_sd, size=(n_z, n_s)), a[:, 0]


@pytest.fixture(scope="module")
def energies():
    return chain_energies(400, 8, between_sd=2.0, within_sd=1.0, seed=0)[0]


def test_kl_change_zero_at_zero_and_monotone(energies):
    assert kl_change(energies, 0.0) == pytest.approx(0.0, abs=1e-12)
    deltas = np.linspace(0, 3, 31)
    kls = np.array([kl_change(energies, d) for d in deltas])
    assert np.all(np.isfinite(kls))
    assert np.all(kls >= 0)
    assert np.all(np.diff(kls) > 0)


@pytest.mark.parametrize("delta", [0.05, 0.7])
def test_kl_change_ignores_a_constant_energy_shift(energies, delta):
    assert kl_change(energies + 1234.5, delta) == pytest.approx(kl_change(energies, delta), rel=1e-6)


@pytest.mark.parametrize("between_sd, delta", [(1.0, 1e-2), (3.0, 1e-3), (0.5, 0.1)])
def test_kl_change_without_fast_noise_is_half_delta_squared_variance(between_sd, delta):
    """Chains that see a single energy per z: KL ≈ ½Δ² Var_z(⟨U⟩_z) (second-order expansion of
    log p_{β+Δ}(z) − log p_β(z) = −Δ(⟨U⟩_z − E⟨U⟩) + O(Δ²))."""
    u, a = chain_energies(3000, 4, between_sd=between_sd, within_sd=0.0, seed=1)
    assert kl_change(u, delta) == pytest.approx(0.5 * delta**2 * a.var(), rel=2e-3)


@pytest.mark.parametrize("n_s", [2, 4, 16])
def test_kl_change_discounts_fast_coordinate_noise(n_s):
    """x-fluctuations (variance 9, z-independent) must not count as a change of p_β(z): the
    estimate tracks the between-z variance (1), not the variance of the chain averages."""
    u, a = chain_energies(4000, n_s, between_sd=1.0, within_sd=3.0, seed=2)
    delta = 0.1
    truth = 0.5 * delta**2 * 1.0
    naive = 0.5 * delta**2 * u.mean(1).var()  # ≈ ½Δ²(1 + 9/S)
    kl = kl_change(u, delta)
    se = np.sqrt(2 / 4000) * (1 + 9 / n_s)  # relative sampling error of the variance estimate
    assert kl == pytest.approx(truth, rel=4 * se)
    assert kl < naive - 0.5 * (naive - truth)


def test_kl_change_of_z_independent_energies_is_near_zero():
    u, _ = chain_energies(2000, 10, between_sd=0.0, within_sd=3.0, seed=3)
    # the uncorrected chain-average variance would give ½·0.9 = 0.45 at Δ = 1
    assert kl_change(u, 1.0) < 0.05


def test_kl_change_identical_rows_is_zero():
    u = np.tile(np.random.default_rng(4).normal(size=(1, 8)), (50, 1))
    assert kl_change(u, 0.8) == pytest.approx(0.0, abs=1e-12)


def _next_beta_or_error(energies):
    try:
        return next_beta(0.01, energies, beta_target=1.0, target_kl_change=0.05)
    except (ValueError, FloatingPointError, RuntimeError):
        return None  # refusing loudly is acceptable


def test_next_beta_does_not_jump_to_target_on_a_nan_energy():
    u, _ = chain_energies(200, 4, between_sd=5.0, within_sd=1.0, seed=5)
    assert _next_beta_or_error(u) < 1.0  # the finite energies call for a small step
    u[17, 2] = np.nan  # one chain diverged
    beta_new = _next_beta_or_error(u)
    assert beta_new is None or beta_new < 1.0


def test_next_beta_does_not_jump_to_target_with_one_state_per_z():
    u, _ = chain_energies(200, 1, between_sd=5.0, within_sd=0.0, seed=5)
    beta_new = _next_beta_or_error(u)
    assert beta_new is None or beta_new < 1.0


@pytest.mark.parametrize("beta, target_kl", [(0.1, 0.05), (0.5, 0.01), (0.01, 0.2)])
def test_next_beta_hits_target_kl(energies, beta, target_kl):
    beta_new = next_beta(beta, energies, beta_target=1.0, target_kl_change=target_kl)
    assert beta < beta_new < 1.0
    achieved = kl_change(energies, beta_new - beta)
    assert achieved <= target_kl * (1 + 1e-6)
    assert achieved == pytest.approx(target_kl, rel=5e-3)


@pytest.mark.parametrize("beta, target_kl", [(0.9, 0.05), (0.99, 0.01), (0.5, 100.0)])
def test_next_beta_jumps_to_target_when_close(energies, beta, target_kl):
    assert kl_change(energies, 1.0 - beta) <= target_kl
    assert next_beta(beta, energies, beta_target=1.0, target_kl_change=target_kl) == 1.0


def test_next_beta_at_target(energies):
    assert next_beta(1.0, energies, beta_target=1.0, target_kl_change=0.05) == 1.0


def test_next_beta_without_z_dependence_goes_to_target():
    u = np.tile(np.random.default_rng(6).normal(size=(1, 4)), (30, 1))
    assert next_beta(0.2, u, beta_target=1.0, target_kl_change=1e-3) == 1.0


def test_next_beta_smaller_steps_for_broader_energies():
    narrow, _ = chain_energies(500, 4, between_sd=1.0, within_sd=0.0, seed=7)
    broad = 4 * narrow
    step_narrow = next_beta(0.1, narrow, beta_target=1.0, target_kl_change=0.02) - 0.1
    step_broad = next_beta(0.1, broad, beta_target=1.0, target_kl_change=0.02) - 0.1
    # ½Δ²Var = KL: Δ ∝ 1/sd
    assert step_broad == pytest.approx(step_narrow / 4, rel=0.02)
