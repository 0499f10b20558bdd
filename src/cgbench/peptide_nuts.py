"""NUTS reference samples of an all-atom peptide in implicit solvent (or vacuum), JAX energy.

:func:`run_peptide_nuts` samples the configurational Boltzmann density
p(x) ∝ exp(−U(x)/kT) of *all* atoms of a non-periodic OpenMM system (vacuum, OBC1, OBC2) with
U the JAX energy of :mod:`cgbench.energy` (float64 by default) and kT = R·T,
R = :data:`cgbench.units.GAS_CONSTANT` = 0.00831446261815324 kJ/mol/K (kT = 2.494 kJ/mol at 300 K). The
sampler is :func:`cgbench.nuts.run_nuts_chains`: window adaptation of step size and diagonal mass
matrix on the first chain, shared by all chains, a short per-chain burn-in, then the recorded
states. Chains start from one structure (e.g. the minimised one) plus independent seeded
Gaussian noise of :data:`START_NOISE_NM` per coordinate. This is the reference the data-free
method is judged against.

Rigid-body motion. U is invariant under rigid translations and rotations. Rotations form a
compact group, so they leave the density proper; they are left free, and saved states come in
arbitrary orientations (internal observables such as φ/ψ, distances or energies do not depend on
them; align, e.g. with :func:`cgbench.resolutions.to_canonical_frame`, before comparing
Cartesian coordinates). Translations make p(x) improper: the centroid c = mean of the atom
positions would random-walk and inflate the adapted mass matrix. The sampler therefore uses
p(x) ∝ exp(−U(x)/kT − |c(x)|²/(2 s²)) with s = ``centroid_scale`` (0.01 nm, ``None`` for no
tether: along the unit vector of a rigid translation the spread is √N·s, 0.047 nm for ala2,
comparable to the internal fluctuations, and its curvature is far below that of any bond, so
it neither limits the step size nor lengthens the trajectories). Because U(x) depends only on x − c, the density factorises into the centred
configuration times a Gaussian in c, so the distribution of the centred configurations is exactly
that of p ∝ exp(−U/kT); every saved state is centred (its mean position subtracted: the
unweighted centroid, not the mass-weighted centre of mass, which is at the origin only for equal
masses). Consequence used in the tests: the virial/equipartition identity for the
configurational density with the 3 translations removed is ⟨x·∇U⟩ = (3N − 3)·kT (the rotations,
being proper, still count).

Energies returned are U of the saved float32 (centred) positions, recomputed in the energy's
dtype, so ``potential_energy[i]`` is exactly the energy of ``positions[i]`` as stored.

Float64: the energy is built, and the sampler runs, inside ``with jax.enable_x64(True)``, so
the rest of the process keeps JAX's defaults.

Speed (ala2, 22 atoms, OBC2, float64, 300 K, one chain, 500 adaptation steps, jitted
``lax.scan`` of NUTS steps timed after compilation, 2-core CPU shared with other jobs, load ≈ 3):
≈ 50 µs per gradient evaluation. At blackjax's default tree depth 10 NUTS takes ≈ 710
integration steps per NUTS step (adapted step size 0.0073, acceptance 0.85): the trees nearly
saturate (1023), since stiff X–H bonds set the step size while the free rotations and the
torsions need long trajectories, so 1000 NUTS steps cost ≈ 35 s; the adaptation itself used
334 000 integration steps (≈ 17 s). With ``max_num_doublings=6`` a NUTS step is capped at 63
integration steps (all used; step size 0.027, acceptance 0.87): ≈ 3.3 s per 1000 NUTS steps.
Compilation adds ≈ 20–30 s per call. Chains are vmapped and advance in lockstep, so a step of
several chains waits for the longest trajectory among them.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from cgbench.nuts import MAX_NUM_DOUBLINGS, run_nuts_chains
from cgbench.units import GAS_CONSTANT
#: Standard deviation of the Gaussian noise added to the start structure per chain, nm.
START_NOISE_NM = 0.002
#: Diagnostics stored as scalars in the .npz of :func:`write_peptide_nuts`.
SCALARS = ("temperature", "kT", "acceptance", "divergences", "step_size", "wall_s",
           "energy_evaluations", "warmup_energy_evaluations", "nuts_steps", "chains", "samples",
           "thin", "warmup", "centroid_scale")


def run_peptide_nuts(system, positions, *, temperature: float, chains: int, warmup: int,
                     samples: int, thin: int = 1, key, dtype=jnp.float64,
                     centroid_scale: float | None = 0.01,
                     max_num_doublings: int = MAX_NUM_DOUBLINGS) -> dict:
    """NUTS samples of p(x) ∝ exp(−U(x)/kT) over all atoms of ``system``, kT = R·``temperature``.

    Args:
        system: Non-periodic ``openmm.System`` (vacuum, OBC1 or OBC2) that
            :meth:`cgbench.energy.PotentialEnergy.from_system` supports.
        positions: Start structure, nm, shape ``(n_atoms, 3)`` (e.g. the minimised one).
        temperature: Kelvin.
        chains: Independent chains; each starts at ``positions`` plus N(0, (0.002 nm)²) noise.
        warmup: Window-adaptation steps (plus ``warmup // 10`` burn-in steps per chain).
        samples: Recorded states per chain.
        thin: Keep every ``thin``-th NUTS state.
        key: JAX PRNG key.
        dtype: Of the energy, ``jnp.float64`` (default) or ``jnp.float32``.
        centroid_scale: Standard deviation, nm, of the Gaussian tether on the centroid that makes
            the density proper (see the module docstring); ``None`` leaves translations free.
        max_num_doublings: Largest NUTS tree depth (see :func:`cgbench.nuts.run_nuts_chains`).

    Returns:
        dict with ``positions`` (float32 nm, ``(chains·samples, n_atoms, 3)``, chain-major, each
        centred on its mean position), ``potential_energy`` (kJ/mol, ``(chains·samples,)``, of
        the stored positions), ``chain`` (chain index per frame), ``temperature``, ``kT``
        (kJ/mol), ``samples``, ``thin``, ``warmup``, ``centroid_scale`` (nan for none) and the
        diagnostics of :func:`cgbench.nuts.run_nuts_chains` (``acceptance``, ``divergences``,
        ``step_size``, ``inverse_mass_matrix``, ``wall_s``, ``energy_evaluations``,
        ``warmup_energy_evaluations``, ``nuts_steps``, ``chains``).
    """
    from cgbench.energy import PotentialEnergy, energy_and_forces

    start = np.asarray(positions, dtype=np.float64)
    n_atoms = system.getNumParticles()
    if start.shape != (n_atoms, 3):
        raise ValueError(f"positions of shape {start.shape}, expected ({n_atoms}, 3)")
    if system.usesPeriodicBoundaryConditions():
        raise ValueError("periodic system: only vacuum and implicit solvent are supported")
    kT = GAS_CONSTANT * temperature
    start = start - start.mean(axis=0)

    with jax.enable_x64(True):
        energy = PotentialEnergy.from_system(system, dtype=dtype)

        def logdensity(flat):
            x = flat.reshape(n_atoms, 3)
            out = -energy(x) / kT
            if centroid_scale is not None:
                out = out - jnp.sum(jnp.mean(x, axis=0) ** 2) / (2 * centroid_scale**2)
            return out

        noise_key, run_key = jr.split(key)
        noise = START_NOISE_NM * jr.normal(noise_key, (chains, 3 * n_atoms), dtype=energy.dtype)
        initial = jnp.asarray(start.reshape(1, -1), energy.dtype) + noise
        result = run_nuts_chains(logdensity, initial, warmup=warmup, samples=samples, key=run_key,
                                 thin=thin, max_num_doublings=max_num_doublings)
        states = result.pop("positions").reshape(chains * samples, n_atoms, 3)
        states = (states - states.mean(axis=1, keepdims=True)).astype(np.float32)
        potential, _ = energy_and_forces(energy, jnp.asarray(states, energy.dtype))
        potential = np.asarray(potential, dtype=np.float64)

    return {
        "positions": states, "potential_energy": potential,
        "chain": np.repeat(np.arange(chains), samples), "temperature": float(temperature),
        "kT": kT, "samples": samples, "thin": thin, "warmup": warmup,
        "centroid_scale": float("nan") if centroid_scale is None else float(centroid_scale),
        **result,
    }


def write_peptide_nuts(result: dict, path: str | Path) -> Path:
    """Save a :func:`run_peptide_nuts` result as .npz at ``path`` (folders created).

    Arrays ``positions``, ``potential_energy``, ``chain``, ``inverse_mass_matrix`` (and ``phi``,
    ``psi`` (n_states, n_residues) rad when the result has them) and the
    :data:`SCALARS` as 0-d arrays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(result[k]) for k in ("positions", "potential_energy", "chain",
                                                 "inverse_mass_matrix", "phi", "psi") if k in result}
    with path.open("wb") as f:  # an open file: np.savez would append .npz to other suffixes
        np.savez(f, **arrays, **{k: np.asarray(result[k]) for k in SCALARS})
    return path


def load_peptide_nuts(path: str | Path) -> dict:
    """The dict written by :func:`write_peptide_nuts`: arrays as numpy, :data:`SCALARS` as Python."""
    with np.load(path) as data:
        return {k: (data[k].item() if k in SCALARS else data[k]) for k in data.files}
