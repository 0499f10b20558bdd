"""Force matching: fit a CG potential U_η(R) whose forces −∇U_η match mapped all-atom forces.

The mapped forces F of a CG dataset (:mod:`cgbench.datasets`, :mod:`cgbench.muller_brown`) are
noisy samples of the mean force −∇A(R) (A the PMF): F = −∇A(R) + ε, where ε comes from the
fast (integrated-out) coordinates. So the force-matching loss

    L(η) = ⟨|−∇U_η(R) − F|²⟩ / D          (mean over frames and the D Cartesian components)
         = ⟨|∇A − ∇U_η|²⟩ / D  +  ⟨|ε|²⟩ / D

is minimised by U_η = A (+ const) and never falls below the *noise floor* ⟨|ε|²⟩/D. The floor
is estimated from the data alone (:func:`force_noise_floor`): for pairs of nearby frames i, j,
½|F_i − F_j|²/D = σ² + ½|∇A(R_i) − ∇A(R_j)|²/D, whose second term vanishes as the pair's
distance d → 0 like d²; a straight-line fit of ½|ΔF|²/D against d² over the closest pairs
gives σ² as its intercept. Pairs from the same replica closer in time than ``min_separation``
frames are skipped (their fast coordinates, hence noises, are correlated). Molecules are
superposed (Kabsch, forces rotated alike) before distances and differences are taken. The mean
force of a peptide varies steeply over tiny distances (bond stretches: ~10⁵ kJ/mol/nm² × 0.004
nm, the typical neighbour distance, is ~400 kJ/mol/nm), so the line is fitted to the *residuals*
F − (−∇U_η) of the trained model instead (``predicted``), whose smooth part varies far less:
on ala2 core_beta (OBC2, 20 000 frames) the raw estimate was 422 kJ/mol/nm, above the model's own
error of 288, the residual one 283 (256-283 as the fitted share of pairs goes from 10 % to 50 %).

Training (:func:`train_force_matching`) runs :func:`cgbench.training.train_minibatches`: a split
of the frames by time blocks, Adam on a cosine schedule with clipping, early stopping, NaN
skipping, a checkpoint per epoch and a bit-identical resume (see there). The loss is computed on forces in units of kT/nm (F / kT) so that learning rate and clipping
do not depend on the system; reported errors are in the data's units (kJ/mol/nm for
peptides, kT per unit length for Müller-Brown).

A model is any equinox Module with ``model(position) -> energy`` for one configuration
(``position`` of the data's per-frame shape, e.g. ``(n_beads, 3)``); :mod:`cgbench.pmf`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from cgbench.training import TrainingSettings, train_minibatches

log = logging.getLogger(__name__)


def predicted_forces(model, positions):
    """−∇U of ``model`` at a batch of configurations ``(B, *shape)`` → ``(B, *shape)``."""
    return -jax.vmap(jax.grad(model))(positions)


def force_matching_loss(model, positions, forces, inv_kT):
    """Mean over a batch and components of ``|(−∇U − F) / kT|²``, in (F/kT)²."""
    return jnp.mean(((predicted_forces(model, positions) - forces) * inv_kT) ** 2)


def model_forces(model, positions, *, chunk: int = 512) -> np.ndarray:
    """−∇U of ``model`` at ``(N, *shape)`` configurations, in jitted chunks → numpy ``(N, *shape)``."""
    positions = jnp.asarray(positions)
    n = len(positions)
    pad = (-n) % chunk
    index = np.concatenate([np.arange(n), np.zeros(pad, int)]).reshape(-1, chunk)
    out = np.concatenate([np.asarray(_predicted_forces_jit(model, positions[idx])) for idx in index])
    return out[:n]


def _squared_error_sum(model, positions, forces, mask, inv_kT):
    finite = jnp.isfinite(forces.reshape(len(forces), -1)).all(-1)
    forces = jnp.where(jnp.isfinite(forces), forces, 0.0)
    err = ((predicted_forces(model, positions) - forces) * inv_kT) ** 2
    mask = mask * finite
    return jnp.sum(jnp.where(mask > 0, err.reshape(len(positions), -1).mean(-1), 0.0)), jnp.sum(mask)


def mean_squared_force_error(model, positions, forces, *, kT: float = 1.0, chunk: int = 512) -> float:
    """⟨|−∇U − F|²⟩ per component, in the units of ``forces`` squared; frames whose forces are not
    finite are left out (NaN if none is left).

    Args:
        model: ``model(position) -> energy`` (energy in the units of kT · length).
        positions, forces: ``(N, *shape)``.
        kT: Only rescales the computation (the result is in the units of ``forces``²).
        chunk: Frames per jitted evaluation.
    """
    positions, forces = jnp.asarray(positions), jnp.asarray(forces)
    n = len(positions)
    pad = (-n) % chunk
    index = np.concatenate([np.arange(n), np.zeros(pad, int)]).reshape(-1, chunk)
    mask = np.concatenate([np.ones(n), np.zeros(pad)]).reshape(-1, chunk)
    total, count = 0.0, 0.0
    for idx, m in zip(index, mask):
        err, used = _squared_error_sum_jit(model, positions[idx], forces[idx], jnp.asarray(m, positions.dtype),
                                           1.0 / kT)
        total, count = total + float(err), count + float(used)
    return total / count * kT ** 2 if count else float("nan")


_squared_error_sum_jit = eqx.filter_jit(_squared_error_sum)
_predicted_forces_jit = eqx.filter_jit(predicted_forces)


def train_force_matching(model, positions, forces, replica, *, settings: TrainingSettings, kT: float,
                         key, workdir: str | Path, fingerprint: dict | None = None, progress: bool = True,
                         stop_after_epochs: int | None = None) -> dict:
    """Train ``model`` by force matching (:func:`cgbench.training.train_minibatches`).

    Args:
        model: Initial model (equinox Module, ``model(position) -> energy`` in kJ/mol, or kT for
            dimensionless systems); its inexact array leaves are trained.
        positions: ``(N, *shape)`` configurations (nm).
        forces: ``(N, *shape)`` mapped forces (kJ/mol/nm), noisy samples of the mean force.
        replica: ``(N,)`` replica of each frame, for the time-block split.
        settings: :class:`cgbench.training.TrainingSettings`.
        kT: kJ/mol (1 for dimensionless systems); the loss is on F / kT.
        key, workdir, fingerprint, progress, stop_after_epochs: as
            :func:`cgbench.training.train_minibatches` (minibatch order, checkpoint folder and resume).

    Returns:
        ``model`` (best on validation), ``history`` (a dict per epoch: ``epoch``, ``train_mse``,
        ``validation_mse`` (units of F²), ``learning_rate``, ``skipped``, ``wall_s``), ``best_epoch``,
        ``validation_mse``, ``train_frames``, ``validation_frames``, ``epochs``, ``stopped_early``,
        ``finished``, ``wall_s`` (training time, all calls summed).
    """
    dtype = jnp.asarray(positions).dtype
    positions = jnp.asarray(positions, dtype)
    forces = jnp.asarray(forces, dtype)
    inv_kT = 1.0 / kT

    def loss(model, x, f):
        return force_matching_loss(model, x, f, inv_kT)

    def validate(model, frames):   # in the loss's units, (F / kT)²
        return mean_squared_force_error(model, positions[frames], forces[frames], kT=kT) / kT ** 2

    result = train_minibatches(model, loss, (positions, forces), replica, validate=validate, settings=settings,
                               key=key, workdir=workdir, fingerprint=fingerprint, progress=progress,
                               stop_after_epochs=stop_after_epochs, name="force matching")
    scale = kT ** 2
    history = [{"epoch": h["epoch"], "train_mse": h["train_loss"] * scale, "validation_mse": h["validation_loss"] * scale,
                "learning_rate": h["learning_rate"], "skipped": h["skipped"], "wall_s": h["wall_s"]}
               for h in result.pop("history")]
    return {**result, "history": history, "validation_mse": result.pop("validation_loss") * scale}


def superpose(positions, forces, reference=None) -> tuple[np.ndarray, np.ndarray]:
    """Kabsch-superpose configurations onto ``reference``, rotating the forces alike.

    Args:
        positions: ``(N, n, 3)`` nm.
        forces: ``(N, n, 3)``.
        reference: ``(n, 3)``; the first configuration if not given.

    Returns:
        Centred, rotated positions and rotated forces, ``(N, n, 3)`` each (proper rotations only).
    """
    x = np.asarray(positions, np.float64)
    f = np.asarray(forces, np.float64)
    x = x - x.mean(1, keepdims=True)
    ref = x[0] if reference is None else np.asarray(reference, np.float64) - np.mean(reference, 0)
    h = np.einsum("bni,nj->bij", x, ref)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", u, vt)))
    u[:, :, -1] *= d[:, None]
    rotation = np.einsum("bij,bjk->bik", u, vt)          # x @ rotation ≈ ref
    return np.einsum("bni,bij->bnj", x, rotation), np.einsum("bni,bij->bnj", f, rotation)


def force_noise_floor(positions, forces, replica=None, *, predicted=None, queries: int = 4000,
                      neighbours: int = 32, min_separation: int = 10, closest_fraction: float = 0.5,
                      align: bool = True, seed: int = 0) -> dict:
    """Estimate the irreducible force-matching error ⟨|ε|²⟩/D from nearby frames (module docstring).

    Args:
        positions: ``(N, n, 3)`` (superposed here if ``align``) or ``(N, d)`` for a
            low-dimensional coordinate such as Müller-Brown's x (then ``align=False``).
        forces: Same shape as ``positions``.
        predicted: Optional forces of a fitted model at ``positions``: the pairs then compare the
            residuals F − predicted, whose smooth part (the model's error) varies far less between
            neighbours than the mean force itself, so the d² → 0 line is flatter and its intercept
            less sensitive to how close the neighbours are.
        replica: ``(N,)`` replica per frame (frames in time order within each); all one if None.
        queries: Frames whose nearest admissible neighbour is looked up (a random subset).
        neighbours: Candidates per query among which the nearest admissible one is taken.
        min_separation: Frames of the same replica closer than this in time are not paired.
        closest_fraction: Share of the pairs (the closest) the straight line is fitted to.
        align: Superpose molecules (Kabsch) first.
        seed: Of the query subset.

    Returns:
        ``floor_mse`` (intercept, clipped to ≥ 0; units of F²), ``floor_rmse`` (its root),
        ``slope`` (per d², d² the mean squared displacement per particle), ``nearest_mse`` (mean
        ½|ΔF|²/D over the fitted pairs, an upper bound), ``pairs``, ``median_distance`` (RMSD of
        the fitted pairs).
    """
    from scipy.spatial import cKDTree

    x = np.asarray(positions, np.float64)
    f = np.asarray(forces, np.float64)
    if predicted is not None:
        f = f - np.asarray(predicted, np.float64)
    if align:
        x, f = superpose(x, f)
    n = len(x)
    particles = x.shape[1] if x.ndim == 3 else 1
    x, f = x.reshape(n, -1), f.reshape(n, -1)
    replica = np.zeros(n, int) if replica is None else np.asarray(replica)
    frame = np.zeros(n, int)
    for r in np.unique(replica):
        idx = np.flatnonzero(replica == r)
        frame[idx] = np.arange(len(idx))
    rng = np.random.default_rng(seed)
    query = rng.choice(n, size=min(queries, n), replace=False)
    k = min(neighbours + 1, n)
    dist, cand = cKDTree(x).query(x[query], k=k)
    dist, cand = dist.reshape(len(query), -1), cand.reshape(len(query), -1)
    allowed = (cand != query[:, None]) & ~((replica[cand] == replica[query, None])
                                           & (np.abs(frame[cand] - frame[query, None]) < min_separation))
    has = allowed.any(1)
    first = np.argmax(allowed, 1)
    i, j = query[has], cand[has, first[has]]
    if len(i) < 3:
        raise ValueError("too few admissible frame pairs for a noise-floor estimate")
    d2 = np.sum((x[i] - x[j]) ** 2, 1) / particles
    g = 0.5 * np.mean((f[i] - f[j]) ** 2, 1)
    keep = d2 <= np.quantile(d2, closest_fraction)
    slope, intercept = np.polyfit(d2[keep], g[keep], 1)
    floor = float(np.clip(intercept, 0.0, np.mean(g[keep])))
    return {"floor_mse": floor, "floor_rmse": float(np.sqrt(floor)), "slope": float(slope),
            "nearest_mse": float(np.mean(g[keep])), "pairs": int(keep.sum()),
            "median_distance": float(np.sqrt(np.median(d2[keep])))}
