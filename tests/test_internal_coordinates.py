"""Z-matrix internal coordinates (cgbench.internal_coordinates): structure, round trips, mdtraj
agreement, chirality and the volume factors that convert a density over internal coordinates
into one over Cartesian coordinates.

Peptides are built once (``build_peptide``, OpenMM-minimised, no download) and jiggled by
N(0, 0.01²) nm. Jitted functions are module-level so that each (Z-matrix, shape, dtype) compiles
once, with LLVM optimisation off (XLA's CPU compile of the Jacobians is most of this file's
time; the arithmetic is the same). Tests run in float64 (``jax.enable_x64``) unless they say
float32.
"""

import functools
import json

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from cgbench.internal_coordinates import (
    ZMatrix,
    from_internal,
    internal_to_free,
    join_internal,
    log_volume_canonical,
    log_volume_internal,
    split_internal,
    to_internal,
    torsion_mask,
    wrap_torsions,
    zmatrix,
)
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import bead_graph, bond_angles, dihedral_angles
from cgbench.resolutions import (
    cg_mapping,
    free_coordinates,
    from_free_coordinates,
    map_positions,
    slow_fast_split,
    to_canonical_frame,
)

RESOLUTIONS = ("core_beta", "heavy_atom", "all_atom")
#: (sequence, resolution, n_beads) of every Z-matrix whose structure is checked.
STRUCTURES = [("A", r, n) for r, n in (("core_beta", 6), ("heavy_atom", 10), ("all_atom", 22),
                                        ("backbone", 7))] + [
    ("AAA", "core_beta", 14), ("AAA", "heavy_atom", 20), ("AAA", "all_atom", 42),
    ("GPA", "core_beta", 13), ("GPA", "heavy_atom", 21)]
N_FRAMES = 4

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
to_ic = jit(to_internal, static_argnums=1)
from_ic = jit(from_internal, static_argnums=1)
canonical = jit(to_canonical_frame, static_argnums=1)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def built():
    """Sequence → (openmm topology, minimised positions (n_atoms, 3) nm)."""
    return {s: build_peptide(Peptide(s, s)) for s in ("A", "AAA", "GPA")}


@pytest.fixture(scope="module")
def systems(built):
    """(sequence, resolution) → (mapping, Z-matrix, frames (N_FRAMES, n, 3) nm, float64)."""
    rng = np.random.default_rng(0)
    out = {}
    for sequence, resolution, _ in STRUCTURES:
        topology, positions = built[sequence]
        mapping = cg_mapping(topology, resolution)
        beads = map_positions(positions, mapping)
        frames = beads + 0.01 * rng.standard_normal((N_FRAMES, *beads.shape))
        out[sequence, resolution] = (mapping, zmatrix(mapping), frames)
    return out


def random_torsion_frames(system, seed):
    """Frames with every torsion redrawn uniformly (bonds and angles of the jiggled frames)."""
    mapping, zm, frames = system
    ic = np.array(to_ic(frames, zm))
    rng = np.random.default_rng(seed)
    ic[:, zm.torsion_slice] = rng.uniform(-np.pi, np.pi, (len(ic), zm.n_torsions))
    return np.asarray(from_ic(ic, zm))


def on_circle(a, b):
    """Differences of angles, rad, wrapped to (−π, π]."""
    return np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))


# --- structure ------------------------------------------------------------------------------

@pytest.mark.parametrize("sequence, resolution, n_beads", STRUCTURES)
def test_zmatrix_is_a_spanning_tree_starting_with_the_frame(systems, sequence, resolution, n_beads):
    mapping, zm, _ = systems[sequence, resolution]
    assert zm.n_beads == mapping.n_beads == n_beads
    assert sorted(zm.order) == list(range(n_beads))
    assert zm.order[:3] == mapping.frame_beads
    assert (zm.n_bonds, zm.n_angles, zm.n_torsions) == (n_beads - 1, n_beads - 2, n_beads - 3)
    bonded = {frozenset(map(int, b)) for b in bead_graph(mapping).bonds}
    rank = {bead: k for k, bead in enumerate(zm.order)}
    for p, k in zm.bonds:
        assert frozenset((p, k)) in bonded and rank[p] < rank[k]
    assert len({frozenset(b) for b in zm.bonds.tolist()}) == n_beads - 1  # a tree: no bond twice
    for a, p, k in zm.angles:
        assert frozenset((a, p)) in bonded and rank[a] < rank[k]
    for t, a, p, k in zm.torsions:
        assert len({t, a, p, k}) == 4 and max(rank[t], rank[a], rank[p]) < rank[k]
        assert frozenset((t, a)) in bonded or frozenset((t, p)) in bonded


@pytest.mark.parametrize("sequence, resolution", [
    ("A", "core_beta"), ("A", "heavy_atom"), ("A", "all_atom"), ("A", "backbone"),
    ("AAA", "core_beta"), ("AAA", "heavy_atom"), ("AAA", "all_atom")])
def test_phi_and_psi_of_every_residue_are_torsions(systems, sequence, resolution):
    mapping, zm, _ = systems[sequence, resolution]
    torsions = {tuple(q) for q in zm.torsions.tolist()}
    torsions |= {q[::-1] for q in torsions}  # a dihedral equals that of its reversed quadruple
    assert len(mapping.phi_beads) == len(sequence)
    for quadruple in (*mapping.phi_beads, *mapping.psi_beads):
        assert tuple(quadruple) in torsions


def test_ala2_core_beta_zmatrix_by_name(systems):
    mapping, zm, _ = systems["A", "core_beta"]
    names = [f"{mapping.residue_names[i]}:{mapping.bead_names[i]}" for i in zm.order]
    assert names == ["ALA:N", "ALA:CA", "ALA:C", "ACE:C", "ALA:CB", "NME:N"]


def test_json_round_trip_and_validation(systems):
    _, zm, _ = systems["A", "all_atom"]
    loaded = ZMatrix.from_json(json.loads(json.dumps(zm.to_json())))
    assert loaded == zm and hash(loaded) == hash(zm)
    np.testing.assert_array_equal(loaded.torsions, zm.torsions)
    bad = zm.to_json()
    bad["torsion_partners"][0] = bad["order"][-1]  # a partner placed later
    with pytest.raises(ValueError, match="placed before"):
        ZMatrix.from_json(bad)
    with pytest.raises(ValueError, match="lengths"):
        ZMatrix(zm.order, zm.bond_partners, zm.angle_partners, zm.torsion_partners[:-1])


def test_mapping_without_frame_beads_is_refused(built):
    topology, _ = built["A"]
    with pytest.raises(ValueError, match="lacks N, CA, C"):
        zmatrix(slow_fast_split(topology).x)


def test_index_helpers(systems):
    mapping, zm, frames = systems["A", "heavy_atom"]
    ic = to_ic(frames, zm)
    bonds, angles, torsions = split_internal(ic, zm)
    assert (bonds.shape[-1], angles.shape[-1], torsions.shape[-1]) == (9, 8, 7)
    np.testing.assert_array_equal(join_internal(bonds, angles, torsions), ic)
    mask = torsion_mask(zm)
    assert mask.sum() == 7 and mask[zm.torsion_slice].all() and not mask[:zm.torsion_slice.start].any()
    assert zm.n_internal == mapping.n_free == 24


# --- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_internal_coordinates_match_mdtraj(systems, resolution):
    mapping, zm, frames = systems["A", resolution]
    x = np.concatenate([frames[:2], random_torsion_frames(systems["A", resolution], seed=1)[:2]])
    bonds, angles, torsions = (np.asarray(v) for v in split_internal(to_ic(x, zm), zm))
    trajectory = md.Trajectory(x.astype(np.float32), mapping.topology)
    np.testing.assert_allclose(bonds, md.compute_distances(trajectory, zm.bonds), atol=2e-6)
    np.testing.assert_allclose(angles, md.compute_angles(trajectory, zm.angles), atol=2e-4)
    np.testing.assert_allclose(on_circle(torsions, md.compute_dihedrals(trajectory, zm.torsions)),
                               0, atol=2e-4)
    assert np.all((angles > 0) & (angles < np.pi))
    assert np.all((torsions > -np.pi) & (torsions <= np.pi))
    assert np.ptp(torsions) > 5.0  # the redrawn torsions cover the circle
    # The same conventions as the prior's geometry (which regularises norms by 1e-12 nm²).
    np.testing.assert_allclose(angles, bond_angles(x, zm.angles), atol=1e-7)
    np.testing.assert_allclose(on_circle(torsions, dihedral_angles(x, zm.torsions)), 0, atol=1e-9)


@pytest.mark.parametrize("sequence, resolution", [
    *(("A", r) for r in RESOLUTIONS), ("A", "backbone"), ("AAA", "heavy_atom"), ("GPA", "heavy_atom")])
def test_from_internal_of_to_internal_is_the_canonical_frame(systems, sequence, resolution):
    mapping, zm, frames = systems[sequence, resolution]
    rebuilt = np.asarray(from_ic(to_ic(frames, zm), zm))
    expected = np.asarray(canonical(frames, mapping))
    np.testing.assert_allclose(rebuilt, expected, atol=1e-12)
    n, ca, c = mapping.frame_beads
    assert np.all(rebuilt[:, n] == 0) and np.all(rebuilt[:, ca, :2] == 0) and np.all(rebuilt[:, c, 1] == 0)
    assert np.all(rebuilt[:, ca, 2] > 0) and np.all(rebuilt[:, c, 0] > 0)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_float32_round_trip(systems, resolution):
    mapping, zm, frames = systems["A", resolution]
    with jax.enable_x64(False):
        x = jnp.asarray(frames, jnp.float32)
        rebuilt = from_ic(to_ic(x, zm), zm)
        assert rebuilt.dtype == jnp.float32
        np.testing.assert_allclose(rebuilt, canonical(x, mapping), atol=1e-5)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_to_internal_of_from_internal_is_the_identity_up_to_torsion_wrap(systems, resolution):
    _, zm, frames = systems["A", resolution]
    ic = np.array(to_ic(frames, zm))
    rng = np.random.default_rng(2)
    ic[:, zm.torsion_slice] = rng.uniform(-np.pi, np.pi, (N_FRAMES, zm.n_torsions))
    ic[:, zm.angle_slice] = rng.uniform(0.3, np.pi - 0.3, (N_FRAMES, zm.n_angles))
    shifted = ic.copy()
    shifted[:, zm.torsion_slice] += 2 * np.pi * rng.integers(-3, 4, (N_FRAMES, zm.n_torsions))
    recovered = np.asarray(to_ic(from_ic(shifted, zm), zm))
    np.testing.assert_allclose(recovered, ic, atol=1e-12)
    np.testing.assert_allclose(np.asarray(wrap_torsions(shifted[:, zm.torsion_slice])),
                               ic[:, zm.torsion_slice], atol=1e-12)


def test_mirror_image_flips_torsions_and_does_not_round_trip(systems):
    mapping, zm, frames = systems["A", "heavy_atom"]
    mirror = frames * np.array([1.0, 1.0, -1.0])
    ic, ic_mirror = np.asarray(to_ic(frames, zm)), np.asarray(to_ic(mirror, zm))
    np.testing.assert_allclose(ic_mirror[:, :zm.torsion_slice.start], ic[:, :zm.torsion_slice.start],
                               atol=1e-12)
    np.testing.assert_allclose(on_circle(ic_mirror[:, zm.torsion_slice], -ic[:, zm.torsion_slice]),
                               0, atol=1e-12)
    assert np.min(np.abs(ic[:, zm.torsion_slice])) > 0.1  # no torsion is its own mirror image
    rebuilt = np.asarray(from_ic(ic_mirror, zm))
    original = np.asarray(canonical(frames, mapping))
    assert np.max(np.abs(rebuilt - original)) > 0.1
    # It is the original's reflection through the frame's xz-plane (the mirror's canonical frame).
    np.testing.assert_allclose(rebuilt, original * np.array([1.0, -1.0, 1.0]), atol=1e-12)


def test_batches_vmap_jit_and_gradients(systems):
    mapping, zm, frames = systems["A", "core_beta"]
    ic = to_ic(frames, zm)
    batched = from_ic(jnp.stack([ic, ic[::-1]]), zm)
    assert batched.shape == (2, N_FRAMES, mapping.n_beads, 3)
    vmapped = jit(jax.vmap(lambda q: from_internal(q, zm)))(ic)
    np.testing.assert_allclose(batched[0], vmapped, atol=1e-12)
    np.testing.assert_allclose(batched[1], from_ic(ic[::-1], zm), atol=1e-12)
    loss = lambda q: jnp.sum(from_internal(q, zm) ** 2) + log_volume_internal(q, zm)  # noqa: E731
    grad = jit(jax.grad(loss))(ic[0])
    assert grad.shape == (zm.n_internal,) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="entries"):
        from_internal(ic[:, :-1], zm)


# --- volume factors -------------------------------------------------------------------------

def log_det_check(zm, mapping):
    """Jitted ``ic (B, 3n − 6)`` → (∂F/∂ic by jacfwd, internal_to_free's log det, the volume ratio, F)."""
    def check(ic):
        jacobian = jax.vmap(jax.jacfwd(lambda q: internal_to_free(q, zm, mapping)[0]))(ic)
        free, log_det = internal_to_free(ic, zm, mapping)
        ratio = log_volume_internal(ic, zm) - log_volume_canonical(free, mapping)
        return jacobian, log_det, ratio, free
    return jit(check)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_log_det_of_free_coordinates_wrt_internal_is_the_volume_ratio(systems, resolution):
    """log |det ∂F/∂ic| = log_volume_internal(ic) − log_volume_canonical(F(ic)), by jax.jacfwd."""
    mapping, zm, frames = systems["A", resolution]
    x = np.concatenate([frames[:2], random_torsion_frames(systems["A", resolution], seed=3)[:2]])
    jacobian, predicted, ratio, free = log_det_check(zm, mapping)(to_ic(x, zm))
    assert jacobian.shape == (4, mapping.n_free, mapping.n_free)
    sign, log_det = np.linalg.slogdet(np.asarray(jacobian))
    assert np.all(sign != 0)
    np.testing.assert_allclose(predicted, ratio, atol=1e-12)
    np.testing.assert_allclose(log_det, predicted, atol=1e-9)
    np.testing.assert_allclose(free, free_coordinates(canonical(x, mapping), mapping), atol=1e-12)


def euler_zyz(alpha, beta, gamma):
    """Rotation matrix R_z(α) R_y(β) R_z(γ); Haar measure dR = sin β dα dβ dγ."""
    def rz(a):
        c, s = jnp.cos(a), jnp.sin(a)
        return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    c, s = jnp.cos(beta), jnp.sin(beta)
    ry = jnp.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return rz(alpha) @ ry @ rz(gamma)


def cartesian_log_dets(zm, mapping):
    """Jitted (u_ic, u_F) → log |det ∂x/∂u| of x = R X + r₀ flattened (3n), for
    u = (r₀, α, β, γ, ic) with X = from_internal(ic) and u = (r₀, α, β, γ, F) with X from F."""
    def cartesian(canonical_of):
        return lambda u: (canonical_of(u[6:]) @ euler_zyz(*u[3:6]).T + u[:3]).reshape(-1)

    def log_dets(u_ic, u_free):
        jacobians = (jax.jacfwd(cartesian(lambda q: from_internal(q, zm)))(u_ic),
                     jax.jacfwd(cartesian(lambda f: from_free_coordinates(f, mapping)))(u_free))
        return tuple(jnp.linalg.slogdet(j)[1] for j in jacobians)
    return jit(log_dets)


@pytest.mark.parametrize("resolution", ["core_beta", "heavy_atom"])
def test_volume_factors_against_the_full_cartesian_jacobian(systems, resolution):
    """d^{3n}x = d³r₀ sin β dα dβ dγ exp(log_volume) d(coordinates), for ic and for F: each
    volume factor alone, with no constant, from the 3n × 3n Jacobian of x = R X + r₀."""
    mapping, zm, frames = systems["A", resolution]
    ic = to_ic(frames, zm)[0]
    free = free_coordinates(canonical(frames, mapping), mapping)[0]
    rigid = jnp.array([0.3, -0.2, 0.5, 0.4, 1.1, -2.0])  # r₀, then α, β, γ
    log_det_ic, log_det_free = cartesian_log_dets(zm, mapping)(
        jnp.concatenate([rigid, ic]), jnp.concatenate([rigid, free]))
    log_sin_beta = np.log(np.sin(1.1))
    np.testing.assert_allclose(log_det_ic, log_sin_beta + log_volume_internal(ic, zm), atol=1e-9)
    np.testing.assert_allclose(log_det_free, log_sin_beta + log_volume_canonical(free, mapping),
                               atol=1e-9)
