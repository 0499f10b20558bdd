"""CG datasets: MD frames mapped to a CG resolution, the one input format of force matching and flows.

:func:`build_dataset` reads the replicas of one MD run (:mod:`cgbench.md`), maps positions and the
unbiased forces to the beads of a resolution (:func:`cgbench.resolutions.map_positions`,
:func:`cgbench.resolutions.map_forces`) and adds what the later stages need to use or reweight them.
A dataset is one ``.npz`` (:func:`write_dataset`, :func:`load_dataset`) with:

- ``positions`` (n_frames, n_beads, 3) float32, nm; ``forces`` (n_frames, n_beads, 3) float32,
  kJ/mol/nm — mapped forces of the **unbiased** potential (noisy samples of the mean force): each
  bead's force summed with those of the non-bead atoms nearest it along bonds
  (:func:`cgbench.resolutions.aggregate_forces`; less noise than the slice, same mean); NaN
  for ``all_atom`` when bonds to hydrogen were constrained (no force map exists; ``forces_valid``
  is then False);
- ``potential_energy`` (n_frames,) kJ/mol, all-atom and unbiased; ``bias_energy`` (n_frames,) kJ/mol,
  the metadynamics bias when the frame was saved (0 for unbiased runs);
- ``weights`` (n_frames,): normalised importance weights of the unbiased ensemble — uniform for
  unbiased runs; for metadynamics the final-bias weights w ∝ exp(V_final(φ, ψ)/kT) with the first
  ``discard`` fraction of each replica set to 0 (:func:`cgbench.diagnostics.final_bias_weights`).
  Force matching needs no weights (the bias acts on CG coordinates only); averages do;
- ``replica`` (n_frames,) int, ``time_ps`` (n_frames,) ps; ``phi``, ``psi`` (n_frames, n_residues) rad;
- ``kT`` kJ/mol; ``atom_indices``, ``bead_names`` of the mapping; ``resolution``, ``run``, ``peptide``.

Frames are in time order within each replica, replicas one after the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgbench.atomic import atomic_savez
from cgbench.units import GAS_CONSTANT

#: Resolutions datasets are made for (``backbone`` is ECG's split of these, not a dataset of its own).
DATASET_RESOLUTIONS = ("all_atom", "heavy_atom", "core_beta")


def build_dataset(replica_dirs: list[str | Path], resolution: str, *, temperature: float, constraints: str,
                  discard: float, run: str = "", peptide: str = "") -> dict:
    """The CG dataset of one MD run at one resolution.

    Args:
        replica_dirs: Finished replica folders of the run (:func:`cgbench.md.run_md`), in order.
        resolution: ``all_atom``, ``heavy_atom`` or ``core_beta``.
        temperature: K (for kT).
        constraints: ``none`` or ``h_bonds``, the MD's constraints (sets the force map).
        discard: Fraction of each biased replica left out of the weights.
        run, peptide: Names stored with the data.
    """
    from cgbench.diagnostics import final_bias_weights
    from cgbench.md import load_frames
    from cgbench.resolutions import cg_mapping, map_positions, phi_psi

    if resolution not in DATASET_RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r}: expected one of {DATASET_RESOLUTIONS}")
    if not replica_dirs:
        raise ValueError("no replicas")
    kT = GAS_CONSTANT * temperature
    parts = []
    for index, folder in enumerate(replica_dirs):
        frames = load_frames(folder)
        mapping = cg_mapping(frames["topology"], resolution)
        positions = np.asarray(map_positions(frames["positions"], mapping), np.float32)
        phi, psi = (np.asarray(a) for a in phi_psi(positions, mapping))
        parts.append({
            "positions": positions,
            "forces": _mapped_forces(frames["forces"], mapping, constraints),
            "potential_energy": frames["potential_energy"], "bias_energy": frames["bias_energy"],
            "cvs": frames["cvs"], "time_ps": frames["time_ps"], "phi": phi, "psi": psi,
            "replica": np.full(len(positions), index, np.int32), "bias_grid": frames["bias_grid"],
            "bias_limits": frames["bias_limits"],
        })
    data = {name: np.concatenate([p[name] for p in parts]) for name in
            ("positions", "forces", "potential_energy", "bias_energy", "cvs", "time_ps", "phi", "psi", "replica")}
    n = len(data["positions"])
    biased = parts[0]["bias_grid"].size > 0
    if biased:
        # Each replica's frames are reweighted with its own final bias, then the replicas pooled
        # with equal total weight per replica.
        weights = []
        for part in parts:
            limits = [(lo, hi, bool(periodic)) for lo, hi, periodic in part["bias_limits"]]
            weights.append(final_bias_weights(part["cvs"], part["bias_grid"], limits, kT=kT,
                                              discard_fraction=discard))
        data["weights"] = np.concatenate(weights) / len(parts)
    else:
        data["weights"] = np.full(n, 1.0 / n)
    data.update(kT=np.float64(kT), atom_indices=np.asarray(mapping.atom_indices),
                bead_names=np.asarray(mapping.bead_names), resolution=np.str_(resolution),
                run=np.str_(run), peptide=np.str_(peptide), biased=np.bool_(biased),
                forces_valid=np.bool_(np.isfinite(data["forces"]).all()))
    return data


def _mapped_forces(forces: np.ndarray, mapping, constraints: str) -> np.ndarray:
    """Mapped forces, float32: the aggregated force map (:func:`cgbench.resolutions.aggregate_forces`);
    NaN where no force map exists (``all_atom`` with bonds to hydrogen constrained: both ends of a
    constraint are beads, see :func:`cgbench.resolutions.map_forces`)."""
    from cgbench.resolutions import aggregate_forces

    if constraints == "h_bonds" and mapping.resolution == "all_atom":
        return np.full((len(forces), mapping.n_beads, 3), np.nan, np.float32)
    return np.asarray(aggregate_forces(forces, mapping), np.float32)


def write_dataset(data: dict, path: str | Path) -> Path:
    """Write ``data`` (from :func:`build_dataset`) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, **data)
    return path


def load_dataset(path: str | Path) -> dict:
    """A dataset written by :func:`write_dataset` (arrays; strings as ``str``)."""
    with np.load(path) as f:
        out = {name: f[name] for name in f.files}
    for name in ("resolution", "run", "peptide"):
        out[name] = str(out[name])
    out["kT"] = float(out["kT"])
    out["biased"] = bool(out["biased"])
    # Datasets written before the flag existed: derive it from the forces.
    out["forces_valid"] = bool(out["forces_valid"]) if "forces_valid" in out else bool(np.isfinite(out["forces"]).all())
    return out
