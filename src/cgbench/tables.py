"""Tables of the synthetic benchmarks (CSV for machines, Markdown for people).

- ``synthetic.csv`` / ``.md``: every measurement, one row each
  (target, method, beta, metric, value, uncertainty, updates, energy_evaluations, wall_s); the
  Markdown shows the rows at β_target side by side.
- ``tempering.csv`` / ``.md``: fixed vs adaptive (vs no) tempering per target — β steps,
  updates, energy evaluations and wall time to reach β_target, and the accuracy reached there
  (largest mode-mass error against exact, flow alone and reweighted; mean marginal JS; ESS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cgbench.provenance import write_sidecar
from cgbench.tempering import METHOD_OF_SCHEDULE

ECG_METHODS = tuple(METHOD_OF_SCHEDULE.values())


def _fmt(value: float, unc: float) -> str:
    if pd.isna(unc) or unc == 0:
        return f"{value:.4g}"
    return f"{value:.4g} ± {unc:.2g}"


def _final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at each target's β_target (the largest β evaluated for that target)."""
    top = table.groupby("target")["beta"].transform("max")
    return table[np.isclose(table["beta"], top)]


def tempering_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per target and ECG method: cost to reach β_target and the accuracy there."""
    final = _final_rows(table)
    out = []
    for (target, method), rows in final.groupby(["target", "method"], sort=False):
        if method not in ECG_METHODS:
            continue
        exact = final[(final.target == target) & (final.method == "exact")].set_index("metric")["value"]
        by_metric = rows.set_index("metric")
        masses = [m for m in by_metric.index if m.startswith("mass_") and not m.endswith("_reweighted")]
        known = [m for m in masses if m in exact.index]
        record = {
            "target": target, "method": method,
            "betas": int(table[(table.target == target) & (table.method == method)]["beta"].nunique()),
            "updates": int(rows["updates"].iloc[0]),
            "energy_evaluations": int(rows["energy_evaluations"].iloc[0]),
            "wall_s": float(rows["wall_s"].iloc[0]),
            "max_mode_mass_error": max((abs(by_metric.loc[m, "value"] - exact[m]) for m in known), default=np.nan),
            "max_mode_mass_error_reweighted": max(
                (abs(by_metric.loc[m + "_reweighted", "value"] - exact[m]) for m in known), default=np.nan),
            "min_mode_mass": min(by_metric.loc[m, "value"] for m in masses),
            "js_mean": by_metric["value"].get("js_mean", np.nan),
            "ess_fraction": by_metric.loc["ess_fraction", "value"],
        }
        out.append(record)
    return pd.DataFrame(out)


def _markdown_overview(final: pd.DataFrame) -> str:
    parts = []
    for target, rows in final.groupby("target", sort=False):
        rows = rows.assign(cell=[_fmt(v, u) for v, u in zip(rows["value"], rows["uncertainty"])])
        pivot = rows.pivot_table(index="metric", columns="method", values="cell", aggfunc="first")
        pivot = pivot[[m for m in ("exact", "nuts", *ECG_METHODS) if m in pivot.columns]]
        beta = rows["beta"].iloc[0]
        parts.append(f"### {target} at β = {beta:g}\n\n{pivot.fillna('').to_markdown()}\n")
    return "\n".join(parts)


def _verdicts(summary: pd.DataFrame) -> str:
    lines = []
    for target, rows in summary.groupby("target", sort=False):
        rows = rows.set_index("method")
        if {"ecg", "ecg_adaptive"} <= set(rows.index):
            f, a = rows.loc["ecg"], rows.loc["ecg_adaptive"]
            cheaper = "adaptive" if a["updates"] < f["updates"] else "fixed"
            lines.append(
                f"- {target}: fixed {f['updates']} updates over {f['betas']} β (max mode-mass error "
                f"{f['max_mode_mass_error']:.3g}), adaptive {a['updates']} updates over {a['betas']} β "
                f"({a['max_mode_mass_error']:.3g}) → fewer updates: **{cheaper}**.")
    return "\n".join(lines)


def write_synthetic_tables(inputs: list[Path], out_dir: Path, config: dict) -> list[Path]:
    """Gather per-target evaluation CSVs into the synthetic and tempering tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True)
    summary = tempering_summary(table)
    paths = [out_dir / "synthetic.csv", out_dir / "synthetic.md", out_dir / "tempering.csv",
             out_dir / "tempering.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(
        f"# Synthetic benchmarks (preset `{config['preset']}`)\n\n"
        "Values ± bootstrap standard deviation at β_target; every β is in `synthetic.csv`.\n\n"
        + _markdown_overview(_final_rows(table)))
    summary.to_csv(paths[2], index=False)
    paths[3].write_text(
        f"# Tempering schedules (preset `{config['preset']}`)\n\n"
        + summary.to_markdown(index=False, floatfmt=".4g") + "\n\n" + _verdicts(summary) + "\n")
    for p in paths:
        write_sidecar(p, config, seed=config["seed"])
    return paths
