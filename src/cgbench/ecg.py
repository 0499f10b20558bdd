"""ECG trainer: reverse-KL training of a flow q(z) against the marginal Boltzmann density.

The gradient (ECG eq. 16–17) is

    ∇_θ KL(q ‖ p_β) = E_ε[∇_θ log q(f_θ(ε))] − β E_ε[F̄(f_θ(ε))ᵀ ∂f_θ(ε)/∂θ],

with F̄ the mean force from :mod:`cgbench.conditional`. One forward pass gives z = f_θ(ε)
and log q(z); its vector–Jacobian product with cotangents (1/N, −βF̄/N) is that gradient,
so no surrogate loss is needed. A target whose density over z has an untempered factor V(z)
(peptides: the volume element of z's coordinates) adds −∇ log V/N to the z cotangent. Tempering (:mod:`cgbench.tempering`) moves β from β_0 to
β_target; the model at every β is saved. Updates pass through :mod:`cgbench.gradient_guard`.

Training is deterministic given the seed: the key of update u is fold_in(key(seed), u), so a
run resumed from its last checkpoint after being killed ends with the same parameters as an
uninterrupted one.

Files in ``out_dir``: ``models/beta_XXXX.eqx`` (flow parameters at each β),
``models.json`` (index of the saved models, written last), ``checkpoint.json`` +
``checkpoint-<n>.eqx`` (resume state, :mod:`cgbench.checkpoint`), ``history.csv`` (training
diagnostics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pandas as pd
from tqdm.auto import tqdm

from cgbench.atomic import atomic_write_bytes, atomic_write_json
from cgbench.checkpoint import load_checkpoint, save_checkpoint
from cgbench.conditional import ConditionalSampler, mean_force
from cgbench.flows import flow_from_settings
from cgbench.gradient_guard import gradient_guard, reset_history
from cgbench.tempering import METHOD_OF_SCHEDULE, fixed_schedule, next_beta
from cgbench.targets import SyntheticTarget

log = logging.getLogger(__name__)

SCHEDULES = tuple(METHOD_OF_SCHEDULE)
HISTORY_EVERY = 10


class TrainingDiverged(RuntimeError):
    """Raised after too many consecutive skipped (non-finite or outlier) gradients."""


def settings_hash(settings: dict, schedule: str, seed: int) -> str:
    """Short hash of everything that determines a training run (guards resume)."""
    text = json.dumps({"settings": settings, "schedule": schedule, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def planned_betas(tempering: dict, schedule: str) -> list[float] | None:
    """The β list of a fixed or no-tempering run (None for adaptive: decided while training).

    β values in the optional ``tempering.milestones`` (where models are scored) are inserted into
    the fixed schedule; the adaptive schedule never steps over one (:func:`next_milestone`).
    """
    if schedule == "fixed":
        betas = fixed_schedule(tempering["beta_0"], tempering["beta_target"], tempering["delta_beta"])
        inside = [b for b in tempering.get("milestones", []) if betas[0] < b < betas[-1]]
        return sorted(set(betas.tolist()) | set(inside))
    if schedule == "none":
        return [tempering["beta_target"]]
    return None


def next_milestone(tempering: dict, beta: float) -> float:
    """The smallest milestone (or β_target) above ``beta``: where an adaptive step must stop."""
    return min([b for b in tempering.get("milestones", []) if b > beta] + [tempering["beta_target"]])


def updates_at_step(tempering: dict, schedule: str, index: int) -> int:
    """Updates at tempering step ``index``; without tempering, as many as the fixed schedule."""
    if schedule == "none":
        n_steps = len(planned_betas(tempering, "fixed"))
        return tempering["updates_at_beta_0"] + (n_steps - 1) * tempering["updates_per_step"]
    return tempering["updates_at_beta_0"] if index == 0 else tempering["updates_per_step"]


def make_optimizer(settings: dict) -> optax.GradientTransformation:
    guard = settings["gradient_guard"]
    return gradient_guard(optax.adam(settings["learning_rate"]), window=guard["window"],
                          skip_factor=guard["skip_factor"], clip_factor=guard["clip_factor"])


def training_score(target, z, mean_force, beta):
    """∇_z log p_β(z) as ECG trains on it: β·F̄(z), plus ∇ log V(z) where the target has one.

    ``mean_force`` ``(N, dim_z)``: F̄ in kT per unit of z (:func:`cgbench.conditional.mean_force`
    of ``target.energy``, estimated at ``z`` ``(N, dim_z)`` and β); ``log_volume(z)`` is an
    untempered term of log p_β(z) such as a volume factor (:class:`cgbench.peptide_ecg.PeptideTarget`).
    Returns ``(N, dim_z)``.
    """
    score = beta * mean_force
    log_volume = getattr(target, "log_volume", None)
    if log_volume is not None:
        score = score + jax.vmap(jax.grad(log_volume))(z)
    return score


def make_update(target: SyntheticTarget, settings: dict, static, optimizer):
    """Jitted ECG update: (params, opt_state, key, beta) → (params, opt_state, diagnostics).

    ``target`` is any module with ``energy(z, x)`` (kT at β = 1), ``dim_x`` and optionally
    ``inverse_mass`` (dim_x,) for the conditional chains and ``log_volume(z)``, an untempered
    term of log p_β(z) such as a volume factor (:class:`cgbench.peptide_ecg.PeptideTarget`).
    """
    sampler = ConditionalSampler(**settings["conditional_sampler"])
    batch = settings["batch_size"]

    @jax.jit
    def update(params, opt_state, key, beta):
        sample_key, chain_key = jr.split(key)

        def forward(p):
            return eqx.combine(p, static).sample_and_log_prob(sample_key, (batch,))

        (z, log_q), vjp = jax.vjp(forward, params)
        mf = mean_force(target.energy, z, beta, target.dim_x, sampler, key=chain_key,
                        inverse_mass=getattr(target, "inverse_mass", None))
        cotangent = -training_score(target, z, mf.mean_force, beta)   # d(−log p_β)/dz
        (grads,) = vjp((cotangent / batch, jnp.full_like(log_q, 1.0 / batch)))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        diagnostics = {
            "mean_log_q": log_q.mean(),
            "grad_norm": optax.tree.norm(grads),
            "skipped": opt_state.skipped,
            "consecutive_skips": opt_state.consecutive_skips,
            "half_difference": mf.half_difference,
            "acceptance": mf.acceptance,
        }
        return params, opt_state, diagnostics, mf.energies

    return update


def initial_flow(flow_settings: dict, dim_z: int, seed: int):
    """The untrained flow of a run with master ``seed``: the skeleton of its checkpoints and models.

    Models are saved as their trained parameters (floating-point leaves) only; the permutations
    between coupling layers are not parameters but are drawn from the same key
    (:func:`cgbench.flows.flow_from_settings`). Training and loading both build the flow here, so a
    model is loaded with the permutations it was trained with. (Before 2026-12-07 loading used key 0:
    every flow of dim_z ≥ 3 trained with another seed was evaluated with the wrong permutations.)
    """
    return flow_from_settings(flow_settings, dim_z, key=jr.key(seed))


def train_ecg(target: SyntheticTarget, settings: dict, schedule: str, out_dir: str | Path, *,
              seed: int, max_updates: int | None = None, progress: bool = True) -> dict | None:
    """Train (or resume) an ECG flow for ``target`` and save the model at every β.

    Args:
        target: the synthetic target (energy, dimensions).
        settings: the ``ecg.<target>`` config block (flow, learning_rate, batch_size,
            tempering, conditional_sampler, gradient_guard, checkpoint_every).
        schedule: ``"fixed"``, ``"adaptive"`` or ``"none"`` (β_target from the start).
        out_dir: output folder (see module docstring).
        seed: master seed of the run.
        max_updates: stop (as if killed) after this many updates in this call, leaving a
            checkpoint; used to test resume. None trains to the end.
        progress: show a tqdm progress bar.

    Returns:
        The models index (also written to ``models.json``), or None if stopped early.

    Raises:
        TrainingDiverged: after more than ``gradient_guard.max_consecutive_skips`` skipped
            updates in a row; the last good state is in the checkpoint.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    tempering = settings["tempering"]
    run_hash = settings_hash(settings, schedule, seed)
    batch = settings["batch_size"]
    sampler = ConditionalSampler(**settings["conditional_sampler"])
    evaluations_per_update = sampler.energy_evaluations(batch)

    flow = initial_flow(settings["flow"], target.dim_z, seed)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = make_optimizer(settings)
    opt_state = optimizer.init(params)

    state = {"run_hash": run_hash, "step": 0, "beta": float(tempering["beta_0"] if schedule != "none"
                                                          else tempering["beta_target"]),
             "done_in_step": 0, "update": 0, "wall_s": 0.0, "models": [], "history": []}
    finished = out / "models.json"
    if finished.exists() and json.loads(finished.read_text()).get("run_hash") == run_hash:
        log.info("%s is complete for these settings; nothing to do", finished)
        return json.loads(finished.read_text())
    saved = load_checkpoint(out, (params, opt_state), identity={"run_hash": run_hash})
    if saved is not None:
        (params, opt_state), state = saved
        log.info("resuming from checkpoint at update %d (beta=%.6g)", state["update"], state["beta"])

    planned = planned_betas(tempering, schedule)
    if schedule == "adaptive":
        total = None
    else:
        total = sum(updates_at_step(tempering, schedule, i) for i in range(len(planned)))
    update = make_update(target, settings, static, optimizer)
    base_key = jr.key(seed)

    def checkpoint():
        save_checkpoint(out, (params, opt_state), state)

    # In a log file (not a terminal) refresh rarely, so that logs stay readable.
    bar = tqdm(total=total, initial=state["update"], disable=not progress,
               mininterval=2.0 if sys.stderr.isatty() else 30.0,
               desc=f"ecg[{schedule}]", unit="upd")
    started, calls = time.perf_counter(), 0
    energies = None
    while True:
        beta = state["beta"]
        n_updates = updates_at_step(tempering, schedule, state["step"])
        while state["done_in_step"] < n_updates:
            if max_updates is not None and calls >= max_updates:
                state["wall_s"] += time.perf_counter() - started
                checkpoint()
                bar.close()
                return None
            key = jr.fold_in(base_key, state["update"])
            params, opt_state, diag, energies = update(params, opt_state, key, jnp.float32(beta))
            state["update"] += 1
            state["done_in_step"] += 1
            calls += 1
            bar.update(1)
            if int(diag["consecutive_skips"]) > settings["gradient_guard"]["max_consecutive_skips"]:
                state["wall_s"] += time.perf_counter() - started
                checkpoint()
                bar.close()
                raise TrainingDiverged(
                    f"{int(diag['consecutive_skips'])} consecutive gradients skipped at beta={beta:.6g}, "
                    f"update {state['update']} (last norm {float(diag['grad_norm']):.3g}); the last good "
                    f"state is in {out / 'checkpoint.json'}. Lower ecg.*.learning_rate or raise "
                    "conditional_sampler.samples, then rerun to resume.")
            if state["update"] % HISTORY_EVERY == 0:
                row = {"update": state["update"], "beta": beta, **{k: float(v) for k, v in diag.items()}}
                state["history"].append(row)
                bar.set_postfix(beta=f"{beta:.4g}", log_q=f"{row['mean_log_q']:.3f}",
                                grad=f"{row['grad_norm']:.3g}", refresh=False)
            # Not at a step's last update: the step's end (model, next β) is one unit of work,
            # so a kill before it completes resumes a few updates earlier and redoes them.
            if state["update"] % settings["checkpoint_every"] == 0 and state["done_in_step"] < n_updates:
                state["wall_s"] += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint()

        # The model at this β is converged: keep it, then choose the next β.
        index = state["step"]
        model_path = out / "models" / f"beta_{index:04d}.eqx"
        atomic_write_bytes(model_path, lambda f: eqx.tree_serialise_leaves(f, params))
        state["wall_s"] += time.perf_counter() - started
        started = time.perf_counter()
        state["models"] = [m for m in state["models"] if m["index"] != index]  # idempotent on resume
        state["models"].append({
            "index": index, "beta": beta, "updates": state["update"],
            "energy_evaluations": state["update"] * evaluations_per_update,
            "wall_s": round(state["wall_s"], 3), "path": str(model_path.relative_to(out)),
        })
        recent = [row for row in state["history"] if row["beta"] == beta][-10:]
        if recent:  # convergence of the mean force: two halves of each chain, and acceptance
            log.info("beta=%.6g done after %d updates (%.1f s); mean force halves differ by %.3g "
                     "of |F|, chain acceptance %.3f, mean log q %.4g", beta, state["update"],
                     state["wall_s"], np.nanmean([r["half_difference"] for r in recent]),
                     np.mean([r["acceptance"] for r in recent]), recent[-1]["mean_log_q"])
        else:
            log.info("beta=%.6g done after %d updates (%.1f s)", beta, state["update"], state["wall_s"])
        if beta >= tempering["beta_target"]:
            break
        if schedule == "adaptive":
            new_beta = next_beta(beta, np.asarray(energies), beta_target=next_milestone(tempering, beta),
                                 target_kl_change=tempering["target_kl_change"])
        else:
            new_beta = planned[index + 1]
        state.update(step=index + 1, beta=float(new_beta), done_in_step=0)
        # The gradient scale changes with β: the skip/clip median restarts at each step.
        opt_state = reset_history(opt_state)
        checkpoint()
    bar.close()
    checkpoint()

    pd.DataFrame(state["history"]).to_csv(out / "history.csv", index=False)
    index_doc = {"schedule": schedule, "seed": seed, "run_hash": run_hash, "dim_z": target.dim_z,
                 "flow": settings["flow"], "energy_evaluations_per_update": evaluations_per_update,
                 "models": state["models"]}
    atomic_write_json(out / "models.json", index_doc)
    return index_doc


def load_models(out_dir: str | Path) -> tuple[dict, list]:
    """The models index and the flows, one per saved β, in schedule order."""
    out = Path(out_dir)
    index = json.loads((out / "models.json").read_text())
    skeleton = initial_flow(index["flow"], index["dim_z"], index["seed"])
    params, static = eqx.partition(skeleton, eqx.is_inexact_array)
    flows = [eqx.combine(eqx.tree_deserialise_leaves(out / m["path"], params), static)
             for m in index["models"]]
    return index, flows
