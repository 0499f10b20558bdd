"""Check learned PMFs: CG MD against the reference MD (peptides), exact PMF (Müller-Brown); table, figures.

- :func:`validate_peptide_pmf`: CG MD with the PMF (:func:`cgbench.cg_md.run_cg_md`), ``B``
  replicas started from frames drawn (by weight) from the PMF's own training run, then the JS
  divergence of every residue's (φ, ψ) histogram against the reference run (the unbiased MD of the
  PMF environment, all of it, uniform weights) and the basin populations of both
  (:mod:`cgbench.diagnostics`). Writes ``cg_md.npz`` (φ, ψ, replica, time) and ``validation.json``.
- :func:`validate_muller_brown_pmf`: the learned U(x) against the exact PMF by quadrature over y,
  as CG-BG's PMF error (:func:`cgbench.muller_brown.pmf_error`, kT²) on 100 bins over the
  populated range (exact F within :data:`MULLER_BROWN_POPULATED_KT` of its minimum). Writes
  ``validation.json`` and the curves.
- :func:`write_pmf_table`: ``results/tables/pmf.csv|md`` (+ provenance), one row per PMF.
- :func:`peptide_pmf_figure`, :func:`muller_brown_pmf_figure`: free energy along φ and ψ from CG
  MD vs the reference; Müller-Brown's learned vs exact PMF.

Units: kJ/mol for peptide free energies (kT printed alongside), kT for Müller-Brown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pandas as pd

from cgbench.atomic import atomic_savez, atomic_write_json

log = logging.getLogger(__name__)

#: Columns of ``pmf.csv``.
TABLE_COLUMNS = ["system", "resolution", "data", "train_frames", "simulated_ns", "validation_force_rmse",
                 "force_floor_rmse", "cg_md_js", "pmf_error", "phi_positive", "phi_positive_reference",
                 "cg_md_ns", "dropped_replicas", "epochs", "training_s", "validation_s"]


def start_frames(dataset: dict, n: int, *, seed: int) -> np.ndarray:
    """``n`` configurations ``(n, beads, 3)`` drawn by weight (with replacement) from a dataset."""
    w = np.asarray(dataset["weights"], np.float64)
    rng = np.random.default_rng(seed)
    index = rng.choice(len(w), size=n, replace=True, p=w / w.sum())
    return np.asarray(dataset["positions"])[index]


def validate_peptide_pmf(model_path: str | Path, start_dataset: dict, reference_dataset: dict, mapping, *,
                         spec: dict, temperature: float, seed: int, out: str | Path, progress: bool = True) -> dict:
    """CG MD with a learned PMF, compared with the reference MD (module docstring).

    Args:
        model_path: ``model.eqx`` of :func:`cgbench.pmf_training.train_peptide_pmf`.
        start_dataset: Dataset the replicas start from (the PMF's training run).
        reference_dataset: Dataset of the reference (unbiased) MD, same resolution.
        mapping: :class:`cgbench.resolutions.CGMapping` of the resolution.
        spec: Config block ``pmf.cg_md`` (``replicas``, ``timestep`` per resolution (fs),
            ``friction`` 1/ps, ``steps``, ``report_interval``, ``equilibration_steps``).
        temperature: K.
        seed: Of start frames and dynamics.
        out: Folder for ``cg_md.npz`` and ``validation.json``.

    Returns:
        The validation summary (``validation.json``): ``cg_md_js`` (mean over residues), ``js``
        per residue, ``populations`` / ``populations_reference`` per residue (basin → value),
        ``dropped_replicas``, ``cg_md_ns``, ``ns_per_day``, ``validation_s``.
    """
    from cgbench.cg_md import bead_masses, dihedral_js, run_cg_md
    from cgbench.diagnostics import BASINS, assign_basins, basin_populations
    from cgbench.pmf import load_pmf
    from cgbench.resolutions import phi_psi

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = load_pmf(model_path)
    start = start_frames(start_dataset, spec["replicas"], seed=seed).astype(np.float32)
    timestep = spec["timestep"][mapping.resolution]
    result = run_cg_md(model, start, masses=bead_masses(mapping), temperature=temperature, timestep_fs=timestep,
                       friction=spec["friction"], steps=spec["steps"], report_interval=spec["report_interval"],
                       equilibration_steps=spec["equilibration_steps"], key=jr.key(seed), progress=progress)
    if len(result["positions"]) == 0:
        raise RuntimeError(f"CG MD with {model_path}: every replica became non-finite")
    phi, psi = (np.asarray(a) for a in phi_psi(result["positions"], mapping))
    ref_phi, ref_psi = np.asarray(reference_dataset["phi"]), np.asarray(reference_dataset["psi"])
    ref_w = np.asarray(reference_dataset["weights"], np.float64)
    names = list(BASINS)
    js, pops, ref_pops = [], [], []
    for r in range(phi.shape[1]):
        js.append(dihedral_js(phi[:, r], psi[:, r], ref_phi[:, r], ref_psi[:, r], reference_weights=ref_w))
        p, _ = basin_populations(assign_basins(phi[:, r], psi[:, r]), replica=result["replica"],
                                 n_blocks=2)
        q, _ = basin_populations(assign_basins(ref_phi[:, r], ref_psi[:, r]), ref_w,
                                 replica=reference_dataset["replica"], n_blocks=2)
        pops.append(dict(zip(names, map(float, p))))
        ref_pops.append(dict(zip(names, map(float, q))))
    atomic_savez(out / "cg_md.npz", phi=phi.astype(np.float32), psi=psi.astype(np.float32),
                 replica=result["replica"], time_ps=result["time_ps"])
    summary = {"cg_md_js": float(np.mean(js)), "js": js, "populations": pops, "populations_reference": ref_pops,
               "dropped_replicas": result["dropped_replicas"], "replicas": spec["replicas"],
               "cg_md_ns": result["simulated_ns"], "ns_per_day": result["ns_per_day"], "timestep_fs": timestep,
               "validation_s": result["wall_s"], "frames": int(len(phi)),
               "reference_frames": int(len(ref_phi)), "reference_run": str(reference_dataset.get("run", ""))}
    atomic_write_json(out / "validation.json", summary)
    log.info("CG MD %s: JS %.4f (per residue %s), %.3g ns at %.0f ns/day, %d replicas dropped", mapping.resolution,
             summary["cg_md_js"], ", ".join(f"{j:.4f}" for j in js), summary["cg_md_ns"], summary["ns_per_day"],
             summary["dropped_replicas"])
    return summary


#: Müller-Brown's populated range: exact PMF within this many kT of its minimum (x ∈ [14.0, 46.3]).
#: At 20 000 frames a bin of it holds a few frames or more; beyond it (10 kT: [8.8, 48.7]) the
#: learned PMF is an extrapolation, and a tail a few kT too low there dominated the error (0.4-0.8
#: kT² for models at 0.01-0.02 kT² on this range).
MULLER_BROWN_POPULATED_KT = 6.0


def muller_brown_curves(model_path: str | Path, *, bins: int = 100, cutoff: float = MULLER_BROWN_POPULATED_KT) -> dict:
    """Exact and learned Müller-Brown PMFs (kT) on the evaluation bins, and the PMF error."""
    from cgbench import muller_brown as mb
    from cgbench.pmf import load_pmf

    model, _ = load_pmf(model_path)
    edges = mb.evaluation_edges(n_bins=bins, cutoff=cutoff)
    centres = 0.5 * (edges[:-1] + edges[1:])
    exact_c = mb.exact_pmf(centres)
    learned = np.asarray(jax.vmap(model)(jnp.asarray(centres[:, None], jnp.float32)), np.float64)
    error = float(mb.pmf_error(edges, exact_c, learned))
    # Learned curve shifted to the exact one's weighted mean, for plotting.
    p = np.exp(-(exact_c - exact_c.min()))
    shift = np.sum(p * (exact_c - learned)) / p.sum()
    return {"x": centres, "exact": exact_c, "learned": learned + shift, "edges": edges, "pmf_error": error}


def validate_muller_brown_pmf(model_path: str | Path, *, out: str | Path) -> dict:
    """CG-BG's PMF error of a learned Müller-Brown PMF against the exact one (module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = muller_brown_curves(model_path)
    atomic_savez(out / "curves.npz", **{k: np.asarray(v) for k, v in curves.items()})
    summary = {"pmf_error": curves["pmf_error"], "range": [float(curves["edges"][0]), float(curves["edges"][-1])],
               "bins": int(len(curves["x"])), "populated_kT": MULLER_BROWN_POPULATED_KT}
    atomic_write_json(out / "validation.json", summary)
    log.info("Müller-Brown PMF error %.4f kT^2 over x in [%.1f, %.1f]", summary["pmf_error"], *summary["range"])
    return summary


def table_row(system: str, resolution: str, data: str, training: dict, validation: dict) -> dict:
    """One row of ``pmf.csv`` from a PMF's ``training.json`` and ``validation.json``."""
    pops = validation.get("populations", [{}])[0]
    ref = validation.get("populations_reference", [{}])[0]
    return {"system": system, "resolution": resolution, "data": data,
            "train_frames": training["train_frames"], "simulated_ns": training["data"].get("simulated_ns"),
            "validation_force_rmse": training["validation_force_rmse"],
            "force_floor_rmse": training["force_floor_rmse"], "cg_md_js": validation.get("cg_md_js"),
            "pmf_error": validation.get("pmf_error"), "phi_positive": pops.get("phi_positive"),
            "phi_positive_reference": ref.get("phi_positive"), "cg_md_ns": validation.get("cg_md_ns"),
            "dropped_replicas": validation.get("dropped_replicas"), "epochs": training["epochs"],
            "training_s": training["training_s"], "validation_s": validation.get("validation_s")}


def write_pmf_table(folders: list[str | Path], out: str | Path, config: dict) -> list[Path]:
    """Gather PMF folders (each with ``training.json``, ``validation/validation.json``) into a table.

    A folder's system, resolution and data are read from its path:
    ``…/<system>/pmf/<resolution>/<data>`` (peptides) or ``…/muller_brown/pmf/<data>``.
    """
    from cgbench.provenance import write_sidecar

    rows = []
    for folder in map(Path, folders):
        training = json.loads((folder / "training.json").read_text())
        validation = json.loads((folder / "validation" / "validation.json").read_text())
        if training["kind"] == "rbf":
            system, resolution = "muller_brown", "x"
        else:
            system, resolution = folder.parts[-4], folder.parts[-2]
        rows.append(table_row(system, resolution, folder.parts[-1], training, validation))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    md_path = out.with_suffix(".md")
    md_path.write_text(_markdown(table, config))
    for path in (out, md_path):
        write_sidecar(path, config, seed=config["seed"], rows=len(table))
    return [out, md_path]


def _markdown(table: pd.DataFrame, config: dict) -> str:
    env = config["pmf"]["environment"]
    lines = ["# PMFs by force matching", "",
             f"PMF_B (`biased`): {env}_metad; PMF_U (`unbiased`): {env}_unbiased cut to the biased run's "
             "length per replica. Force RMSE on held-out time blocks (kJ/mol/nm; kT/length for Müller-Brown) "
             "next to its estimated noise floor. JS: CG MD (φ, ψ) vs the reference MD "
             f"({env}_unbiased, all of it), mean over residues. PMF error: CG-BG's, kT², Müller-Brown "
             "against the exact PMF (target ≤ 0.05 for PMF_B).", ""]
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    lines.append(shown.to_markdown(index=False))
    return "\n".join(lines) + "\n"


def peptide_pmf_figure(peptide: str, runs: dict, reference_dataset: dict, path: str | Path, *, kT: float,
                       residue: int = 0) -> Path:
    """Free energy along φ and ψ (kJ/mol) of CG MD with each PMF against the reference MD.

    Args:
        peptide: Name, for the title.
        runs: ``{(resolution, data): cg_md.npz path}``.
        reference_dataset: Dataset of the reference MD (any resolution: φ, ψ, weights).
        path: Output ``.png``.
        kT: kJ/mol.
        residue: Which residue's (φ, ψ).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cgbench.diagnostics import free_energy_profile

    resolutions = sorted({r for r, _ in runs}, key=["core_beta", "heavy_atom", "all_atom"].index)
    sns.set_theme(style="ticks", context="paper")
    fig, axes = plt.subplots(len(resolutions), 2, figsize=(8, 2.6 * len(resolutions)), squeeze=False,
                             sharex=True, sharey=True)
    colours = {"biased": "tab:blue", "unbiased": "tab:orange"}
    for row, resolution in enumerate(resolutions):
        for col, angle in enumerate(("phi", "psi")):
            ax = axes[row, col]
            x, f = free_energy_profile(reference_dataset[angle][:, residue], reference_dataset["weights"], kT=kT)
            ax.plot(x, f, color="black", lw=2, label="reference MD")
            for data in ("biased", "unbiased"):
                if (resolution, data) in runs:
                    cg = np.load(runs[(resolution, data)])
                    x, f = free_energy_profile(cg[angle][:, residue], kT=kT)
                    ax.plot(x, f, color=colours[data], lw=1.3, label=f"CG MD, PMF_{data[0].upper()}")
            ax.set_title(f"{resolution}", fontsize=9)
            ax.set_xlabel(f"{'φ' if angle == 'phi' else 'ψ'} (rad)")
            if col == 0:
                ax.set_ylabel("F (kJ/mol)")
            ax.set_ylim(0, 12 * kT)
            ax.set_xlim(-np.pi, np.pi)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{peptide}: free energy from CG MD with learned PMFs (kT = {kT:.2f} kJ/mol)", fontsize=10)
    return save_figure(fig, path)


def muller_brown_pmf_figure(curves: dict, path: str | Path) -> Path:
    """Learned vs exact Müller-Brown PMF (kT). ``curves``: ``{data: curves.npz path}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="ticks", context="paper")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    colours = {"biased": "tab:blue", "unbiased": "tab:orange"}
    first = True
    for data, file in sorted(curves.items()):
        c = np.load(file)
        if first:
            ax.plot(c["x"], c["exact"] - c["exact"].min(), color="black", lw=2, label="exact (quadrature over y)")
            first = False
        ax.plot(c["x"], c["learned"] - c["exact"].min(), color=colours.get(data), lw=1.3,
                label=f"PMF_{data[0].upper()} (error {float(c['pmf_error']):.3f} kT²)")
    ax.set_xlabel("x")
    ax.set_ylabel("PMF (kT)")
    ax.set_title("Müller-Brown: learned vs exact PMF along x", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
