"""The simulations table: what each MD run (and the NUTS reference) sampled, and how well.

:func:`run_diagnostics` scores one run from its ``all_atom`` dataset (:mod:`cgbench.datasets`):
per residue of the sequence, the (φ, ψ) basin populations (importance-weighted for metadynamics)
with block errors, core-to-core φ transitions, frames, simulated ns and ns/day; it also draws the
run's dihedral figure. :func:`write_simulations_table` gathers the rows into
``results/tables/simulations.csv`` and a Markdown version that adds, for every environment with
both an unbiased and a metadynamics run, the difference of their populations in units of the
combined error bar (the check that reweighting recovers the unbiased ensemble), and the same for
the NUTS reference against unbiased MD in its implicit solvent.

Definitions of basins, errors and transitions: :mod:`cgbench.diagnostics`. Populations are
fractions; ns is the production time summed over replicas; ns/day is the mean over replicas.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cgbench.diagnostics import BASINS, assign_basins, basin_populations, dihedral_figure, phi_transitions
from cgbench.evaluate import kish_ess_fraction
from cgbench.md import run_environment, run_is_biased

COLUMNS = ["peptide", "environment", "kind", "residue", "replicas", "frames", "ns", "ns_per_day",
           "transitions", "ess_fraction"] + [f"{c}{s}" for b in BASINS for c, s in ((f"pop_{b}", ""),
                                                                                 (f"pop_{b}", "_err"))]


def diagnostics_rows(peptide: str, run: str, phi: np.ndarray, psi: np.ndarray, weights: np.ndarray,
                     replica: np.ndarray, *, blocks: int, ns: float, ns_per_day: float) -> list[dict]:
    """One row per residue. ``phi``/``psi`` (n_frames, n_residues) rad, ``weights`` (n_frames,)."""
    kind = "nuts" if run == "nuts" else run.split("_", 1)[1]
    environment = run_environment(run) if run != "nuts" else "nuts"
    with np.errstate(divide="ignore"):  # discarded frames have weight 0
        ess = kish_ess_fraction(np.log(weights))
    rows = []
    for r in range(phi.shape[1]):
        labels = assign_basins(phi[:, r], psi[:, r])
        pops, errs = basin_populations(labels, weights, replica=replica, n_blocks=blocks)
        row = {"peptide": peptide, "environment": environment, "kind": kind, "residue": r,
               "replicas": int(len(np.unique(replica))), "frames": int(len(labels)), "ns": ns,
               "ns_per_day": ns_per_day, "transitions": phi_transitions(phi[:, r], replica=replica),
               "ess_fraction": ess}
        for name, p, e in zip(BASINS, pops, errs):
            row[f"pop_{name}"], row[f"pop_{name}_err"] = float(p), float(e)
        rows.append(row)
    return rows


def run_diagnostics(peptide: str, run: str, dataset: Path, replica_dirs: list[Path], out: Path,
                    figure: Path, config: dict, *, environment: str | None = None) -> list[Path]:
    """Rows (CSV at ``out``) and figure of one MD run, or of the NUTS reference (``run='nuts'``,
    ``dataset`` a file with ``phi``, ``psi``, ``chain`` and ``environment`` its solvent)."""
    from cgbench.datasets import load_dataset
    from cgbench.provenance import write_sidecar

    if run == "nuts":
        with np.load(dataset) as f:
            phi, psi, replica = f["phi"], f["psi"], f["chain"]
        weights = np.full(len(phi), 1.0 / len(phi))
        time_ns = np.concatenate([np.arange((replica == c).sum()) for c in np.unique(replica)]) * 1.0
        ns, ns_per_day = float("nan"), float("nan")
    else:
        data = load_dataset(dataset)
        phi, psi, weights, replica = data["phi"], data["psi"], data["weights"], data["replica"]
        time_ns = data["time_ps"] * 1e-3
        records = [json.loads((Path(d) / "frames.npz.provenance.json").read_text()) for d in replica_dirs]
        ns = float(sum(r["ns"] for r in records))
        ns_per_day = float(np.mean([r["ns_per_day"] for r in records]))
    rows = diagnostics_rows(peptide, run, phi, psi, weights, replica, blocks=config["md"]["blocks"], ns=ns,
                            ns_per_day=ns_per_day)
    if run == "nuts":
        for row in rows:
            row["environment"] = environment or config["peptide_nuts"]["solvent"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out, index=False)
    runs = [{"label": f"{run} replica {c}" if run != "nuts" else f"NUTS chain {c}",
             "time_ns": time_ns[replica == c], "phi": phi[replica == c, 0], "psi": psi[replica == c, 0],
             "weights": weights[replica == c] if run != "nuts" and run_is_biased(run) else None}
            for c in np.unique(replica)]
    dihedral_figure(runs, figure, title=f"{peptide} {run}: φ, ψ of residue 0",
                    time_label="recorded NUTS state" if run == "nuts" else "time (ns)")
    write_sidecar(out, config, seed=config["seed"], peptide=peptide, run=run)
    write_sidecar(figure, config, seed=config["seed"], peptide=peptide, run=run)
    return [out, figure]


def _agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Reweighted metadynamics and NUTS (``kind``; populations in ``compared``) against unbiased MD
    in the same environment: per basin the difference and its size in combined error bars."""
    rows = []
    keys = ["peptide", "environment", "residue"]
    for key, group in table.groupby(keys):
        kinds = {k: g.iloc[0] for k, g in group.groupby("kind")}
        if "unbiased" not in kinds:
            continue
        u = kinds["unbiased"]
        for kind in ("metad", "nuts"):
            if kind not in kinds:
                continue
            m = kinds[kind]
            for basin in BASINS:
                diff = m[f"pop_{basin}"] - u[f"pop_{basin}"]
                sigma = float(np.hypot(m[f"pop_{basin}_err"], u[f"pop_{basin}_err"]))
                unvisited = [name for name, r in (("unbiased", u), (kind, m)) if r[f"pop_{basin}"] == 0]
                note = ""
                if abs(diff) < 1e-12:  # equal but for rounding (both 0 or 1)
                    diff, z = 0.0, 0.0
                elif unvisited:
                    # Blocks that never visit a basin all say 0 ± 0: that is no error bar.
                    z, note = float("nan"), f"never visited by {unvisited[0]}: no error bar there"
                else:
                    z = diff / sigma if sigma > 1e-12 else float("inf")
                rows.append({**dict(zip(keys, key)), "kind": kind, "basin": basin, "unbiased": u[f"pop_{basin}"],
                             "compared": m[f"pop_{basin}"], "difference": diff, "combined_error": sigma, "z": z,
                             "note": note})
    return pd.DataFrame(rows)


def write_simulations_table(inputs: list[Path], out: Path, config: dict) -> list[Path]:
    """``simulations.csv`` (one row per run and residue) and ``simulations.md`` beside it."""
    from cgbench.provenance import write_sidecar

    table = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True)
    table = table.sort_values(["peptide", "environment", "kind", "residue"]).reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    shown = table.copy()
    for basin in BASINS:
        shown[basin] = [f"{p:.3f} ± {e:.3f}" for p, e in zip(table[f"pop_{basin}"], table[f"pop_{basin}_err"])]
    shown = shown[["peptide", "environment", "kind", "residue", "replicas", "frames", "ns", "ns_per_day",
                   "transitions", "ess_fraction", *BASINS]]
    text = ["# Simulations", "",
            "Basin populations of (φ, ψ) per residue (± block error; metadynamics reweighted with its "
            "final bias), φ transitions counted core to core, ns summed over replicas, ns/day per replica.",
            "", shown.to_markdown(index=False, floatfmt=".3g"), ""]
    agreement = _agreement(table)
    if len(agreement):
        for kind, title in (("metad", "Reweighted metadynamics"), ("nuts", "NUTS")):
            part = agreement[agreement.kind == kind].drop(columns="kind").rename(columns={"compared": kind})
            if len(part):
                text += [f"## {title} against unbiased MD (same environment)", "",
                         "z = difference / combined error; |z| ≤ 2 agrees within the error bars. A basin one "
                         "run never visited has no error bar there (its blocks all give 0), so no z.", "",
                         part.to_markdown(index=False, floatfmt=".3g"), ""]
    md_path = out.with_suffix(".md")
    md_path.write_text("\n".join(text))
    for path in (out, md_path):
        write_sidecar(path, config, seed=config["seed"], inputs=[str(p) for p in inputs])
    return [out, md_path]
