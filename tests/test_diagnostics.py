"""Tests of cgbench.diagnostics: basins, populations with block errors, φ transitions,
final-bias reweighting, free-energy profiles and the dihedral figure."""

import numpy as np
import pytest

from cgbench.diagnostics import (
    BASINS,
    assign_basins,
    basin_populations,
    dihedral_figure,
    final_bias_weights,
    free_energy_profile,
    interpolate_bias,
    phi_transitions,
)

KT = 2.494  # kJ/mol at 300 K
PI = np.pi
PHI_POS, BETA, ALPHA_R = (list(BASINS).index(k) for k in ("phi_positive", "beta", "alpha_R"))


# ----------------------------------------------------------------------------- basins

def test_basin_names_and_order():
    assert list(BASINS) == ["phi_positive", "beta", "alpha_R"]
    assert all(isinstance(v, str) and v for v in BASINS.values())


@pytest.mark.parametrize("phi, psi, expected", [
    (-1.2, 2.5, BETA),             # C5 / PPII
    (-1.2, -0.7, ALPHA_R),         # alpha_R
    (1.0, 0.5, PHI_POS),           # alpha_L
    (1.0, -2.8, PHI_POS),          # psi does not matter on the phi > 0 side
    (-1.2, -2.5, BETA),            # psi < -2 is beta
    (-1.2, 0.5, ALPHA_R),          # psi boundary 0.5 is alpha_R (strict >)
    (-1.2, 0.5001, BETA),
    (-1.2, -2.0, ALPHA_R),         # psi boundary -2.0 is alpha_R (strict <)
    (-1.2, -2.0001, BETA),
    (0.0, 0.0, ALPHA_R),           # phi = 0 is not phi_positive (strict >)
    (1e-6, 0.0, PHI_POS),
    (2.2, 1.0, BETA),              # phi = 2.2 is not phi_positive (strict <)
    (2.199, 1.0, PHI_POS),
    (3.0, 2.9, BETA),              # phi > 2.2 counts as the phi < 0 side (wraps to beta)
    (3.0, 0.0, ALPHA_R),
    (PI - 1e-9, -1.0, ALPHA_R),
    (-PI, 3.0, BETA),
    (PI, 3.0, BETA),               # phi = pi is phi = -pi
    (PI + 1.0, 0.0, ALPHA_R),      # wraps to -2.14
    (-2 * PI + 1.0, 0.0, PHI_POS), # wraps to 1.0
    (-1.2, PI, BETA),              # psi = pi wraps to -pi < -2
    (-1.2, 2 * PI - 1.0, ALPHA_R), # psi wraps to -1.0
])
def test_assign_basins_points(phi, psi, expected):
    assert assign_basins(np.array([phi]), np.array([psi]))[0] == expected


def test_assign_basins_keeps_shape_and_is_int():
    phi = np.array([[-1.2, 1.0], [-1.2, 3.0]])
    psi = np.array([[2.5, 0.0], [-0.7, 2.9]])
    labels = assign_basins(phi, psi)
    assert labels.shape == (2, 2)
    assert np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, [[BETA, PHI_POS], [ALPHA_R, BETA]])


def test_assign_basins_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        assign_basins(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------------- populations

# labels/weights: block 1 = frames 0-2 (W = 4, p = (1/4, 3/4, 0)), block 2 = frames 3-5
# (W = 4, p = (1, 0, 0)); p = (5/8, 3/8, 0); err = sqrt(2 · 16 · 2 · (3/8)² / 64) = 3/8.
# Interleaved replicas: replica 0 = frames 0, 2, 4 (W = 4, p = (1/2, 1/2, 0)), replica 1 =
# frames 1, 3, 5 (W = 4, p = (3/4, 1/4, 0)); err = sqrt(2 · 16 · 2 · (1/8)² / 64) = 1/8.
SMALL_LABELS = np.array([0, 1, 1, 2, 0, 0])
SMALL_WEIGHTS = np.array([1.0, 1.0, 2.0, 0.0, 1.0, 3.0])


@pytest.mark.parametrize("replica, n_blocks, expected_err", [
    (None, 2, [3 / 8, 3 / 8, 0.0]),
    (np.array([0, 0, 0, 1, 1, 1]), 1, [3 / 8, 3 / 8, 0.0]),
    (np.array([0, 1, 0, 1, 0, 1]), 1, [1 / 8, 1 / 8, 0.0]),
])
def test_populations_hand_computed(replica, n_blocks, expected_err):
    p, err = basin_populations(SMALL_LABELS, SMALL_WEIGHTS, replica=replica, n_blocks=n_blocks)
    np.testing.assert_allclose(p, [5 / 8, 3 / 8, 0.0])
    np.testing.assert_allclose(err, expected_err, atol=1e-12)


def test_populations_uniform_default():
    p, _ = basin_populations(np.array([0, 0, 1, 2]), n_blocks=2)
    np.testing.assert_allclose(p, [0.5, 0.25, 0.25])


def test_populations_respect_weights():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=200)
    counts = rng.integers(0, 4, size=200)
    p_w, _ = basin_populations(labels, counts.astype(float))
    p_rep, _ = basin_populations(np.repeat(labels, counts))
    np.testing.assert_allclose(p_w, p_rep)           # integer weights = repeated frames
    p_scaled, _ = basin_populations(labels, 7.5 * counts)
    np.testing.assert_allclose(p_scaled, p_w)        # only relative weights matter
    w = np.where(labels == 1, 0.0, 1.0)
    p_zero, _ = basin_populations(labels, w)
    assert p_zero[1] == 0.0 and p_zero.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("n_replicas, n_blocks", [(1, 200), (8, 25)])
def test_block_error_iid_matches_binomial(n_replicas, n_blocks):
    # 200 blocks: the error estimate itself scatters by ~5 %, so 30 % is a 6-sigma band.
    rng = np.random.default_rng(2)
    n = 100_000
    p_true = np.array([0.2, 0.3, 0.5])
    labels = rng.choice(3, size=n, p=p_true)
    replica = np.tile(np.arange(n_replicas), n // n_replicas)   # interleaved replicas
    p, err = basin_populations(labels, replica=replica, n_blocks=n_blocks)
    binomial = np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(err, binomial, rtol=0.3)
    assert np.all(np.abs(p - p_true) < 4 * binomial)


def _sticky_chain(rng, n, stay):
    """3-state Markov chain with uniform stationary distribution; stay = P(no jump)."""
    labels = np.empty(n, dtype=int)
    labels[0] = 0
    jump = rng.random(n) > stay
    step = rng.integers(1, 3, size=n)                 # jump to one of the two other states
    for i in range(1, n):
        labels[i] = (labels[i - 1] + step[i]) % 3 if jump[i] else labels[i - 1]
    return labels


def test_block_error_larger_when_autocorrelated():
    rng = np.random.default_rng(3)
    n = 60_000
    iid = rng.integers(0, 3, size=n)
    sticky = _sticky_chain(rng, n, stay=0.995)
    p_iid, err_iid = basin_populations(iid, n_blocks=20)
    p_sticky, err_sticky = basin_populations(sticky, n_blocks=20)
    np.testing.assert_allclose(p_iid, 1 / 3, atol=0.02)
    np.testing.assert_allclose(p_sticky, 1 / 3, atol=0.15)
    assert np.all(err_sticky > 3 * err_iid)


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=[0, 1, 2], weights=[1.0, 1.0]), "frames"),
    (dict(labels=[0, 1, 2], weights=[1.0, -1.0, 1.0]), "non-negative"),
    (dict(labels=[0, 1, 2], weights=[0.0, 0.0, 0.0]), "all zero"),
    (dict(labels=[0, 1, 2], replica=[0, 1]), "frames"),
    (dict(labels=[0, 1, 2], n_blocks=1), "at least 2 blocks"),
    (dict(labels=[0, 1, 2, 0], weights=[1.0, 1.0, 0.0, 0.0], n_blocks=2), "at least 2 blocks"),
    (dict(labels=[0, 1, 3]), "labels"),
    (dict(labels=[0.0, 1.0]), "integers"),
])
def test_populations_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        basin_populations(**kwargs)


# ----------------------------------------------------------------------------- transitions

# Negative core: phi < -0.5 or phi > 2.6; positive core: 0.3 < phi < 1.9; else keep state.
HYSTERESIS_SERIES = [
    0.1,                 # no state yet
    -1.0,                # negative core
    0.1, 0.25, -0.2,     # noise across phi = 0 without reaching the positive core
    0.29, 0.0,
    1.0,                 # positive core: transition 1
    0.2, -0.4, 1.5,      # noise below the core, back in: no transition
    2.0, 2.5,            # gap between 1.9 and 2.6: keeps positive
    2.7,                 # phi > 2.6 is the negative core: transition 2
    3.1, -3.1, PI,       # across the +-pi wrap: still negative
    -1.0,
    1.2,                 # transition 3
]


@pytest.mark.parametrize("phi, expected", [
    (HYSTERESIS_SERIES, 3),
    ([0.1, 0.2, 0.0, -0.3], 0),                    # never in a core
    ([-1.0, 1.0], 1),
    ([-1.0, 1.0, -1.0, 1.0, -1.0], 4),
    ([1.0, 2.0, 2.55, 1.8], 0),                     # gap keeps the state
    ([1.0, 2.0, 2.65, 1.8], 2),
    ([1.0, 1.95, 0.25, 1.0], 0),
    ([-0.6, -0.45, 0.35], 1),
])
def test_phi_transitions(phi, expected):
    assert phi_transitions(np.array(phi)) == expected


@pytest.mark.parametrize("replica, expected", [
    (None, 3),                                      # -1 -> +1 -> -1 -> +1 as one run
    ([0, 0, 1, 1], 2),                              # runs (-1, +1) and (-1, +1)
    ([0, 1, 0, 1], 0),                              # runs (-1, -1) and (+1, +1)
    ([0, 1, 1, 0], 2),                              # runs (-1, +1) and (+1, -1)
])
def test_phi_transitions_per_replica(replica, expected):
    phi = np.array([-1.0, 1.0, -1.0, 1.0])
    rep = None if replica is None else np.array(replica)
    assert phi_transitions(phi, replica=rep) == expected


# ----------------------------------------------------------------------------- reweighting

def _target_density(s):
    """Unnormalised two-mode periodic density p(s) on [-pi, pi)."""
    return np.exp(2.0 * np.cos(s - 1.0)) + 0.5 * np.exp(3.0 * np.cos(s + 2.0))


def test_final_bias_weights_recover_target_1d():
    rng = np.random.default_rng(4)
    grid = np.linspace(-PI, PI, 41)                 # periodic: last point = first point
    bias_grid = 0.8 * KT * np.log(_target_density(grid))   # well-tempered, gamma = 5
    limits = [(-PI, PI, True)]

    def biased(s):                                  # p(s) exp(-V(s)/kT), V linear on grid
        return _target_density(s) * np.exp(-np.interp(s, grid, bias_grid) / KT)

    fine = np.linspace(-PI, PI, 200_001)
    ceiling = 1.05 * biased(fine).max()
    samples = []
    while sum(len(x) for x in samples) < 20_000:
        s = rng.uniform(-PI, PI, size=40_000)
        samples.append(s[rng.random(s.size) * ceiling < biased(s)])
    s = np.concatenate(samples)[:20_000]

    w = final_bias_weights(s[:, None], bias_grid, limits, kT=KT)
    assert w.shape == s.shape and w.sum() == pytest.approx(1.0) and np.all(w > 0)
    indicator = ((s > 0.5) & (s < 2.0)).astype(float)
    p_fine = _target_density(fine)
    exact = p_fine[(fine > 0.5) & (fine < 2.0)].sum() / p_fine.sum()
    estimate = np.sum(w * indicator)
    se = np.sqrt(np.sum(w ** 2 * (indicator - estimate) ** 2))
    assert se < 0.02
    assert abs(estimate - exact) < 3 * se
    assert abs(indicator.mean() - exact) > 5 * se   # without weights the answer is wrong


def test_interpolation_exact_at_grid_points_2d():
    rng = np.random.default_rng(5)
    n_phi, n_psi = 7, 5
    limits = [(-3.0, 3.0, False), (-2.0, 2.0, False)]
    bias_grid = rng.normal(scale=5.0, size=(n_psi, n_phi))   # OpenMM layout (n_psi, n_phi)
    phi_pts, psi_pts = np.linspace(-3, 3, n_phi), np.linspace(-2, 2, n_psi)
    jj, ii = np.meshgrid(np.arange(n_psi), np.arange(n_phi), indexing="ij")
    cvs = np.column_stack([phi_pts[ii.ravel()], psi_pts[jj.ravel()]])
    np.testing.assert_allclose(interpolate_bias(cvs, bias_grid, limits), bias_grid.ravel(),
                               atol=1e-10)
    w = final_bias_weights(cvs, bias_grid, limits, kT=KT)
    expected = np.exp((bias_grid.ravel() - bias_grid.max()) / KT)
    np.testing.assert_allclose(w, expected / expected.sum(), rtol=1e-10)


def test_interpolation_linear_bias_2d():
    rng = np.random.default_rng(6)
    n_phi, n_psi = 9, 6
    limits = [(-PI, PI, False), (-1.0, 2.0, False)]
    phi_pts, psi_pts = np.linspace(-PI, PI, n_phi), np.linspace(-1.0, 2.0, n_psi)
    bias = lambda phi, psi: 3.0 * phi - 1.5 * psi + 2.0        # noqa: E731
    bias_grid = bias(phi_pts[None, :], psi_pts[:, None])       # (n_psi, n_phi)
    cvs = np.column_stack([rng.uniform(-PI, PI, 500), rng.uniform(-1.0, 2.0, 500)])
    v = bias(cvs[:, 0], cvs[:, 1])
    np.testing.assert_allclose(interpolate_bias(cvs, bias_grid, limits), v, atol=1e-10)
    w = final_bias_weights(cvs, bias_grid, limits, kT=KT)
    np.testing.assert_allclose(np.log(w / w[0]), (v - v[0]) / KT, atol=1e-9)


def test_interpolation_wraps_periodic_variables():
    rng = np.random.default_rng(7)
    limits = [(-PI, PI, True), (-PI, PI, True)]
    bias_grid = rng.normal(size=(11, 13))
    bias_grid[-1, :] = bias_grid[0, :]                          # periodic: last = first
    bias_grid[:, -1] = bias_grid[:, 0]
    cvs = rng.uniform(-PI, PI, size=(100, 2))
    shifted = cvs + 2 * PI * rng.integers(-2, 3, size=cvs.shape)
    np.testing.assert_allclose(interpolate_bias(shifted, bias_grid, limits),
                               interpolate_bias(cvs, bias_grid, limits), atol=1e-9)
    # phi = pi is the first grid column (phi = -pi).
    np.testing.assert_allclose(interpolate_bias([[PI, -PI]], bias_grid, limits),
                               bias_grid[0, 0], atol=1e-9)


@pytest.mark.parametrize("replica, fraction, zeroed", [
    (None, 0.25, range(0, 7)),                                   # floor(0.25 * 30) = 7
    (np.r_[np.zeros(10, int), np.ones(20, int)], 0.25, [0, 1, *range(10, 15)]),
    (np.r_[np.ones(20, int), np.zeros(10, int)], 0.5, [*range(0, 10), *range(20, 25)]),
    (np.tile([0, 1, 1], 10), 0.35, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]),  # 3 of 10, 7 of 20
    (np.r_[np.zeros(10, int), np.ones(20, int)], 0.0, []),
])
def test_discard_fraction_per_replica(replica, fraction, zeroed):
    n = 30
    bias_grid = np.zeros(5)                                      # no bias: uniform weights
    cvs = np.linspace(-1.0, 1.0, n)[:, None]
    w = final_bias_weights(cvs, bias_grid, [(-PI, PI, True)], kT=KT,
                           discard_fraction=fraction, replica=replica)
    expected = np.ones(n)
    expected[list(zeroed)] = 0.0
    np.testing.assert_allclose(w, expected / expected.sum())


@pytest.mark.parametrize("kwargs, match", [
    (dict(kT=0.0), "kT"),
    (dict(kT=KT, discard_fraction=1.0), "discard_fraction"),
    (dict(kT=KT, discard_fraction=-0.1), "discard_fraction"),
    (dict(kT=KT, cvs=np.zeros((4, 2))), "do not match"),
    (dict(kT=KT, cvs=np.full((4, 1), 5.0), limits=[(-1.0, 1.0, False)]), "outside"),
    (dict(kT=KT, replica=np.zeros(3, int)), "frames"),
])
def test_final_bias_weights_validation(kwargs, match):
    args = dict(cvs=np.zeros((4, 1)), bias_grid=np.zeros(5), limits=[(-PI, PI, True)])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        final_bias_weights(args.pop("cvs"), args.pop("bias_grid"), args.pop("limits"), **args)


# ----------------------------------------------------------------------------- free energy

def test_free_energy_profile_uniform_is_flat():
    rng = np.random.default_rng(8)
    centers, F = free_energy_profile(rng.uniform(-PI, PI, 300_000), bins=60, kT=KT)
    assert centers.shape == F.shape == (60,)
    np.testing.assert_allclose(centers[[0, -1]], [-PI + PI / 60, PI - PI / 60])
    assert np.all(np.isfinite(F)) and F.min() == 0.0
    assert F.max() < 0.1 * KT                    # count noise ~2 % per bin


def test_free_energy_profile_weights_and_empty_bins():
    # 4 bins of width pi/2; bin 0 holds weight 1, bin 1 weight 2 (as two frames), rest empty.
    angles = np.array([-2.5, -1.0, -1.2, 2 * PI - 2.4])          # last wraps into bin 0
    weights = np.array([0.5, 1.0, 1.0, 0.5])
    centers, F = free_energy_profile(angles, weights, bins=4, kT=KT)
    np.testing.assert_allclose(centers, [-3 * PI / 4, -PI / 4, PI / 4, 3 * PI / 4])
    np.testing.assert_allclose(F[:2], [KT * np.log(2.0), 0.0])
    assert np.all(np.isnan(F[2:]))


# ----------------------------------------------------------------------------- figure

def test_dihedral_figure_writes_png(tmp_path):
    rng = np.random.default_rng(9)
    n = 500
    runs = [
        dict(label="unbiased", time_ns=np.linspace(0, 10, n), phi=rng.normal(-1.3, 0.3, n),
             psi=rng.normal(2.5, 0.4, n), weights=None),
        dict(label="metad", time_ns=np.linspace(0, 5, n), phi=rng.uniform(-PI, PI, n),
             psi=rng.uniform(-PI, PI, n), weights=rng.random(n)),
    ]
    path = tmp_path / "sub" / "dir" / "dihedrals.png"
    out = dihedral_figure(runs, path, title="Ala2 test")
    assert out == path and path.is_file()
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
