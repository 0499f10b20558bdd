"""The data-free peptide results: ``results/tables/ecg_peptides.csv|md`` and their figures.

Inputs are the evaluation tables of :func:`cgbench.peptide_ecg.evaluate_models` (one per peptide ×
potential, long format: beta, metric, pair, value, uncertainty, reference_value, updates,
energy_evaluations, wall_s, provenance) with the ``samples/observables_beta_XXXX.npz`` beside them
(model and reference φ, ψ, Rg, RMSD). Figures, per peptide × potential:

- ``<peptide>_ecg_<potential>_ramachandran.png``: (φ, ψ) of the model (top) and the reference
  (bottom) at every scored β (ECG's figure 8);
- ``<peptide>_ecg_<potential>_rg_rmsd.png``: radius of gyration and RMSD to the minimised
  structure (heavy atoms), model against reference at every scored β (ECG's figure 9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: The check of the issue at β_target: JS at most this (nats).
JS_LIMIT = 0.05
#: ... and training at most this wall time (s): 4 hours.
WALL_LIMIT_S = 4 * 3600.0


def _value(rows: pd.DataFrame, metric: str, column: str = "value"):
    hit = rows[rows["metric"] == metric]
    return float(hit[column].iloc[0]) if len(hit) else np.nan


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per target × potential × β (first (φ, ψ) pair for the histogram metrics)."""
    out = []
    for (target, potential, beta), rows in table.groupby(["target", "potential", "beta"], sort=True):
        first = rows[(rows["pair"].isna()) | (rows["pair"] == rows["pair"].min())]
        out.append({
            "target": target, "potential": potential, "beta": beta,
            "js": _value(first, "js"), "js_unc": _value(first, "js", "uncertainty"),
            "pmf_error": _value(first, "pmf_error"),
            "basins_found": _value(first, "basins_found"), "basins_required": _value(first, "basins_required"),
            "rg_js": _value(rows, "rg_js"), "rmsd_js": _value(rows, "rmsd_js"),
            "d_form": _value(rows, "d_form_fraction"), "chain_acceptance": _value(rows, "chain_acceptance"),
            "updates": int(rows["updates"].iloc[0]), "energy_evaluations": int(rows["energy_evaluations"].iloc[0]),
            "wall_s": float(rows["wall_s"].iloc[0]),
        })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """The summary as Markdown, with the verdict of the issue's check at β_target."""
    brief = summary(table)
    lines = ["# Data-free coarse-graining of peptides (ECG)", "",
             "JS divergence and PMF error of (φ, ψ) against NUTS of the all-atom peptide at T/β; basins: "
             "reference basins with ≥ 1 % mass, found when the model gives ≥ 10 % of that mass; Rg and "
             "RMSD (heavy atoms, to the minimised structure): JS of their histograms. Training cost up to "
             "the model at that β.", "",
             "| target | potential | β | JS | PMF error | basins found | Rg JS | RMSD JS | D-form | updates "
             "| energy evaluations | wall s |", "|" + "---|" * 12]
    for row in brief.itertuples():
        lines.append(f"| {row.target} | {row.potential} | {row.beta:g} | {row.js:.4f} ± {row.js_unc:.4f} "
                     f"| {row.pmf_error:.3g} | {row.basins_found:.0f} / {row.basins_required:.0f} "
                     f"| {row.rg_js:.3f} | {row.rmsd_js:.3f} | {row.d_form:.3f} | {row.updates} "
                     f"| {row.energy_evaluations:.3g} | {row.wall_s:.0f} |")
    lines.append("")
    final = brief.loc[brief.groupby(["target", "potential"])["beta"].idxmax()]
    for row in final.itertuples():
        checks = {"every basin found": row.basins_found == row.basins_required,
                  f"JS ≤ {JS_LIMIT}": row.js <= JS_LIMIT,
                  "training ≤ 4 h": row.wall_s <= WALL_LIMIT_S}
        verdict = ", ".join(f"{name}: {'yes' if ok else 'no'}" for name, ok in checks.items())
        lines.append(f"- {row.target} / {row.potential} at β = {row.beta:g}: {verdict}.")
    provenance = table[["config_hash", "preset", "seed", "device"]].drop_duplicates()
    lines += ["", "Provenance: " + "; ".join(f"config {r.config_hash}, preset {r.preset}, seed {r.seed}, "
                                            f"device {r.device}" for r in provenance.itertuples()), ""]
    return "\n".join(lines)


def _observables(csv: Path) -> list[dict]:
    files = sorted((csv.parent / "samples").glob("observables_beta_*.npz"))
    out = []
    for path in files:
        with np.load(path) as data:
            out.append({k: data[k] for k in data.files})
    return sorted(out, key=lambda d: float(d["beta"]))


def _save(fig, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ramachandran_figure(observables: list[dict], title: str, path: Path) -> Path:
    """Model (top) and reference (bottom) (φ, ψ) of the first pair at every scored β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cgbench.diagnostics import ramachandran_panel

    n = max(len(observables), 1)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 8.2), squeeze=False)
    for k, obs in enumerate(observables):
        for row, who in enumerate(("model", "reference")):
            ramachandran_panel(axes[row, k], obs[f"{who}_phi"][:, 0], obs[f"{who}_psi"][:, 0], None)
            axes[row, k].set_title(f"{who}, β = {float(obs['beta']):g} ({len(obs[f'{who}_phi'])} samples)")
    return _save(fig, title, path)


def rg_rmsd_figure(observables: list[dict], title: str, path: Path, *, bins: int) -> Path:
    """Histograms of Rg and RMSD (nm), model (solid) against reference (dashed) per β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    colours = sns.color_palette("viridis", max(len(observables), 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name, label in zip(axes, ("rg", "rmsd"), ("radius of gyration (nm)", "RMSD to minimised (nm)")):
        for colour, obs in zip(colours, observables):
            edges = np.histogram_bin_edges(np.concatenate([obs[f"model_{name}"], obs[f"reference_{name}"]]), bins)
            beta = float(obs["beta"])
            ax.hist(obs[f"model_{name}"], edges, density=True, histtype="step", color=colour, lw=1.6,
                    label=f"model β = {beta:g}")
            ax.hist(obs[f"reference_{name}"], edges, density=True, histtype="step", color=colour, ls="--",
                    label=f"reference β = {beta:g}")
        ax.set(xlabel=label, ylabel="density")
    axes[1].legend(fontsize=7)
    return _save(fig, title, path)


def figure_paths(figures_dir, peptide: str, potential: str) -> tuple[Path, Path]:
    """Ramachandran and Rg/RMSD figure paths of one peptide × potential."""
    figures_dir = Path(figures_dir)
    return (figures_dir / f"{peptide}_ecg_{potential}_ramachandran.png",
            figures_dir / f"{peptide}_ecg_{potential}_rg_rmsd.png")


def write_ecg_peptide_outputs(inputs, out_dir, figures_dir, config: dict) -> list[Path]:
    """Write ``ecg_peptides.csv|md`` into ``out_dir`` and both figures per input into ``figures_dir``."""
    from cgbench.provenance import write_sidecar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [pd.read_csv(path) for path in inputs]
    table = pd.concat(tables, ignore_index=True)
    paths = [out_dir / "ecg_peptides.csv", out_dir / "ecg_peptides.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(markdown(table))
    for path in paths:
        write_sidecar(path, config, seed=config["seed"], inputs=[str(p) for p in inputs])
    bins = config["ecg_peptides"]["evaluation"]["bins"]
    for csv, rows in zip(inputs, tables):
        peptide, potential = rows["target"].iloc[0], rows["potential"].iloc[0]
        observables = _observables(Path(csv))
        title = f"{peptide}, data-free ECG on {potential}"
        rama, hist = figure_paths(figures_dir, peptide, potential)
        paths.append(ramachandran_figure(observables, title, rama))
        paths.append(rg_rmsd_figure(observables, title, hist, bins=bins))
        for figure in paths[-2:]:
            write_sidecar(figure, config, seed=config["seed"], inputs=[str(csv)])
    return paths
