"""CG-BG flow proposals (cgbench.cgbg): features, change of variables, reweighting to an exact target.

The physics test: a soft chain whose energy depends only on the Z-matrix bonds and angles of ala2's
core_beta beads has *exact* marginals in closed form — each bond length ∝ b² exp(−k(b−b₀)²/2),
each angle ∝ sin θ exp(−k(θ−θ₀)²/2), torsions uniform — because the Cartesian volume element is
Π b² sin θ in those coordinates. Flow proposals in either representation, reweighted by
log w = −U − log q, must reproduce the exact mean bond lengths and angles; without the volume
factor in log q they must not.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.integrate import trapezoid

from cgbench import cgbg
from cgbench import internal_coordinates as ic
from cgbench.cgbg_stage import train_flow_on_features
from cgbench.peptides import Peptide, build_peptide
from cgbench.resolutions import cg_mapping, map_positions, to_canonical_frame
from cgbench.reweighting import ess_fraction, importance_log_weights, normalised_weights
from cgbench.training import TrainingSettings

BOND = (0.15, 0.03)      # r0 (nm), sd of the Gaussian factor (nm): <b> − r0 ≈ 2 sd²/r0 = 0.012 nm
ANGLE = (1.9, 0.3)       # θ0 (rad), sd (rad)
SMALL_FLOW = {"layers": 4, "mlp_depth": 1, "mlp_width": 32, "knots": 8}


@pytest.fixture(scope="module")
def ala2():
    topology, positions = build_peptide(Peptide("A", "A"))
    return topology, positions


@pytest.fixture(scope="module")
def core_beta(ala2):
    topology, positions = ala2
    mapping = cg_mapping(topology, "core_beta")
    rng = np.random.default_rng(0)
    frames = positions + 0.01 * rng.standard_normal((200, *positions.shape))
    return mapping, np.asarray(map_positions(frames, mapping), np.float32)


class SoftChain(eqx.Module):
    """U/kT = Σ (b − r0)²/2sd² over the Z-matrix bonds + Σ (θ − θ0)²/2sd² over its angles."""

    zmatrix: ic.ZMatrix = eqx.field(static=True)

    def __call__(self, positions):
        b, a, _ = ic.split_internal(ic.to_internal(positions, self.zmatrix), self.zmatrix)
        return jnp.sum((b - BOND[0]) ** 2) / (2 * BOND[1] ** 2) + jnp.sum((a - ANGLE[0]) ** 2) / (2 * ANGLE[1] ** 2)


def _grid_sampler(log_density, low, high, rng, n):
    x = np.linspace(low, high, 20001)
    p = np.exp(log_density(x) - log_density(x).max())
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.interp(rng.uniform(size=n), cdf, x), trapezoid(x * p, x) / trapezoid(p, x)


def _log_bond(b):
    return 2 * np.log(np.maximum(b, 1e-12)) - (b - BOND[0]) ** 2 / (2 * BOND[1] ** 2)


def _log_angle(a):
    return np.log(np.maximum(np.sin(a), 1e-300)) - (a - ANGLE[0]) ** 2 / (2 * ANGLE[1] ** 2)


@pytest.fixture(scope="module")
def soft_chain(core_beta):
    """Exact samples of the soft chain (canonical frame) and its exact mean bond length and angle."""
    mapping, _ = core_beta
    zm = ic.zmatrix(mapping)
    rng = np.random.default_rng(1)
    n = 20000
    bonds = np.stack([_grid_sampler(_log_bond, 1e-4, 0.4, rng, n)[0] for _ in range(zm.n_bonds)], -1)
    angles = np.stack([_grid_sampler(_log_angle, 1e-4, np.pi - 1e-4, rng, n)[0] for _ in range(zm.n_angles)], -1)
    torsions = rng.uniform(-np.pi, np.pi, (n, zm.n_torsions))
    y = ic.join_internal(jnp.asarray(bonds), jnp.asarray(angles), jnp.asarray(torsions))
    positions = np.asarray(ic.from_internal(y, zm), np.float32)
    exact_bond = _grid_sampler(_log_bond, 1e-4, 0.4, rng, 1)[1]
    exact_angle = _grid_sampler(_log_angle, 1e-4, np.pi - 1e-4, rng, 1)[1]
    return mapping, zm, positions, exact_bond, exact_angle


@pytest.mark.parametrize("representation", cgbg.REPRESENTATIONS)
@pytest.mark.parametrize("resolution", ["core_beta", "heavy_atom"])
def test_features_round_trip_to_the_canonical_frame(ala2, representation, resolution):
    topology, positions = ala2
    mapping = cg_mapping(topology, resolution)
    rng = np.random.default_rng(0)
    x = np.asarray(map_positions(positions + 0.01 * rng.standard_normal((50, *positions.shape)), mapping), np.float32)
    coords = cgbg.fit_coordinates(x, mapping, representation, interval=5.0)
    u = cgbg.features(coords, x)
    assert u.shape == (50, 3 * mapping.n_beads - 6) and np.abs(u).max() < 5.0
    back = jax.vmap(lambda v: coords.positions(coords.from_features(v)[0]))(jnp.asarray(u))
    np.testing.assert_allclose(back, to_canonical_frame(x, mapping), atol=2e-5)


@pytest.mark.parametrize("representation, data, kinds", [
    ("cartesian", "core_beta", {cgbg.LINEAR}),
    ("internal", "core_beta", {cgbg.LINEAR, cgbg.ARC}),          # jiggled: every torsion narrow
    ("internal", "soft_chain", {cgbg.LINEAR, cgbg.CIRCLE}),      # uniform torsions
])
def test_feature_log_jacobian_matches_autodiff(request, representation, data, kinds):
    """log|du/dy| returned by to_features and from_features equals log|det ∂u/∂y| by jacfwd (float64)."""
    mapping, x = request.getfixturevalue(data)[:2] if data == "core_beta" else \
        (request.getfixturevalue(data)[0], request.getfixturevalue(data)[2][:200])
    with jax.enable_x64(True):
        coords = cgbg.fit_coordinates(np.asarray(x, np.float64), mapping, representation, interval=5.0)
        assert set(coords.kind) == kinds
        y = jax.jit(jax.vmap(coords.coordinates))(jnp.asarray(x[:5], jnp.float64))
        u, log_du = jax.jit(jax.vmap(coords.to_features))(y)
        jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: coords.to_features(v)[0])))(y)
        np.testing.assert_allclose(np.asarray(log_du), np.linalg.slogdet(np.asarray(jac))[1], atol=1e-9)
        y_back, log_du_back = jax.jit(jax.vmap(coords.from_features))(u)
        np.testing.assert_allclose(np.asarray(y_back), np.asarray(y), atol=1e-9)
        np.testing.assert_allclose(np.asarray(log_du_back), np.asarray(log_du), atol=1e-9)


def test_identity_flow_is_uniform_on_a_circular_torsion(soft_chain):
    """A circular torsion's feature is the base's inverse CDF of the angle: the base density in u
    maps to exactly 1/2π in the angle."""
    mapping, _, x, _, _ = soft_chain
    coords = cgbg.fit_coordinates(x, mapping, "internal", interval=5.0)
    k = int(np.flatnonzero(np.asarray(coords.kind) == cgbg.CIRCLE)[0])
    from jax.scipy.stats import truncnorm

    y0 = jax.jit(lambda p: coords.coordinates(p))(jnp.asarray(x[0]))

    def feature(angle):
        return coords.to_features(y0.at[k].set(angle))[0][k]

    angles = jnp.linspace(-3.1, 3.1, 13)
    log_q = jax.jit(lambda a: truncnorm.logpdf(jax.vmap(feature)(a), -5.0, 5.0)
                    + jnp.log(jax.vmap(jax.grad(feature))(a)))(angles)
    np.testing.assert_allclose(np.asarray(log_q), -np.log(2 * np.pi), atol=2e-3)


@pytest.mark.parametrize("representation", cgbg.REPRESENTATIONS)
def test_log_proposal_of_samples_matches_sampling(core_beta, representation):
    """log q of a (perturbed) flow's samples evaluated in the data direction — canonical frame or
    Z-matrix, features, inverse flow — equals the one of the sampling direction (float64: in
    float32 a perturbed spline's inverse is too ill-conditioned near the box edge to compare)."""
    from conftest import perturb

    mapping, x = core_beta
    with jax.enable_x64(True):
        coords = cgbg.fit_coordinates(np.asarray(x, np.float64), mapping, representation, interval=5.0)
        flow = cgbg.new_flow(coords, {**SMALL_FLOW, "layers": 2}, key=jr.key(0))
        flow = eqx.tree_at(lambda f: f.flow, flow, perturb(flow.flow, 0.1, 3))
        positions, log_q = flow.sample_and_log_proposal(jr.key(1), 500)
        again = jax.vmap(flow.log_proposal)(positions)
        np.testing.assert_allclose(np.asarray(again), np.asarray(log_q), atol=1e-6)


def _trained_proposal(mapping, positions, representation):
    coords = cgbg.fit_coordinates(positions, mapping, representation, interval=5.0)
    flow = cgbg.new_flow(coords, SMALL_FLOW, key=jr.key(0))
    u = cgbg.features(coords, positions)
    settings = TrainingSettings(epochs=4, batch_size=256, learning_rate=3e-3, patience=10)
    result = train_flow_on_features(flow.flow, u, np.repeat(np.arange(4), len(u) // 4), settings=settings,
                                    key=jr.key(1), workdir=_tmp(representation), fingerprint={}, progress=False)
    return cgbg.CGFlow(coords, result["model"])


def _tmp(name):
    import tempfile

    return tempfile.mkdtemp(prefix=f"cgbg_{name}_")


@pytest.mark.parametrize("representation", cgbg.REPRESENTATIONS)
def test_reweighting_recovers_the_exact_marginals(soft_chain, representation):
    mapping, zm, positions, exact_bond, exact_angle = soft_chain
    flow = _trained_proposal(mapping, positions, representation)
    x, log_q = cgbg.sample_proposals(flow, 20000, key=jr.key(2), chunk=10000)
    energy = cgbg.pmf_energies(SoftChain(zm), x)
    log_w = importance_log_weights(energy, log_q)
    ess = ess_fraction(log_w, drop_quantile=None)
    assert ess > 0.2, f"ESS {ess:.3f}"
    b, a, _ = (np.asarray(v) for v in ic.split_internal(ic.to_internal(jnp.asarray(x, jnp.float64), zm), zm))

    def check(log_w, expect_ok):
        w = normalised_weights(log_w, drop_quantile=None)
        n_eff = ess_fraction(log_w, drop_quantile=None) * len(log_w)
        for values, exact in ((b, exact_bond), (a, exact_angle)):
            mean = w @ values
            se = values.std(0) / np.sqrt(n_eff)
            z = np.abs(mean - exact) / se
            if expect_ok:
                assert z.max() < 5, f"{representation}: z {np.round(z, 1)}"
            else:
                return z.max()

    check(log_w, True)
    # Negative control: leave the Cartesian volume factor out of log q.
    y = jax.vmap(flow.coordinates.coordinates)(jnp.asarray(x))
    wrong = log_w - np.asarray(jax.vmap(flow.coordinates.log_volume)(y), np.float64)
    assert check(wrong, False) > 10


def test_internal_proposals_of_l_data_have_no_d_form(core_beta):
    """The CB torsion of L-alanine data is narrow: standardised on its arc, a (perturbed) flow
    cannot reach the mirror form; the Cartesian flow has no such guarantee but stays near the data."""
    from conftest import perturb

    mapping, x = core_beta
    coords = cgbg.fit_coordinates(x, mapping, "internal", interval=5.0)
    flow = cgbg.new_flow(coords, SMALL_FLOW, key=jr.key(0))
    flow = eqx.tree_at(lambda f: f.flow, flow, perturb(flow.flow, 0.3, 5))
    positions, _ = cgbg.sample_proposals(flow, 5000, key=jr.key(1), chunk=5000)
    assert not cgbg.d_form(positions, mapping, cgbg.chirality_signs(x, mapping)).any()


def test_d_form_flags_mirror_images(core_beta):
    mapping, x = core_beta
    signs = cgbg.chirality_signs(x, mapping)
    assert len(signs) == 1 and abs(signs[0]) == 1
    assert not cgbg.d_form(x, mapping, signs).any()
    mirror = x * np.array([1.0, 1.0, -1.0])
    assert cgbg.d_form(mirror, mapping, signs).all()


def test_fit_coordinates_rejects_an_unknown_representation(core_beta):
    mapping, x = core_beta
    with pytest.raises(ValueError, match="representation"):
        cgbg.fit_coordinates(x, mapping, "spherical", interval=5.0)


def test_seam_sits_in_the_emptiest_bin():
    rng = np.random.default_rng(0)
    angles = np.concatenate([rng.normal(-2.5, 0.2, 5000), rng.normal(1.0, 0.3, 5000)])
    angles = (angles + np.pi) % (2 * np.pi) - np.pi
    c = cgbg._seam(angles, np.ones(len(angles)))
    # The cut (c ± π) lies in a gap of the data: far from both modes.
    cut = (c + 2 * np.pi) % (2 * np.pi) - np.pi
    assert min(abs(np.angle(np.exp(1j * (cut - m)))) for m in (-2.5, 1.0)) > 1.0
