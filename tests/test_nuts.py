"""NUTS samplers: the general multi-chain core (cgbench.nuts) and the all-atom peptide reference
(cgbench.peptide_nuts).

The peptide checks run one short seeded NUTS run of ala2 in OBC2 at 300 K (module fixture, ~40 s
on 2 cores, most of it compilation) and test what must hold for *any* correct sample of
p(x) ∝ exp(−U/kT), kT = R·T:

- the returned energies are those of OpenMM's Reference platform at the stored positions;
- configurational temperature: ⟨|∇U|²⟩ = kT ⟨∇²U⟩ (integration by parts; exact also with free
  translations, since ∇U has no component along them, and with the centroid tether, whose gradient
  is along them), so T_conf = ⟨|∇U|²⟩ / (R ⟨∇²U⟩) must be T. Measured for this run: 299.2 K,
  batch-means standard error 4.2 K (1.4 %); tolerance 5 % ≈ 3.5 standard errors;
- virial: ⟨x·∇U⟩ = (3N − 3)·kT for N atoms (the scaling field x − c has divergence 3N − 3 on the
  centroid-fixed space; the rotations are compact and still count, so it is not 3N − 6). The
  estimator is noisy (per state ≈ 210 kT, dominated by k·r₀·(r − r₀) of stiff X–H bonds):
  measured 70.8 kT against 63, batch-means standard error ≈ 9 kT, so the tolerance is 4
  standard errors, not 10 %.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from cgbench.nuts import run_nuts_chains
from cgbench.peptide_nuts import load_peptide_nuts, run_peptide_nuts, write_peptide_nuts
from cgbench.units import GAS_CONSTANT

TEMPERATURE = 300.0
#: Recorded states per batch for batch-means standard errors (≥ the autocorrelation time here).
BATCH = 30


def test_run_nuts_chains_correlated_gaussian():
    mean = np.array([1.0, -2.0])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    precision = jnp.asarray(np.linalg.inv(cov))

    def logdensity(x):
        d = x - mean
        return -0.5 * d @ precision @ d

    chains, samples, thin = 4, 1000, 2
    start = jnp.zeros((chains, 2)) + jnp.arange(chains)[:, None]
    result = run_nuts_chains(logdensity, start, warmup=300, samples=samples, thin=thin, key=jr.key(3))
    x = result["positions"]
    assert x.shape == (chains, samples, 2) and isinstance(x, np.ndarray)
    assert result["chains"] == chains and result["nuts_steps"] == chains * samples * thin
    assert result["divergences"] == 0 and 0.5 < result["acceptance"] <= 1.0
    assert result["energy_evaluations"] >= result["nuts_steps"] and result["warmup_energy_evaluations"] > 0
    # Batch-means standard errors (batches of 50 states within each chain): NUTS states are
    # correlated here (correlation 0.85 against a diagonal mass matrix).
    x = x.astype(np.float64)
    products = np.einsum("csi,csj->csij", x - mean, x - mean).reshape(chains, samples, 4)
    batch_mean = x.reshape(chains, -1, 50, 2).mean(axis=2).reshape(-1, 2)
    batch_cov = products.reshape(chains, -1, 50, 4).mean(axis=2).reshape(-1, 4)
    se_mean = batch_mean.std(axis=0, ddof=1) / np.sqrt(len(batch_mean))
    se_cov = batch_cov.std(axis=0, ddof=1) / np.sqrt(len(batch_cov))
    np.testing.assert_array_less(np.abs(x.reshape(-1, 2).mean(0) - mean), 4 * se_mean)
    np.testing.assert_array_less(np.abs(products.reshape(-1, 4).mean(0) - cov.ravel()), 4 * se_cov)
    # and the errors are small in absolute terms (the standard errors are not inflated)
    assert se_mean.max() < 0.05 and se_cov.max() < 0.05, (se_mean, se_cov)


def test_run_nuts_chains_rejects_bad_thin():
    with pytest.raises(ValueError, match="thin"):
        run_nuts_chains(lambda x: -0.5 * x @ x, jnp.zeros((1, 2)), warmup=2, samples=2, thin=0, key=jr.key(0))


@pytest.fixture(scope="module")
def ala2_obc2():
    from cgbench.peptides import Peptide, build_peptide
    from cgbench.systems import create_system

    peptide = Peptide(name="ala2", sequence="A", constraints="none")
    topology, positions = build_peptide(peptide)
    return create_system(topology, "obc2", peptide), positions


@pytest.fixture(scope="module")
def ala2_nuts(ala2_obc2):
    system, positions = ala2_obc2
    # Depth 6 (≤ 63 integration steps per NUTS step) keeps the test short; correctness does not
    # depend on the tree depth.
    return run_peptide_nuts(system, positions, temperature=TEMPERATURE, chains=2, warmup=150,
                            samples=300, thin=2, key=jr.key(0), max_num_doublings=6)


def _batch_se(values):
    batches = values[: len(values) // BATCH * BATCH].reshape(-1, BATCH).mean(axis=1)
    return batches.std(ddof=1) / np.sqrt(len(batches))


def test_peptide_nuts_shapes_and_centring(ala2_obc2, ala2_nuts):
    system, _ = ala2_obc2
    n_atoms = system.getNumParticles()
    r = ala2_nuts
    assert r["positions"].shape == (600, n_atoms, 3) and r["positions"].dtype == np.float32
    assert r["potential_energy"].shape == (600,) and np.all(np.isfinite(r["potential_energy"]))
    np.testing.assert_array_equal(r["chain"], np.repeat([0, 1], 300))
    assert r["kT"] == pytest.approx(GAS_CONSTANT * TEMPERATURE)
    assert r["divergences"] == 0 and r["acceptance"] > 0.5 and r["nuts_steps"] == 2 * 300 * 2
    # every stored state is centred on its mean position (to float32 rounding)
    assert np.abs(r["positions"].astype(np.float64).mean(axis=1)).max() < 1e-6
    # the chains moved away from the start structure and from each other
    assert np.std(r["potential_energy"]) > 1.0
    assert not np.allclose(r["positions"][0], r["positions"][300])


def test_peptide_nuts_energies_and_equipartition(ala2_obc2, ala2_nuts):
    from cgbench.energy import PotentialEnergy
    from cgbench.systems import energy_and_forces

    system, _ = ala2_obc2
    r = ala2_nuts
    x = r["positions"].astype(np.float64)
    n_atoms = x.shape[1]
    kT = GAS_CONSTANT * TEMPERATURE

    reference = [energy_and_forces(system, xi) for xi in x]
    e_ref = np.array([e for e, _ in reference])
    forces = np.array([f for _, f in reference])
    np.testing.assert_allclose(r["potential_energy"], e_ref, rtol=1e-6)

    virial = -np.einsum("fij,fij->f", x, forces) / kT  # x·∇U / kT
    assert abs(virial.mean() - (3 * n_atoms - 3)) < 4 * _batch_se(virial), (virial.mean(), _batch_se(virial))

    frames = x[::2]  # every other state: halves the Hessian cost
    with jax.enable_x64(True):
        energy = PotentialEnergy.from_system(system)

        def laplacian_and_gradient2(xi):
            def f(flat):
                return energy(flat.reshape(n_atoms, 3))
            flat = xi.reshape(-1)
            return jnp.trace(jax.hessian(f)(flat)), jnp.sum(jax.grad(f)(flat) ** 2)

        laplacian, gradient2 = (np.asarray(a) for a in jax.jit(jax.vmap(laplacian_and_gradient2))(jnp.asarray(frames)))
    t_conf = gradient2.mean() / laplacian.mean() / GAS_CONSTANT
    assert t_conf == pytest.approx(TEMPERATURE, rel=0.05), t_conf


def test_write_load_round_trip(ala2_nuts, tmp_path):
    path = write_peptide_nuts(ala2_nuts, tmp_path / "sub" / "ala2_obc2.npz")
    assert path.exists()
    loaded = load_peptide_nuts(path)
    for key in ("positions", "potential_energy", "chain", "inverse_mass_matrix"):
        np.testing.assert_array_equal(loaded[key], ala2_nuts[key])
        assert loaded[key].dtype == np.asarray(ala2_nuts[key]).dtype
    for key in ("temperature", "kT", "acceptance", "divergences", "step_size", "wall_s",
                "energy_evaluations", "warmup_energy_evaluations", "nuts_steps", "chains",
                "samples", "thin", "warmup", "centroid_scale"):
        assert loaded[key] == ala2_nuts[key] and type(loaded[key]) is type(ala2_nuts[key]), key
