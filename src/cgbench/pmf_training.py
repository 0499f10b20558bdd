"""Train one PMF of one data source: a peptide at a CG resolution, or Müller-Brown's x.

CG-BG's two PMFs per system (config ``pmf``):

- **PMF_B** (``data = biased``) from metadynamics on (φ, ψ) in the PMF environment
  (``<environment>_metad``; Müller-Brown: Langevin with the static bias on x). The bias acts on CG
  coordinates only, so force matching uses the stored *unbiased* forces with no reweighting.
- **PMF_U** (``data = unbiased``) from unbiased MD of the same simulated length per replica: the
  ``<environment>_unbiased`` run cut to the biased run's production time
  (:func:`select_training_frames` with ``max_time_ps``), so both PMFs cost the same MD.

Both are strided to at most ``pmf.training_frames`` frames. A peptide PMF is a
:class:`cgbench.pmf.PeptidePMF` (a prior fitted to the data by Boltzmann inversion, weighted by
the dataset's weights, plus a SchNet network); Müller-Brown's an
:class:`cgbench.pmf.RBFPotential`. Outputs in the job's folder: ``model.eqx`` + ``model.json``
(:func:`cgbench.pmf.save_pmf`: hyper-parameters, data, noise floor, training summary),
``history.csv`` (per epoch), ``training.json`` (the summary alone) and, while training,
``checkpoint*`` (:mod:`cgbench.checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax.random as jr
import numpy as np
import pandas as pd

from cgbench.atomic import atomic_write_json
from cgbench.checkpoint import remove_checkpoint
from cgbench.force_matching import force_noise_floor, model_forces, train_force_matching
from cgbench.training import TrainingSettings

log = logging.getLogger(__name__)

#: Data sources of the PMFs and the MD run each comes from (``{environment}`` from the config).
DATA_SOURCES = {"biased": "{environment}_metad", "unbiased": "{environment}_unbiased"}

#: Per-frame arrays of a dataset that frame selection slices.
_FRAME_KEYS = ("positions", "forces", "potential_energy", "bias_energy", "weights", "replica", "time_ps",
               "phi", "psi", "cvs", "xy", "time")


def data_run(data: str, environment: str) -> str:
    """The MD run of a PMF data source (``biased`` → ``<environment>_metad``)."""
    if data not in DATA_SOURCES:
        raise ValueError(f"PMF data {data!r}: expected one of {sorted(DATA_SOURCES)}")
    return DATA_SOURCES[data].format(environment=environment)


def replica_duration_ps(dataset: dict) -> float:
    """Longest production time of a replica of a dataset (ps): its last frame's time."""
    return float(np.max(dataset["time_ps"])) if len(dataset["time_ps"]) else 0.0


def select_training_frames(dataset: dict, *, max_time_ps: float | None = None,
                           max_frames: int | None = None) -> dict:
    """The frames force matching uses: each replica cut at ``max_time_ps``, then strided.

    Args:
        dataset: A CG dataset (:func:`cgbench.datasets.load_dataset`) or Müller-Brown data.
        max_time_ps: Keep frames with ``time_ps <= max_time_ps`` (per replica; None: all).
        max_frames: Keep every k-th frame, the smallest k leaving at most this many (None: all).

    Returns:
        The dataset with its per-frame arrays sliced (time order kept, so replicas stay
        contiguous) and ``weights`` renormalised.
    """
    n = len(dataset["positions"])
    keep = np.ones(n, bool)
    if max_time_ps is not None:
        keep &= np.asarray(dataset["time_ps"]) <= max_time_ps + 1e-9
    index = np.flatnonzero(keep)
    if max_frames is not None and len(index) > max_frames:
        index = index[:: int(np.ceil(len(index) / max_frames))]
    if len(index) == 0:
        raise ValueError(f"no frames left after cutting at {max_time_ps} ps")
    out = dict(dataset)
    for name in _FRAME_KEYS:
        if name in dataset and np.ndim(dataset[name]) and len(dataset[name]) == n:
            out[name] = np.asarray(dataset[name])[index]
    w = np.asarray(out["weights"], np.float64)
    out["weights"] = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    return out


def training_settings(spec: dict) -> TrainingSettings:
    """:class:`cgbench.training.TrainingSettings` from a config ``training`` block."""
    return TrainingSettings(**spec)


def peptide_training_settings(spec: dict, resolution: str) -> TrainingSettings:
    """Force-matching settings of a peptide PMF at ``resolution``.

    Args:
        spec: Config block ``pmf``: ``training``, and ``epochs_by_resolution`` (resolution → epochs,
            replacing ``training.epochs``; optional).
        resolution: ``core_beta``, ``heavy_atom`` or ``all_atom``.
    """
    epochs = spec.get("epochs_by_resolution", {}).get(resolution, spec["training"]["epochs"])
    return training_settings({**spec["training"], "epochs": epochs})


def _write_outputs(out: Path, model, result: dict, floor: dict, hyperparameters: dict) -> dict:
    from cgbench.pmf import save_pmf

    summary = {
        "train_frames": result["train_frames"], "validation_frames": result["validation_frames"],
        "epochs": result["epochs"], "best_epoch": result["best_epoch"], "stopped_early": result["stopped_early"],
        "validation_force_rmse": float(np.sqrt(result["validation_mse"])),
        "train_force_rmse": float(np.sqrt(result["history"][result["best_epoch"] - 1]["train_mse"])),
        "force_floor_rmse": floor["floor_rmse"], "floor": floor, "training_s": result["wall_s"],
    }
    save_pmf(out / "model.eqx", model, {**hyperparameters, "training": summary})
    pd.DataFrame(result["history"]).to_csv(out / "history.csv", index=False)
    atomic_write_json(out / "training.json", {**hyperparameters, **summary})
    remove_checkpoint(out)
    return summary


def _check_forces(data: dict, what: str) -> None:
    forces = np.asarray(data["forces"])
    if not np.isfinite(forces).all():
        raise ValueError(f"{what}: the dataset has non-finite forces (all_atom data of MD with constrained "
                         "bonds to hydrogen has none: use constraints: none, or drop all_atom from "
                         "pmf.resolutions)")


def train_peptide_pmf(dataset: dict, mapping, *, spec: dict, kT: float, seed: int, out: str | Path,
                      max_time_ps: float | None = None, progress: bool = True) -> dict:
    """Fit the prior, train a :class:`cgbench.pmf.PeptidePMF` and write it (module docstring).

    Args:
        dataset: CG dataset of one MD run at ``mapping``'s resolution.
        mapping: :class:`cgbench.resolutions.CGMapping` of the dataset's beads.
        spec: Config block ``pmf`` (``training_frames``, ``prior``, ``network``, ``training``,
            ``epochs_by_resolution``, ``floor``).
        kT: kJ/mol.
        seed: Of the network's initialisation and the minibatch order.
        out: Folder of the outputs.
        max_time_ps: Cut of every replica (PMF_U: the biased run's length).
        progress: tqdm bars.

    Returns:
        The training summary (also in ``training.json``).
    """
    from cgbench.pmf import PeptidePMF, SchNet, bead_graph, fit_prior

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = select_training_frames(dataset, max_time_ps=max_time_ps, max_frames=spec["training_frames"])
    _check_forces(data, f"PMF of {dataset.get('peptide', '')} {mapping.resolution}")
    positions = np.asarray(data["positions"], np.float32)
    forces = np.asarray(data["forces"], np.float32)
    graph = bead_graph(mapping)
    prior = fit_prior(positions, graph, kT=kT, weights=data["weights"], **spec["prior"])
    init_key, train_key = jr.split(jr.key(seed))
    network = SchNet(mapping.n_beads, key=init_key, **spec["network"])
    model = PeptidePMF(prior, network, kT)
    log.info("PMF %s: %d frames (%d replicas), %d beads; prior %d bonds %d angles %d dihedrals %d repulsive pairs",
             mapping.resolution, len(positions), len(np.unique(data["replica"])), mapping.n_beads,
             len(graph.bonds), len(graph.angles), len(graph.dihedrals), len(graph.nonbonded))
    settings = peptide_training_settings(spec, mapping.resolution)
    result = train_force_matching(model, positions, forces, data["replica"], settings=settings, kT=kT,
                                  key=train_key, workdir=out, progress=progress,
                                  fingerprint={"spec": spec, "seed": seed, "frames": len(positions),
                                               "max_time_ps": max_time_ps, "force_sum": float(forces.sum())})
    floor = force_noise_floor(positions, forces, data["replica"], predicted=model_forces(result["model"], positions),
                              **spec["floor"])
    log.info("validation force RMSE %.4g kJ/mol/nm; noise floor %.4g (estimate)",
             np.sqrt(result["validation_mse"]), floor["floor_rmse"])
    hyper = {"kind": "peptide", "resolution": mapping.resolution, "kT": kT, "seed": seed, "spec": spec,
             "data": {"run": str(dataset.get("run", "")), "peptide": str(dataset.get("peptide", "")),
                      "frames": len(positions), "replicas": int(len(np.unique(data["replica"]))),
                      "max_time_ps": max_time_ps, "simulated_ns": _simulated_ns(data)}}
    return _write_outputs(out, result["model"], result, floor, hyper)


def train_muller_brown_pmf(dataset: dict, *, spec: dict, seed: int, out: str | Path,
                           progress: bool = True) -> dict:
    """Train an :class:`cgbench.pmf.RBFPotential` on Müller-Brown x data (kT = 1) and write it.

    Args:
        dataset: :func:`cgbench.muller_brown.generate_data` output (``positions`` ``(N, 1)``).
        spec: Config block ``muller_brown.pmf`` (``training_frames``, ``network``, ``training``, ``floor``).
        seed, out, progress: As :func:`train_peptide_pmf`.
    """
    from cgbench.pmf import RBFPotential

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = select_training_frames(dataset, max_frames=spec["training_frames"])
    _check_forces(data, "Müller-Brown PMF")
    x = np.asarray(data["positions"], np.float32)
    forces = np.asarray(data["forces"], np.float32)
    init_key, train_key = jr.split(jr.key(seed))
    low, high = float(x.min()), float(x.max())
    model = RBFPotential(low=low, high=high, key=init_key, **spec["network"])
    settings = training_settings(spec["training"])
    result = train_force_matching(model, x, forces, data["replica"], settings=settings, kT=1.0, key=train_key,
                                  workdir=out, progress=progress,
                                  fingerprint={"spec": spec, "seed": seed, "frames": len(x),
                                               "force_sum": float(forces.sum())})
    floor = force_noise_floor(x, forces, data["replica"], predicted=model_forces(result["model"], x), align=False,
                              **spec["floor"])
    hyper = {"kind": "rbf", "system": "muller_brown", "kT": 1.0, "seed": seed, "spec": spec,
             "data": {"frames": len(x), "replicas": int(len(np.unique(data["replica"]))), "low": low, "high": high}}
    return _write_outputs(out, result["model"], result, floor, hyper)


def _simulated_ns(data: dict) -> float:
    """Production time covered by the selected frames, summed over replicas (ns)."""
    replica, t = np.asarray(data["replica"]), np.asarray(data["time_ps"])
    return float(sum(t[replica == r].max() for r in np.unique(replica)) * 1e-3)
