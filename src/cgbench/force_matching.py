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

Training (:func:`train_force_matching`): the frames are split into train and validation sets by
**time blocks** (:func:`time_block_split`: each replica cut into ``blocks`` contiguous blocks, a
fraction of them, spread over the run, held out), not by random frames, which would put
near-copies of validation frames into training. Adam with a cosine-decayed learning rate and
global-norm gradient clipping (optax), a lax.scan over the minibatches of an epoch, early
stopping on the validation loss with ``patience`` epochs, the best model kept. Updates with a
non-finite loss or gradient are skipped (``optax.apply_if_finite``); after ``max_nonfinite``
consecutive ones training stops with an error, the last checkpoint kept. A checkpoint after every
epoch (parameters, optimiser state, best model, history) lets a killed job resume; minibatch
order is drawn from ``fold_in(key, epoch)``, so a resumed run equals an uninterrupted one.
The loss is computed on forces in units of kT/nm (F / kT) so that learning rate and clipping
do not depend on the system; reported errors are in the data's units (kJ/mol/nm for
peptides, kT per unit length for Müller-Brown).

A model is any equinox Module with ``model(position) -> energy`` for one configuration
(``position`` of the data's per-frame shape, e.g. ``(n_beads, 3)``); :mod:`cgbench.pmf`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from tqdm.auto import tqdm

from cgbench.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForceMatchingSettings:
    """Settings of :func:`train_force_matching` (config block ``pmf.training``).

    Attributes:
        epochs: Maximum passes over the training frames.
        batch_size: Frames per gradient step.
        learning_rate: Adam's initial learning rate.
        final_learning_rate: Fraction of it reached at the last epoch (cosine decay).
        clip_norm: Global-norm gradient clipping (loss on forces in kT/nm).
        patience: Epochs without a better validation loss before stopping.
        validation_fraction: Share of each replica's time blocks held out.
        blocks: Time blocks per replica.
        max_nonfinite: Consecutive skipped (non-finite) updates before training stops.
    """

    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    final_learning_rate: float = 0.01
    clip_norm: float = 10.0
    patience: int = 10
    validation_fraction: float = 0.2
    blocks: int = 10
    max_nonfinite: int = 20


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive non-finite updates; the last good checkpoint is kept."""


def time_block_split(replica, *, blocks: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of the training and validation sets, split by contiguous time blocks.

    Args:
        replica: ``(N,)`` replica of each frame; frames of a replica are contiguous and in time order.
        blocks: Blocks each replica is cut into (``np.array_split``).
        validation_fraction: Share of the blocks of each replica held out (at least one), spread
            evenly over the run (for 10 blocks and 0.2: blocks 2 and 7).

    Returns:
        ``(train, validation)`` sorted int arrays.
    """
    replica = np.asarray(replica)
    if blocks < 2:
        raise ValueError(f"blocks {blocks}: need at least 2 to hold some out")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction {validation_fraction} must be in (0, 1)")
    n_val = min(blocks - 1, max(1, round(blocks * validation_fraction)))
    held_out = {int((k + 0.5) * blocks / n_val) for k in range(n_val)}
    train, validation = [], []
    for r in np.unique(replica):
        frames = np.flatnonzero(replica == r)
        for b, block in enumerate(np.array_split(frames, blocks)):
            (validation if b in held_out else train).append(block)
    train, validation = np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))
    if len(train) == 0 or len(validation) == 0:
        raise ValueError(f"{len(replica)} frames are too few for {blocks} blocks per replica")
    return train, validation


def predicted_forces(model, positions):
    """−∇U of ``model`` at a batch of configurations ``(B, *shape)`` → ``(B, *shape)``."""
    return -jax.vmap(jax.grad(model))(positions)


def _loss(params, static, positions, forces, inv_kT):
    model = eqx.combine(params, static)
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


def make_optimizer(settings: ForceMatchingSettings, total_steps: int) -> optax.GradientTransformation:
    """Adam on a cosine schedule, after global-norm clipping; non-finite updates skipped."""
    schedule = optax.cosine_decay_schedule(settings.learning_rate, max(total_steps, 1),
                                           alpha=settings.final_learning_rate)
    inner = optax.chain(optax.clip_by_global_norm(settings.clip_norm), optax.adam(schedule))
    # Skipping is counted by us (notfinite_count); the limit here is only a backstop.
    return optax.apply_if_finite(inner, max_consecutive_errors=10**9)


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


def _fingerprint(settings: ForceMatchingSettings, extra: dict, n_train: int, n_val: int) -> str:
    text = json.dumps({"settings": asdict(settings), "extra": extra, "n_train": n_train, "n_val": n_val},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_force_matching(model, positions, forces, replica, *, settings: ForceMatchingSettings, kT: float,
                         key, workdir: str | Path, fingerprint: dict | None = None, progress: bool = True,
                         stop_after_epochs: int | None = None) -> dict:
    """Train ``model`` by force matching, with early stopping, checkpoints and resume.

    Args:
        model: Initial model (equinox Module, ``model(position) -> energy`` in kJ/mol, or kT for
            dimensionless systems); its inexact array leaves are trained.
        positions: ``(N, *shape)`` configurations (nm).
        forces: ``(N, *shape)`` mapped forces (kJ/mol/nm), noisy samples of the mean force.
        replica: ``(N,)`` replica of each frame, for the time-block split.
        settings: :class:`ForceMatchingSettings`.
        kT: kJ/mol (1 for dimensionless systems); the loss is on F / kT.
        key: PRNG key of the minibatch order.
        workdir: Folder of ``checkpoint.eqx`` / ``checkpoint.json`` (resumed if they match).
        fingerprint: Anything else that must match for a checkpoint to be resumed (data, model).
        progress: Show a tqdm bar over epochs.
        stop_after_epochs: Stop (checkpoint kept, ``finished`` False) after this many epochs of
            this call — for tests of resume.

    Returns:
        ``model`` (best on validation), ``history`` (a dict per epoch: ``epoch``, ``train_mse``,
        ``validation_mse`` (units of F²), ``learning_rate``, ``skipped``, ``wall_s``), ``best_epoch``,
        ``validation_mse``, ``train_frames``, ``validation_frames``, ``epochs``, ``stopped_early``,
        ``finished``, ``wall_s`` (training time, all calls summed).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dtype = jnp.asarray(positions).dtype
    positions = jnp.asarray(positions, dtype)
    forces = jnp.asarray(forces, dtype)
    train_idx, val_idx = time_block_split(replica, blocks=settings.blocks,
                                          validation_fraction=settings.validation_fraction)
    batch_size = min(settings.batch_size, len(train_idx))
    n_batches = len(train_idx) // batch_size
    optimizer = make_optimizer(settings, settings.epochs * n_batches)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    best = params
    state = {"epoch": 0, "best_epoch": 0, "best_validation": float("inf"), "bad_epochs": 0, "history": [],
             "wall_s": 0.0, "finished": False, "stopped_early": False,
             "fingerprint": _fingerprint(settings, fingerprint or {}, len(train_idx), len(val_idx))}
    ckpt_eqx, ckpt_json = workdir / "checkpoint.eqx", workdir / "checkpoint.json"
    if ckpt_eqx.exists() and ckpt_json.exists():
        saved = json.loads(ckpt_json.read_text())
        if saved.get("fingerprint") == state["fingerprint"]:
            params, opt_state, best = eqx.tree_deserialise_leaves(ckpt_eqx, (params, opt_state, best))
            state = saved
            log.info("resuming force matching after epoch %d (best %d)", state["epoch"], state["best_epoch"])
        else:
            log.warning("checkpoint in %s was made with other settings or data; starting afresh", workdir)

    inv_kT = 1.0 / kT
    train_x, train_f = positions[train_idx], forces[train_idx]

    @eqx.filter_jit
    def run_epoch(params, opt_state, batches):
        def step(carry, idx):
            params, opt_state = carry
            loss, grads = eqx.filter_value_and_grad(_loss)(params, static, train_x[idx], train_f[idx], inv_kT)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, losses

    bar = tqdm(total=settings.epochs, initial=state["epoch"], disable=not progress, desc="force matching",
               unit="epoch")
    epochs_this_call = 0
    while not state["finished"]:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
        start = time.perf_counter()
        epoch = state["epoch"]
        order = jr.permutation(jr.fold_in(key, epoch), len(train_idx))[: n_batches * batch_size]
        params, opt_state, losses = run_epoch(params, opt_state, order.reshape(n_batches, batch_size))
        consecutive = int(opt_state.notfinite_count)
        skipped = int(opt_state.total_notfinite) - sum(h["skipped"] for h in state["history"])
        if consecutive >= settings.max_nonfinite:
            bar.close()
            raise NonFiniteTrainingError(
                f"force matching: {consecutive} consecutive updates with a non-finite loss or gradient in "
                f"epoch {epoch + 1}; stopped. The checkpoint of epoch {epoch} in {workdir} is kept — lower "
                "pmf.training.learning_rate or clip_norm, or check the data for NaN forces.")
        current = eqx.combine(params, static)
        val_mse = mean_squared_force_error(current, positions[val_idx], forces[val_idx], kT=kT)
        finite = np.isfinite(losses)
        train_mse = float(np.mean(np.asarray(losses)[np.asarray(finite)])) * kT ** 2 if finite.any() else float("nan")
        state["epoch"] = epoch + 1
        state["wall_s"] += time.perf_counter() - start
        lr = float(optax.cosine_decay_schedule(settings.learning_rate, max(settings.epochs * n_batches, 1),
                                               alpha=settings.final_learning_rate)(state["epoch"] * n_batches))
        state["history"].append({"epoch": state["epoch"], "train_mse": train_mse, "validation_mse": val_mse,
                                 "learning_rate": lr, "skipped": skipped, "wall_s": state["wall_s"]})
        if val_mse < state["best_validation"]:
            state.update(best_validation=val_mse, best_epoch=state["epoch"], bad_epochs=0)
            best = params
        else:
            state["bad_epochs"] += 1
        if state["bad_epochs"] >= settings.patience:
            state.update(finished=True, stopped_early=True)
        if state["epoch"] >= settings.epochs:
            state["finished"] = True
        atomic_write_bytes(ckpt_eqx, lambda f: eqx.tree_serialise_leaves(f, (params, opt_state, best)))
        atomic_write_json(ckpt_json, state)
        bar.update(1)
        bar.set_postfix(train_rmse=f"{np.sqrt(train_mse):.3g}", val_rmse=f"{np.sqrt(val_mse):.3g}")
        log.info("epoch %d: train RMSE %.4g, validation RMSE %.4g%s", state["epoch"], np.sqrt(train_mse),
                 np.sqrt(val_mse), f", {skipped} updates skipped" if skipped else "")
        epochs_this_call += 1
    bar.close()
    if state["finished"] and state["best_epoch"] == 0:
        raise NonFiniteTrainingError(f"force matching: the validation loss was never finite in {state['epoch']} "
                                     f"epochs ({workdir}); check the validation frames' forces")
    return {"model": eqx.combine(best, static), "history": state["history"], "best_epoch": state["best_epoch"],
            "validation_mse": state["best_validation"], "train_frames": int(len(train_idx)),
            "validation_frames": int(len(val_idx)), "epochs": state["epoch"],
            "stopped_early": state["stopped_early"], "finished": state["finished"], "wall_s": state["wall_s"]}


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
