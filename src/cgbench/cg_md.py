"""CG molecular dynamics with a learned PMF: the classical, simulation-based check of a CG potential.

:func:`run_cg_md` integrates Langevin dynamics of the beads under U_η (:mod:`cgbench.pmf`) with
the project's batched BAOAB integrator (:func:`cgbench.langevin.run_langevin`): many replicas in
one batch, run in chunks (a progress bar, a log line each), started from frames of the PMF's
own training data. Bead masses are those of the beads' atoms (equilibrium averages do not depend
on them). A replica whose coordinates become non-finite — a PMF that lets beads collapse or fly
apart where it saw no data — is dropped from then on and counted, not allowed to poison the
histogram. :func:`dihedral_js` compares the (φ, ψ) histogram of the CG MD with the reference MD's
(CG-BG's metric: 100 × 100 bins on [−π, π)², natural-log JS divergence).

Units: nm, ps (timestep given in fs), K, kJ/mol.
"""

from __future__ import annotations

import logging
import time

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: Histogram of CG-BG's (φ, ψ) metrics: bins per angle over [−π, π).
DIHEDRAL_BINS = 100


def bead_masses(mapping) -> np.ndarray:
    """Masses (amu) of the beads of a :class:`cgbench.resolutions.CGMapping`: their atoms' masses."""
    return np.array([atom.element.mass for atom in mapping.topology.atoms], np.float64)


def run_cg_md(model, start, *, masses, temperature: float, timestep_fs: float, friction: float, steps: int,
              report_interval: int, equilibration_steps: int, key, chunks: int = 10,
              progress: bool = True) -> dict:
    """Langevin dynamics of ``B`` replicas under a learned PMF.

    Args:
        model: PMF, ``model(positions (n, 3) nm) -> energy kJ/mol``.
        start: ``(B, n, 3)`` start configurations, nm (their dtype is the simulation's).
        masses: ``(n,)`` amu.
        temperature: K.
        timestep_fs: Time step, fs.
        friction: 1/ps.
        steps: Production steps per replica (after equilibration), a multiple of
            ``report_interval``; split into about ``chunks`` calls of the integrator.
        report_interval: Steps between saved frames.
        equilibration_steps: Steps before production, not saved (rounded up to whole chunks).
        key: PRNG key.
        chunks: Integrator calls the production is split into (progress, non-finite checks); all
            calls have one shape, so the integrator compiles once.
        progress: Show a tqdm bar.

    Returns:
        ``positions`` ``(n_frames, n, 3)`` float32 nm (all kept frames: replica-major, time order
        within each replica), ``replica`` ``(n_frames,)``, ``time_ps`` ``(n_frames,)``,
        ``dropped_replicas`` (replicas lost to non-finite coordinates), ``simulated_ns`` (summed over
        replicas kept), ``wall_s``, ``ns_per_day`` (aggregate over the batch).
    """
    from cgbench.langevin import run_langevin
    from cgbench.pmf import energy_and_forces

    if steps % report_interval:
        raise ValueError(f"cg_md steps {steps} must be a multiple of report_interval {report_interval}")
    forces_fn = eqx.Partial(energy_and_forces, model)
    dt = timestep_fs * 1e-3
    masses = jnp.asarray(masses)
    state = jnp.asarray(start)
    n_replicas = state.shape[0]
    n_reports = steps // report_interval
    # Every integrator call has the same shape (one compilation): production in equal chunks, the
    # last one's surplus frames dropped; equilibration in whole chunks, rounded up.
    per_chunk = -(-n_reports // max(1, min(chunks, n_reports)))
    chunk_steps = per_chunk * report_interval
    equilibration_chunks = -(-equilibration_steps // chunk_steps)
    t0 = time.perf_counter()

    def advance(state, key):
        out = run_langevin(forces_fn, state, steps=chunk_steps, report_interval=report_interval, dt=dt,
                           friction=friction, temperature=temperature, masses=masses, key=key)
        return out["state"], out["key"], np.asarray(out["positions"], np.float32)

    for _ in range(equilibration_chunks):
        state, key, _ = advance(state, key)
    frames, alive = [], np.ones(n_replicas, bool)
    bar = tqdm(total=n_reports, disable=not progress, desc="CG MD", unit="frame")
    while sum(len(f) for f in frames) < n_reports:
        state, key, positions = advance(state, key)                     # (per_chunk, B, n, 3)
        positions = positions[: n_reports - sum(len(f) for f in frames)]
        alive &= np.isfinite(positions).all(axis=(0, 2, 3))
        frames.append(positions)
        bar.update(len(positions))
        log.info("CG MD: %d of %d frames, %d of %d replicas finite", sum(len(f) for f in frames), n_reports,
                 alive.sum(), n_replicas)
        if not alive.any():
            break
    bar.close()
    wall = time.perf_counter() - t0
    positions = np.concatenate(frames)                                    # (T, B, n, 3)
    kept = np.flatnonzero(alive)
    if len(kept) < n_replicas:
        log.warning("CG MD: %d of %d replicas dropped (non-finite coordinates)", n_replicas - len(kept), n_replicas)
    t = positions.shape[0]
    simulated_ns = (equilibration_chunks * chunk_steps + t * report_interval) * dt * 1e-3 * n_replicas
    return {
        "positions": np.ascontiguousarray(positions[:, kept].transpose(1, 0, 2, 3).reshape(-1, *positions.shape[2:])),
        "replica": np.repeat(kept, t).astype(np.int32),
        "time_ps": np.tile(dt * report_interval * np.arange(1, t + 1), len(kept)),
        "dropped_replicas": int(n_replicas - len(kept)),
        "simulated_ns": float(len(kept) / n_replicas * simulated_ns),
        "wall_s": wall,
        "ns_per_day": float(simulated_ns / wall * 86400.0),
    }


def dihedral_histogram(phi, psi, weights=None, *, bins: int = DIHEDRAL_BINS) -> np.ndarray:
    """Normalised 2-D histogram ``(bins, bins)`` of (φ, ψ) (rad) over [−π, π)²."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    wrap = lambda a: (np.asarray(a, np.float64) + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    h, _, _ = np.histogram2d(wrap(phi), wrap(psi), bins=[edges, edges], weights=weights)
    return h / h.sum()


def dihedral_js(phi, psi, reference_phi, reference_psi, *, weights=None, reference_weights=None,
                bins: int = DIHEDRAL_BINS) -> float:
    """JS divergence (nats) between the (φ, ψ) histograms of samples and of a reference."""
    from cgbench.evaluate import js_divergence

    p = dihedral_histogram(reference_phi, reference_psi, reference_weights, bins=bins).ravel()
    q = dihedral_histogram(phi, psi, weights, bins=bins).ravel()
    return float(js_divergence(p, q))
