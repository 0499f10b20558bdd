"""PMF models (cgbench.pmf): bead graphs, the fitted prior, SchNet, forces, symmetry, I/O.

Every test runs with JAX's 64-bit mode switched on locally (``jax.enable_x64``) so that finite
differences and invariances can be checked tightly; the float32 test casts explicitly. The ala2
structure is built once (``build_peptide``, no download) and jiggled by N(0, 0.01²) nm.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cgbench.langevin import run_langevin
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import (
    CGPrior,
    PeptidePMF,
    RBFPotential,
    SchNet,
    bead_graph,
    cast,
    dihedral_angles,
    one_torsion_per_bond,
    energy_and_forces,
    fit_prior,
    graph_from_bonds,
    load_pmf,
    save_pmf,
)
from cgbench.resolutions import cg_mapping, dihedrals, map_positions
from cgbench.units import GAS_CONSTANT

KT = GAS_CONSTANT * 300.0
RESOLUTIONS = ("core_beta", "heavy_atom", "all_atom")
#: ala2 (n_beads, bonds, angles, dihedrals, non-bonded pairs), counted by hand from the trees:
#: angles Σ C(degree, 2); dihedrals Σ over bonds (deg j − 1)(deg k − 1); the rest non-bonded.
COUNTS = {"core_beta": (6, 5, 5, 4, 1), "heavy_atom": (10, 9, 11, 10, 15), "all_atom": (22, 21, 36, 41, 133)}


#: Jitted once; models of equal structure (e.g. a loaded copy) reuse the compilation. Batches of
#: peptide frames are always 4 frames, for the same reason (eager vmap/grad would take minutes).
forces_of = eqx.filter_jit(energy_and_forces)
energies_of = eqx.filter_jit(lambda model, x: jax.vmap(model)(x))


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def ala2():
    """Resolution → (mapping, graph, frames (64, n, 3) nm, PeptidePMF with random network weights)."""
    with jax.enable_x64(True):
        topology, positions = build_peptide(Peptide("A", "A"))
        rng = np.random.default_rng(0)
        frames = positions + 0.01 * rng.standard_normal((64, *positions.shape))
        built = {}
        for i, resolution in enumerate(RESOLUTIONS):
            mapping = cg_mapping(topology, resolution)
            graph = bead_graph(mapping)
            x = map_positions(frames, mapping)
            prior = fit_prior(x, graph, kT=KT)
            network = randomised(SchNet(mapping.n_beads, hidden=16, interactions=2, n_rbf=8, key=jax.random.key(i)), i)
            built[resolution] = (mapping, graph, x, PeptidePMF(prior, network, KT))
        return built


def randomised(module, seed, scale=0.3):
    """Every inexact leaf replaced by N(0, scale²) noise (a fresh SchNet's readout is exactly 0)."""
    rng = np.random.default_rng(seed)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    params = jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), params)
    return eqx.combine(params, static)


def random_rigid_motion(x, seed, proper=True):
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=rng).as_matrix()
    if not proper:
        rotation = rotation @ np.diag([1.0, 1.0, -1.0])
    return x @ rotation.T + rng.normal(size=3), rotation


def directional_differences(model, x, directions, h=1e-5):
    """−(E(x + h v) − E(x − h v)) / 2h for each unit direction v, i.e. F(x)·v to O(h²).

    Evaluated as one batch ``[x + h v₁, x − h v₁, x + h v₂, …]`` through the jitted
    :func:`energy_and_forces`, so that with 2 directions it reuses the compiled 4-frame batch.
    """
    points = np.stack([x + sign * h * v for v in directions for sign in (1, -1)])
    energies = np.asarray(forces_of(model, jnp.asarray(points))[0])
    return -(energies[0::2] - energies[1::2]) / (2 * h)


def random_directions(rng, shape, k=2):
    v = rng.standard_normal((k, *shape))
    return v / np.linalg.norm(v.reshape(k, -1), axis=1).reshape(k, *[1] * len(shape))


# --- bead graph --------------------------------------------------------------------------------


def test_core_beta_graph_by_hand(ala2):
    mapping, graph, _, _ = ala2["core_beta"]
    assert mapping.bead_names == ("C", "N", "CA", "C", "CB", "N")  # 0 C(ACE) … 5 N(NME)
    as_set = lambda a: {tuple(r) for r in a.tolist()}  # noqa: E731
    assert as_set(graph.bonds) == {(0, 1), (1, 2), (2, 3), (2, 4), (3, 5)}
    assert as_set(graph.angles) == {(0, 1, 2), (1, 2, 3), (1, 2, 4), (3, 2, 4), (2, 3, 5)}
    assert as_set(graph.dihedrals) == {(0, 1, 2, 3), (0, 1, 2, 4), (1, 2, 3, 5), (4, 2, 3, 5)}
    assert as_set(graph.nonbonded) == {(0, 5)}
    # φ and ψ of the mapping are among the torsions.
    assert {mapping.phi_beads[0], mapping.psi_beads[0]} <= as_set(graph.dihedrals)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_graph_counts_and_partition(ala2, resolution):
    """Counts by hand; in a tree, 1-2, 1-3, 1-4 and non-bonded pairs partition all pairs."""
    _, graph, _, _ = ala2[resolution]
    n = graph.n_beads
    assert (n, len(graph.bonds), len(graph.angles), len(graph.dihedrals), len(graph.nonbonded)) == COUNTS[resolution]
    pairs = ([tuple(sorted(b)) for b in graph.bonds.tolist()] + [tuple(sorted((a[0], a[2]))) for a in graph.angles.tolist()]
             + [tuple(sorted((d[0], d[3]))) for d in graph.dihedrals.tolist()] + [tuple(p) for p in graph.nonbonded.tolist()])
    assert sorted(pairs) == [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert all(a.dtype == np.int32 for a in (graph.bonds, graph.angles, graph.dihedrals, graph.nonbonded))


def test_graph_of_a_ring_excludes_through_both_ways():
    """A 6-ring: every pair is within 3 bonds (no non-bonded pair); 6 angles, 6 torsions."""
    graph = graph_from_bonds(6, [(i, (i + 1) % 6) for i in range(6)])
    assert (len(graph.bonds), len(graph.angles), len(graph.dihedrals), len(graph.nonbonded)) == (6, 6, 6, 0)


# --- forces, symmetry, smoothness ----------------------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_forces_are_minus_gradient(ala2, resolution):
    _, _, x, model = ala2[resolution]
    energy, forces = forces_of(model, jnp.asarray(x[:4]))
    assert energy.shape == (4,) and forces.shape == x[:4].shape
    network_energy, _ = forces_of(model.network, jnp.asarray(x[:4]))
    assert float(jnp.abs(network_energy).min()) > 1e-3  # the network really contributes
    rng = np.random.default_rng(11)
    for frame in range(2):  # 4 random directions in all: a wrong force component shows in any
        directions = random_directions(rng, x[frame].shape)
        expected = directional_differences(model, x[frame], directions)
        got = np.einsum("kij,ij->k", directions, np.asarray(forces[frame]))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(np.asarray(forces[frame])).max())


def test_rbf_forces_are_minus_gradient():
    model = RBFPotential(low=-1.5, high=1.0, centres=50, width=16, depth=2, key=jax.random.key(3))
    x = jnp.linspace(-1.4, 0.9, 7)[:, None]
    energy, forces = forces_of(model, x)
    assert energy.shape == (7,) and forces.shape == (7, 1)
    h = 1e-5
    expected = -(np.asarray(forces_of(model, x + h)[0]) - np.asarray(forces_of(model, x - h)[0])) / (2 * h)
    np.testing.assert_allclose(np.asarray(forces[:, 0]), expected, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("part", ["network", "whole"])
def test_rotation_translation_invariance(ala2, resolution, part):
    """SchNet alone and prior + kT·SchNet (so the prior too: the difference of two invariants)."""
    _, _, x, model = ala2[resolution]
    model = {"network": model.network, "whole": model}[part]
    x = np.asarray(x[:2])
    moved, rotation = random_rigid_motion(x, seed=7)
    energy, forces = forces_of(model, jnp.asarray(np.concatenate([x, moved])))
    energy, energy_moved, forces, forces_moved = energy[:2], energy[2:], forces[:2], forces[2:]
    np.testing.assert_allclose(np.asarray(energy_moved), np.asarray(energy), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(np.asarray(forces_moved), np.asarray(forces) @ rotation.T,
                               atol=1e-8 * float(jnp.abs(forces).max()))


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_reflection_keeps_network_but_not_prior_chirality(ala2, resolution):
    _, _, x, model = ala2[resolution]
    mirrored, _ = random_rigid_motion(np.asarray(x[:2]), seed=8, proper=False)
    both = jnp.asarray(np.concatenate([x[:2], mirrored]))
    # (Only whole-model and network compilations, shared with the other tests: prior = whole − kT·network.)
    network = np.asarray(forces_of(model.network, both)[0])
    np.testing.assert_allclose(network[2:], network[:2], rtol=1e-10)
    prior = np.asarray(forces_of(model, both)[0]) - KT * network
    assert np.all(np.abs(prior[2:] - prior[:2]) > 0.1)  # kJ/mol
    # Only the dihedral term changes: the others see distances and unsigned angles.
    flat = eqx.tree_at(lambda m: (m.prior.dihedral_cos, m.prior.dihedral_sin), model,
                       (jnp.zeros_like(model.prior.dihedral_cos), jnp.zeros_like(model.prior.dihedral_sin)))
    flat = np.asarray(forces_of(flat, both)[0])
    np.testing.assert_allclose(flat[2:], flat[:2], rtol=1e-10)


@pytest.mark.parametrize("resolution, n_torsions", [("core_beta", 2), ("heavy_atom", 4), ("all_atom", 7)])
def test_prior_inverts_one_torsion_per_bond(ala2, resolution, n_torsions):
    mapping, graph, x, _ = ala2[resolution]
    torsions = one_torsion_per_bond(graph.dihedrals)
    central = [tuple(t[1:3]) for t in torsions.tolist()]
    assert len(torsions) == n_torsions and len(set(central)) == n_torsions
    assert set(central) == {tuple(d[1:3]) for d in graph.dihedrals.tolist()}
    if resolution == "core_beta":                                  # the backbone's are φ and ψ
        assert {tuple(t) for t in torsions.tolist()} == {mapping.phi_beads[0], mapping.psi_beads[0]}
    prior = fit_prior(x, graph, kT=KT)
    assert prior.dihedrals.shape == (n_torsions, 4)


def test_dihedral_sign_matches_mdtraj_convention(ala2):
    _, graph, x, _ = ala2["heavy_atom"]
    np.testing.assert_allclose(np.asarray(dihedral_angles(jnp.asarray(x[:5]), graph.dihedrals)),
                               dihedrals(x[:5], graph.dihedrals), atol=1e-9)


def test_energy_smooth_at_cutoff():
    """Two beads: E(d) and F(d) continuous at d = cutoff (cosine envelope; a hard cut would jump)."""
    cutoff = 0.5
    net = randomised(SchNet(2, hidden=16, interactions=2, n_rbf=8, cutoff=cutoff, key=jax.random.key(0)), 5, scale=1.0)
    pair = lambda d: jnp.stack([jnp.zeros((len(d), 3)), jnp.stack([d, 0 * d, 0 * d], -1)], axis=1)  # noqa: E731
    energy = lambda d: forces_of(net, pair(jnp.asarray(d)))[0]  # noqa: E731
    far = energy([cutoff - 0.2, cutoff + 0.1])
    scale = abs(float(far[0] - far[1]))
    assert scale > 1e-2
    for delta in (1e-3, 1e-4):  # the jump across the cutoff vanishes like delta² (zero slope there)
        near = energy([cutoff - delta, cutoff + delta])
        assert abs(float(near[0] - near[1])) < 1e-2 * scale * (delta / 1e-2) ** 2
    forces = forces_of(net, pair(jnp.array([cutoff - 1e-4, cutoff - 0.2])))[1]
    assert float(jnp.abs(forces[0]).max()) < 1e-2 * float(jnp.abs(forces[1]).max())
    # Beyond the cutoff the pair does not interact at all.
    beyond = energy([cutoff + 0.01, cutoff + 0.3])
    assert float(beyond[0]) == float(beyond[1])


def test_fresh_peptide_pmf_is_the_prior(ala2):
    _, graph, x, model = ala2["heavy_atom"]
    fresh = PeptidePMF(model.prior, SchNet(graph.n_beads, hidden=16, interactions=2, n_rbf=8, key=jax.random.key(1)), KT)
    zero = eqx.tree_at(lambda m: m.network, model, randomised(model.network, 0, scale=0.0))  # network ≡ 0
    x = jnp.asarray(x[:4])
    np.testing.assert_array_equal(np.asarray(forces_of(fresh, x)[0]), np.asarray(forces_of(zero, x)[0]))
    np.testing.assert_allclose(np.asarray(forces_of(zero, x)[0]), np.asarray(jax.jit(jax.vmap(model.prior))(x)),
                               rtol=1e-12)


def test_only_the_network_is_trained(ala2):
    _, _, x, model = ala2["core_beta"]
    params = eqx.filter(model, eqx.is_inexact_array)
    assert not any(np.issubdtype(np.asarray(leaf).dtype, np.integer) for leaf in jax.tree.leaves(params))
    # First-order (energy) loss: cheaper to compile than a force loss; stop_gradient acts alike.
    grads = eqx.filter_jit(eqx.filter_grad(lambda m, x: jnp.sum(jax.vmap(m)(x) ** 2)))(model, jnp.asarray(x[:4]))
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads.prior))
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads.network))


# --- Boltzmann inversion -------------------------------------------------------------------------


def sample_dihedrals(rng, n, a, b, kT, low=-np.pi, high=np.pi):
    """``n`` samples of p(φ) ∝ exp(−E(φ)/kT) on [low, high), E = Σ aₙ cos nφ + bₙ sin nφ (inverse CDF)."""
    grid = np.linspace(low, high, 20001)
    k = np.arange(1, len(a) + 1)
    energy = np.cos(grid[:, None] * k) @ a + np.sin(grid[:, None] * k) @ b
    cdf = np.cumsum(np.exp(-(energy - energy.min()) / kT))
    return np.interp(rng.uniform(size=n) * cdf[-1], cdf, grid)


def chain(rng, n, r0, sigma_r, theta0, sigma_theta, phi):
    """``(n, 4, 3)`` 4-bead chains (NeRF) with Gaussian bonds and angles and given dihedrals ``(n,)``."""
    r = r0 + sigma_r * rng.standard_normal((n, 3))
    theta = theta0 + sigma_theta * rng.standard_normal((n, 2))
    x = np.zeros((n, 4, 3))
    x[:, 1, 0] = r[:, 0]
    x[:, 2] = x[:, 1] + r[:, 1, None] * np.stack([-np.cos(theta[:, 0]), np.sin(theta[:, 0]), 0 * phi], -1)
    bc = x[:, 2] - x[:, 1]
    bc /= np.linalg.norm(bc, axis=-1, keepdims=True)
    normal = np.cross(x[:, 1] - x[:, 0], bc)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    m = np.stack([bc, np.cross(normal, bc), normal], axis=-1)
    local = np.stack([-np.cos(theta[:, 1]), np.sin(theta[:, 1]) * np.cos(phi), np.sin(theta[:, 1]) * np.sin(phi)], -1)
    x[:, 3] = x[:, 2] + r[:, 2, None] * np.einsum("nij,nj->ni", m, local)
    return x


CHAIN = graph_from_bonds(4, [(0, 1), (1, 2), (2, 3)])
TRUE_A, TRUE_B = np.array([1.0, -0.6, 0.3]) * KT, np.array([0.5, 0.0, -0.4]) * KT


@pytest.mark.parametrize("weighted", [False, True])
def test_fit_prior_recovers_harmonic_and_fourier_terms(weighted):
    rng = np.random.default_rng(1)
    r0, k_bond, theta0, k_angle = 0.15, 2.0e4, 1.9, 300.0
    n = 40000
    phi = sample_dihedrals(rng, n, TRUE_A, TRUE_B, KT)
    x = chain(rng, n, r0, np.sqrt(KT / k_bond), theta0, np.sqrt(KT / k_angle), phi)
    weights = None
    if weighted:  # duplicate every frame with weight 1 and add junk frames of weight 0
        junk = x[:1000] * 3.0
        x, weights = np.concatenate([x, junk]), np.concatenate([np.ones(n), np.zeros(1000)])
    prior = fit_prior(x, CHAIN, kT=KT, weights=weights)
    np.testing.assert_allclose(np.asarray(prior.bond_r0), r0, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(prior.bond_k), k_bond, rtol=0.05)
    np.testing.assert_allclose(np.asarray(prior.angle_theta0), theta0, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(prior.angle_k), k_angle, rtol=0.05)
    np.testing.assert_allclose(np.asarray(prior.dihedral_cos[0]), TRUE_A, atol=0.1 * KT)
    np.testing.assert_allclose(np.asarray(prior.dihedral_sin[0]), TRUE_B, atol=0.1 * KT)


def test_fit_dihedral_with_half_the_range_empty():
    """Samples only in [0, π): finite, bounded coefficients that still match the profile there."""
    rng = np.random.default_rng(2)
    phi = sample_dihedrals(rng, 20000, TRUE_A, TRUE_B, KT, low=0.0, high=np.pi)
    x = chain(rng, len(phi), 0.15, 0.005, 1.9, 0.05, phi)
    prior = fit_prior(x, CHAIN, kT=KT)
    a, b = np.asarray(prior.dihedral_cos[0]), np.asarray(prior.dihedral_sin[0])
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert np.abs(np.concatenate([a, b])).max() < 5 * KT
    grid = np.linspace(0.2, np.pi - 0.2, 50)
    k = np.arange(1, 4)
    fitted = np.cos(grid[:, None] * k) @ a + np.sin(grid[:, None] * k) @ b
    true = np.cos(grid[:, None] * k) @ TRUE_A + np.sin(grid[:, None] * k) @ TRUE_B
    np.testing.assert_allclose(fitted - fitted.mean(), true - true.mean(), atol=0.3 * KT)


def test_fit_dihedral_with_a_handful_of_samples_stays_bounded():
    """Five frames (one or two populated bins): the ridge keeps the profile nearly flat."""
    rng = np.random.default_rng(3)
    x = chain(rng, 5, 0.15, 0.005, 1.9, 0.05, np.full(5, 1.0) + 0.01 * rng.standard_normal(5))
    prior = fit_prior(x, CHAIN, kT=KT)
    coefficients = np.concatenate([np.asarray(prior.dihedral_cos), np.asarray(prior.dihedral_sin)], axis=1)
    assert np.all(np.isfinite(coefficients)) and np.abs(coefficients).max() < 1.0 * KT
    assert np.all(np.isfinite(np.asarray(prior.bond_k))) and np.all(np.isfinite(np.asarray(prior.angle_k)))


def test_repulsion_sigma_and_no_collapse():
    rng = np.random.default_rng(4)
    graph = graph_from_bonds(5, [(0, 1), (1, 2), (2, 3), (3, 4)])
    x = np.concatenate([chain(rng, 3000, 0.15, 0.005, 1.9, 0.1, rng.uniform(-np.pi, np.pi, 3000)),
                        np.zeros((3000, 1, 3))], axis=1)
    x[:, 4] = x[:, 3] + (x[:, 3] - x[:, 2])  # a fifth bead continuing the chain: pair (0, 4) non-bonded
    prior = fit_prior(x, graph, kT=KT)
    assert graph.nonbonded.tolist() == [[0, 4]]
    distance = np.linalg.norm(x[:, 4] - x[:, 0], axis=-1)
    expected = 0.9 * np.sort(distance)[int(np.ceil(1e-3 * len(distance))) - 1]
    np.testing.assert_allclose(float(prior.pair_sigma[0]), expected, rtol=1e-9)  # sqrt(r² + 1e-12)
    # Pull bead 4 onto bead 0: the repulsion diverges (no collapse), and is kT at r = σ.
    close = x[0].copy()
    close[4] = close[0] + np.array([float(prior.pair_sigma[0]), 0.0, 0.0])
    np.testing.assert_allclose(float(prior.energy_terms(close)["repulsion"]), KT, rtol=1e-9)
    close[4] = close[0] + np.array([0.3 * float(prior.pair_sigma[0]), 0.0, 0.0])
    assert float(prior.energy_terms(close)["repulsion"]) > 1000 * KT


# --- serialisation, jit, vmap, float32, Langevin -------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_save_load_round_trip(ala2, tmp_path, resolution):
    _, _, x, model = ala2[resolution]
    hyper = {"lr": 1e-3, "note": "ala2", "nested": {"a": [1, 2]}}
    path = tmp_path / "pmf.eqx"
    save_pmf(path, model, hyper)
    loaded, hyper_loaded = load_pmf(path)
    assert hyper_loaded == hyper
    assert isinstance(loaded, PeptidePMF) and isinstance(loaded.prior, CGPrior)
    x = jnp.asarray(x[:4])
    np.testing.assert_array_equal(np.asarray(forces_of(loaded, x)[0]), np.asarray(forces_of(model, x)[0]))
    for name in ("bonds", "angles", "dihedrals", "pairs"):
        np.testing.assert_array_equal(getattr(loaded.prior, name), getattr(model.prior, name))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["kind"] == "peptide" and meta["n_beads"] == model.prior.n_beads and meta["kT"] == KT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pmf.eqx", "pmf.json"]  # no temp files left


def test_save_load_rbf_float32(tmp_path):
    model = cast(RBFPotential(low=-1.5, high=1.0, key=jax.random.key(0)), jnp.float32)
    path = tmp_path / "mb.eqx"
    save_pmf(path, model, {"centres": 100})
    loaded, hyper = load_pmf(path)
    x = jnp.linspace(-1.5, 1.0, 9, dtype=jnp.float32)[:, None]
    assert hyper == {"centres": 100} and loaded.layers[0].weight.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(energies_of(loaded, x)), np.asarray(energies_of(model, x)))
    with pytest.raises(TypeError):
        save_pmf(tmp_path / "bad.eqx", model, {"not json": object()})
    assert not (tmp_path / "bad.eqx").exists()


def test_jit_vmap_and_float32(ala2):
    _, _, x, model = ala2["core_beta"]
    x = jnp.asarray(x[:4])
    energy, forces = forces_of(model, x)  # vmapped, jitted
    order = np.array([2, 0, 3, 1])  # vmap keeps frames apart: permuting the batch permutes the results
    energy_p, forces_p = forces_of(model, x[order])
    np.testing.assert_allclose(np.asarray(energy_p), np.asarray(energy)[order], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(forces_p), np.asarray(forces)[order], rtol=1e-9, atol=1e-9)
    model32 = cast(model, jnp.float32)
    assert model32.prior.bonds.dtype == np.int32
    energy32, forces32 = forces_of(model32, x.astype(jnp.float32))
    assert energy32.dtype == jnp.float32 and forces32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(energy32), np.asarray(energy), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.asarray(forces32), np.asarray(forces), atol=2e-3 * float(jnp.abs(forces).max()))


def test_works_as_langevin_forces_fn(ala2):
    mapping, _, x, model = ala2["core_beta"]
    masses = np.full(mapping.n_beads, 12.0)
    result = run_langevin(eqx.Partial(energy_and_forces, model), jnp.asarray(x[:4]), steps=20, report_interval=10,
                          dt=0.001, friction=1.0, temperature=300.0, masses=masses, key=jax.random.key(0))
    assert result["positions"].shape == (2, 4, mapping.n_beads, 3)
    assert np.all(np.isfinite(np.asarray(result["potential_energy"])))
    energy, forces = forces_of(model, result["state"].positions)
    np.testing.assert_allclose(np.asarray(result["state"].forces), np.asarray(forces), rtol=1e-9, atol=1e-9)
