"""Minibatch training of an equinox model on frames of MD data, resumable and guarded against NaNs.

One loop for every model cgbench fits to data — PMFs by force matching
(:mod:`cgbench.force_matching`) and CG-BG's flow proposals by maximum likelihood
(:mod:`cgbench.cgbg_stage`):

- the frames are split into train and validation sets by **time blocks**
  (:func:`time_block_split`: each replica cut into ``blocks`` contiguous blocks, a fraction of
  them, spread over the run, held out), not by random frames, which would put near-copies of
  validation frames into training;
- Adam on a cosine-decayed learning rate after global-norm gradient clipping (optax), one
  ``lax.scan`` over the minibatches of an epoch;
- early stopping on the validation loss with ``patience`` epochs, the best model kept;
- updates with a non-finite loss or gradient are skipped (``optax.apply_if_finite``); after
  ``max_nonfinite`` consecutive ones training stops with :class:`NonFiniteTrainingError`, the
  last checkpoint kept;
- a checkpoint after every epoch (parameters, optimiser state, best model, history) lets a
  killed job resume; minibatch order is drawn from ``fold_in(key, epoch)``, so a resumed run
  equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
from tqdm.auto import tqdm

from cgbench.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of :func:`train_minibatches` (config blocks ``pmf.training``, ``cgbg.training``).

    Attributes:
        epochs: Maximum passes over the training frames.
        batch_size: Frames per gradient step.
        learning_rate: Adam's initial learning rate.
        final_learning_rate: Fraction of it reached at the last epoch (cosine decay).
        clip_norm: Global-norm gradient clipping (in the units of the loss's gradient).
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


def learning_rate_schedule(settings: TrainingSettings, total_steps: int) -> optax.Schedule:
    """Cosine decay from ``learning_rate`` to ``final_learning_rate × learning_rate``."""
    return optax.cosine_decay_schedule(settings.learning_rate, max(total_steps, 1), alpha=settings.final_learning_rate)


def make_optimizer(settings: TrainingSettings, total_steps: int) -> optax.GradientTransformation:
    """Adam on a cosine schedule, after global-norm clipping; non-finite updates skipped."""
    inner = optax.chain(optax.clip_by_global_norm(settings.clip_norm),
                        optax.adam(learning_rate_schedule(settings, total_steps)))
    # Skipping is counted by the caller (notfinite_count); the limit here is only a backstop.
    return optax.apply_if_finite(inner, max_consecutive_errors=10**9)


def _fingerprint(settings: TrainingSettings, extra: dict, n_train: int, n_val: int) -> str:
    text = json.dumps({"settings": asdict(settings), "extra": extra, "n_train": n_train, "n_val": n_val},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_minibatches(model, loss: Callable, data: Sequence, replica, *, validate: Callable,
                      settings: TrainingSettings, key, workdir: str | Path, fingerprint: dict | None = None,
                      progress: bool = True, stop_after_epochs: int | None = None, name: str = "training") -> dict:
    """Train ``model`` on minibatches of frames, with early stopping, checkpoints and resume.

    Args:
        model: Initial equinox Module; its inexact array leaves are trained.
        loss: ``loss(model, *batch) -> scalar``, the mean loss of a minibatch, where ``batch`` is
            ``data`` indexed by the minibatch's frames. Differentiated with respect to the model.
        data: Arrays with the frames along axis 0 (jax or numpy), e.g. ``(positions, forces)``.
        replica: ``(N,)`` replica of each frame, for the time-block split.
        validate: ``validate(model, validation_frames) -> float``, the validation loss (lower is
            better, any units), called after every epoch with the held-out frame indices.
        settings: :class:`TrainingSettings`.
        key: PRNG key of the minibatch order.
        workdir: Folder of the checkpoint (:mod:`cgbench.checkpoint`; resumed if it matches).
        fingerprint: Anything else that must match for a checkpoint to be resumed (data, model).
        progress: Show a tqdm bar over epochs.
        stop_after_epochs: Stop (checkpoint kept, ``finished`` False) after this many epochs of
            this call — for tests of resume.
        name: What is trained, for the progress bar, logs and error messages.

    Returns:
        ``model`` (best on validation), ``history`` (a dict per epoch: ``epoch``, ``train_loss``
        (mean minibatch loss over the finite ones), ``validation_loss``, ``learning_rate``,
        ``skipped``, ``wall_s``), ``best_epoch``, ``validation_loss``, ``train_frames``,
        ``validation_frames``, ``epochs``, ``stopped_early``, ``finished``, ``wall_s`` (training
        time, all calls summed).

    Raises:
        NonFiniteTrainingError: ``max_nonfinite`` consecutive non-finite updates, or a validation
            loss that was never finite.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = tuple(jax.numpy.asarray(a) for a in data)
    train_idx, val_idx = time_block_split(replica, blocks=settings.blocks,
                                          validation_fraction=settings.validation_fraction)
    batch_size = min(settings.batch_size, len(train_idx))
    n_batches = len(train_idx) // batch_size
    total_steps = settings.epochs * n_batches
    optimizer = make_optimizer(settings, total_steps)
    schedule = learning_rate_schedule(settings, total_steps)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    best = params
    state = {"epoch": 0, "best_epoch": 0, "best_validation": float("inf"), "bad_epochs": 0, "history": [],
             "wall_s": 0.0, "finished": False, "stopped_early": False,
             "fingerprint": _fingerprint(settings, fingerprint or {}, len(train_idx), len(val_idx))}
    saved = load_checkpoint(workdir, (params, opt_state, best), identity={"fingerprint": state["fingerprint"]})
    if saved is not None:
        (params, opt_state, best), state = saved
        log.info("resuming %s after epoch %d (best %d)", name, state["epoch"], state["best_epoch"])

    train_data = tuple(a[train_idx] for a in data)

    def batch_loss(params, idx):
        return loss(eqx.combine(params, static), *(a[idx] for a in train_data))

    @eqx.filter_jit
    def run_epoch(params, opt_state, batches):
        def step(carry, idx):
            params, opt_state = carry
            value, grads = eqx.filter_value_and_grad(batch_loss)(params, idx)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, losses

    bar = tqdm(total=settings.epochs, initial=state["epoch"], disable=not progress, desc=name, unit="epoch")
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
                f"{name}: {consecutive} consecutive updates with a non-finite loss or gradient in epoch "
                f"{epoch + 1}; stopped. The checkpoint of epoch {epoch} in {workdir} is kept — lower the "
                "learning_rate or clip_norm, or check the data for NaNs.")
        validation = float(validate(eqx.combine(params, static), val_idx))
        losses = np.asarray(losses)
        finite = np.isfinite(losses)
        train_loss = float(np.mean(losses[finite])) if finite.any() else float("nan")
        state["epoch"] = epoch + 1
        state["wall_s"] += time.perf_counter() - start
        state["history"].append({"epoch": state["epoch"], "train_loss": train_loss, "validation_loss": validation,
                                 "learning_rate": float(schedule(state["epoch"] * n_batches)), "skipped": skipped,
                                 "wall_s": state["wall_s"]})
        if validation < state["best_validation"]:
            state.update(best_validation=validation, best_epoch=state["epoch"], bad_epochs=0)
            best = params
        else:
            state["bad_epochs"] += 1
        if state["bad_epochs"] >= settings.patience:
            state.update(finished=True, stopped_early=True)
        if state["epoch"] >= settings.epochs:
            state["finished"] = True
        save_checkpoint(workdir, (params, opt_state, best), state)
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.4g}", validation=f"{validation:.4g}")
        log.info("%s epoch %d: train loss %.5g, validation loss %.5g%s", name, state["epoch"], train_loss,
                 validation, f", {skipped} updates skipped" if skipped else "")
        epochs_this_call += 1
    bar.close()
    if state["finished"] and state["best_epoch"] == 0:
        raise NonFiniteTrainingError(f"{name}: the validation loss was never finite in {state['epoch']} epochs "
                                     f"({workdir}); check the validation frames")
    return {"model": eqx.combine(best, static), "history": state["history"], "best_epoch": state["best_epoch"],
            "validation_loss": state["best_validation"], "train_frames": int(len(train_idx)),
            "validation_frames": int(len(val_idx)), "epochs": state["epoch"],
            "stopped_early": state["stopped_early"], "finished": state["finished"], "wall_s": state["wall_s"]}
