"""CG-BG's accuracy and timing tables and figures, with the published numbers beside ours.

- ``accuracy.csv|md``: one row per system, resolution, data, method, PMF and (φ, ψ) pair —
  JS divergence, PMF error ((kT)²) and ESS fraction with bootstrap standard deviations
  (:mod:`cgbench.reweighting`; values are direct estimates on all samples, CG-BG's tables print
  bootstrap means), and CG-BG's published values in ``published_*`` columns. Methods:
  ``cgbg-<representation>`` (proposals of a flow trained on the ``data`` source, reweighted with a
  PMF; ``pmf`` says which — the row with ``pmf == biased`` (:func:`cgbench.cgbg_stage.method_pmf`)
  is CG-BG's method, as in their code, the other is the simulation-free benchmark of PMF_U on the
  same proposals), ``flow-unweighted-<representation>`` and the implicit-solvent baselines
  ``obc1``/``obc2`` (unbiased MD scored against the explicit-water reference, no ESS).
- ``timing.csv|md``: per system, resolution, data and representation — flow training and (the
  method's, PMF_B) PMF training wall time, inference per 10⁴ proposals (sampling, log q, PMF energy), and the
  sampling efficiency that justifies a Boltzmann generator: effective samples per second
  (ESS × N / inference time) against the decorrelated samples per second of the reference MD
  (frames / integrated autocorrelation time of φ, ψ, per second of MD wall time), on the same
  machine; device and preset; CG-BG's published times beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cgbench.cgbg_stage import METRICS, method_pmf

#: CG-BG's published accuracy (project page; ../shared/reference/parameters.md), keyed by
#: (sequence, resolution, data, method kind): (JS, PMF error, ESS). Baselines: resolution "".
#: ``data`` is the flow's training data; every published CG-BG row reweights with PMF_B.
PUBLISHED_ACCURACY = {
    ("A", "heavy_atom", "unbiased", "cgbg"): (0.0048, 0.2005, 0.5112),
    ("A", "heavy_atom", "biased", "cgbg"): (0.0063, 0.2277, 0.4115),
    ("A", "core_beta", "unbiased", "cgbg"): (0.0052, 0.2210, 0.5528),
    ("A", "core_beta", "biased", "cgbg"): (0.0057, 0.2093, 0.4818),
    ("A", "", "unbiased", "obc1"): (0.0157, 0.3709, np.nan),
    ("A", "", "unbiased", "obc2"): (0.0182, 0.4028, np.nan),
    ("AAA", "heavy_atom", "unbiased", "cgbg"): (0.0056, 0.1957, 0.3201),
    ("AAA", "core_beta", "unbiased", "cgbg"): (0.0060, 0.2112, 0.4212),
    ("AAA", "", "unbiased", "obc2"): (0.0932, 1.0274, np.nan),
    ("AAAAAA", "core_beta", "unbiased", "cgbg"): (0.0100, 0.3646, 0.1231),
    ("AAAAAA", "", "unbiased", "obc2"): (0.1652, 1.8401, np.nan),
}

#: CG-BG's published timing of ala2 (hardware not stated): (training h, inference min per 10⁴).
PUBLISHED_TIMING = {"core_beta": (0.45, 0.95), "heavy_atom": (0.80, 3.78), "all_atom": (2.55, 14.91)}

ACCURACY_COLUMNS = ["system", "resolution", "data", "method", "pmf", "pair", *METRICS, "d_form_fraction", "samples",
                    "reference", "published_js", "published_pmf_error", "published_ess", "config_hash", "preset",
                    "seed", "device"]
TIMING_COLUMNS = ["system", "resolution", "data", "representation", "flow_training_s", "pmf_training_s",
                  "inference_s_per_1e4", "samples", "ess", "effective_samples_per_s", "md_decorrelated_per_s",
                  "efficiency_ratio", "published_training_h", "published_inference_min_per_1e4", "device",
                  "preset", "config_hash"]


def _provenance(folder: Path) -> dict:
    path = folder / "scores.json.provenance.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    return {"config_hash": meta.get("config_hash"), "preset": meta.get("preset"), "seed": meta.get("seed"),
            "device": (meta.get("platform") or {}).get("jax_backend")}


def _published(sequence: str | None, resolution: str, data: str, method: str) -> dict:
    kind = method.split("-")[0]
    key = (sequence, "" if kind in ("obc1", "obc2") else resolution, data, kind)
    js, err, ess = PUBLISHED_ACCURACY.get(key, (np.nan, np.nan, np.nan))
    return {"published_js": js, "published_pmf_error": err, "published_ess": ess}


def baseline_rows(peptide: str, datasets: dict, *, bootstrap: int, seed: int, block: int = 10) -> list[dict]:
    """Rows of the implicit-solvent baselines: each ``{solvent: dataset}`` but ``explicit`` scored against
    ``explicit`` (unbiased MD, all pairs), block bootstrap over frames (``block`` frames, correlated MD)."""
    from cgbench.reweighting import score_histograms

    reference = datasets["explicit"]
    rows = []
    for solvent, data in datasets.items():
        if solvent == "explicit":
            continue
        scores = score_histograms(data["phi"], data["psi"], reference["phi"], reference["psi"],
                                  weights=data["weights"], reference_weights=reference["weights"],
                                  bootstrap=bootstrap, seed=seed, block=block, reference_block=block)
        for pair in range(len(np.atleast_1d(scores.js))):
            rows.append({"system": peptide, "resolution": "", "data": "unbiased", "method": solvent, "pmf": "",
                         "pair": pair, "js": float(scores.js[pair]), "js_unc": float(scores.js_unc[pair]),
                         "pmf_error": float(scores.pmf_error[pair]),
                         "pmf_error_unc": float(scores.pmf_error_unc[pair]), "ess": np.nan, "ess_unc": np.nan,
                         "samples": int(len(data["phi"])), "reference": "explicit_unbiased"})
    return rows


def _markdown_table(table: pd.DataFrame, columns: list[str]) -> str:
    shown = table[columns].copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return shown.to_markdown(index=False)


def _with_unc(table: pd.DataFrame, name: str) -> pd.Series:
    return [("" if pd.isna(v) else f"{v:.4g} ± {u:.2g}") for v, u in zip(table[name], table[f"{name}_unc"])]


def accuracy_table(folders: list[str | Path], *, baselines: list[dict], config: dict) -> pd.DataFrame:
    """Rows of every ``scores.json`` in ``folders`` plus ``baselines``, with the published numbers."""
    sequences = {name: entry["sequence"] for name, entry in config["peptides"].items()}
    method = method_pmf(config["pmf"]["data"])
    reference_run = f"{config['pmf']['environment']}_unbiased"
    rows = []
    for folder in map(Path, folders):
        scores = json.loads((folder / "scores.json").read_text())
        prov = _provenance(folder)
        for row in scores["rows"]:
            ref = "exact" if row["system"] == "muller_brown" else reference_run
            rows.append({**row, "reference": ref, **prov})
    for row in baselines:
        rows.append({**row, "config_hash": None, "preset": config.get("preset"), "seed": config["seed"], "device": ""})
    for row in rows:
        row.update(_published(sequences.get(row["system"]), row["resolution"], row["data"], row["method"])
                   if row.get("pmf", "") in ("", method) else
                   {"published_js": np.nan, "published_pmf_error": np.nan, "published_ess": np.nan})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def md_efficiency(reference: dict, provenance_paths: list[str | Path]) -> dict:
    """Decorrelated (φ, ψ) samples per second of wall time of the reference MD on this machine."""
    from cgbench.reweighting import decorrelated_samples

    wall = sum(json.loads(Path(p).read_text())["wall_s"] for p in provenance_paths)
    samples = decorrelated_samples(reference["phi"], reference["psi"], replica=reference["replica"])
    return {"md_decorrelated": samples, "md_wall_s": wall, "md_decorrelated_per_s": samples / wall if wall else np.nan}


def timing_table(folders: list[str | Path], accuracy: pd.DataFrame, *, pmf_folders: list[str | Path],
                 md: dict, config: dict) -> pd.DataFrame:
    """Rows of every ``scores.json``'s timing, with the training time and ESS of the method's PMF
    (:func:`cgbench.cgbg_stage.method_pmf`: PMF_B, whatever data the flow learnt from) and MD efficiency."""
    pmf_time = {}
    for folder in map(Path, pmf_folders):
        training = json.loads((folder / "training.json").read_text())
        system = "muller_brown" if training.get("kind") == "rbf" else folder.parts[-4]
        resolution = "x" if system == "muller_brown" else folder.parts[-2]
        pmf_time[(system, resolution, folder.parts[-1])] = training["training_s"]
    method_pmf_name = method_pmf(config["pmf"]["data"])
    own = accuracy[(accuracy["pmf"] == method_pmf_name) & (accuracy["pair"] == 0)]
    rows = []
    for folder in map(Path, folders):
        scores = json.loads((folder / "scores.json").read_text())
        prov = _provenance(folder)
        for t in scores["timing"]:
            method = "cgbg" if t["representation"] == "x" else f"cgbg-{t['representation']}"
            match = own[(own["system"] == t["system"]) & (own["resolution"] == t["resolution"])
                        & (own["data"] == t["data"]) & (own["method"] == method)]
            ess = float(match["ess"].iloc[0]) if len(match) else np.nan
            per_1e4 = t["inference_s"] * 1e4 / t["inference_samples"]
            effective = ess * t["inference_samples"] / t["inference_s"]
            md_rate = md.get(t["system"], {}).get("md_decorrelated_per_s", np.nan)
            published = PUBLISHED_TIMING.get(t["resolution"], (np.nan, np.nan)) if t["system"] != "muller_brown" \
                else (np.nan, np.nan)
            rows.append({"system": t["system"], "resolution": t["resolution"], "data": t["data"],
                         "representation": t["representation"], "flow_training_s": t["flow_training_s"],
                         "pmf_training_s": pmf_time.get((t["system"], t["resolution"], method_pmf_name), np.nan),
                         "inference_s_per_1e4": per_1e4, "samples": t["samples"], "ess": ess,
                         "effective_samples_per_s": effective, "md_decorrelated_per_s": md_rate,
                         "efficiency_ratio": effective / md_rate if md_rate and np.isfinite(md_rate) else np.nan,
                         "published_training_h": published[0], "published_inference_min_per_1e4": published[1],
                         "device": prov["device"], "preset": prov["preset"], "config_hash": prov["config_hash"]})
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def write_cgbg_tables(folders: list[str | Path], *, pmf_folders: list[str | Path], baselines: list[str],
                      references: dict, md: list[str], out_dir: str | Path, config: dict) -> list[Path]:
    """Write ``accuracy.csv|md`` and ``timing.csv|md`` into ``out_dir`` (provenance sidecars beside).

    Args:
        folders: cgbg job folders (``scores.json``).
        pmf_folders: pmf-train folders (``training.json``).
        baselines: ``PEPTIDE:SOLVENT=dataset.npz`` of unbiased MD; ``explicit`` is the reference.
        references: ``{peptide: dataset.npz}`` of the reference MD (the timing's MD efficiency).
        md: ``PEPTIDE=frames.npz.provenance.json`` of each reference MD replica (wall time).
        out_dir: Tables folder.
        config: Resolved config.
    """
    from cgbench.datasets import load_dataset
    from cgbench.provenance import write_sidecar

    by_peptide: dict[str, dict] = {}
    for item in baselines:
        key, path = item.split("=", 1)
        peptide, solvent = key.split(":", 1)
        by_peptide.setdefault(peptide, {})[solvent] = load_dataset(path)
    baseline = [row for peptide, datasets in by_peptide.items()
                for row in baseline_rows(peptide, datasets, bootstrap=config["cgbg"]["bootstrap"], seed=config["seed"])]
    accuracy = accuracy_table(folders, baselines=baseline, config=config)
    md_paths: dict[str, list[str]] = {}
    for item in md:
        peptide, path = item.split("=", 1)
        md_paths.setdefault(peptide, []).append(path)
    efficiency = {p: md_efficiency(load_dataset(path), md_paths.get(p, [])) for p, path in references.items()}
    timing = timing_table(folders, accuracy, pmf_folders=pmf_folders, md=efficiency, config=config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "accuracy.csv", out_dir / "accuracy.md", out_dir / "timing.csv", out_dir / "timing.md"]
    accuracy.to_csv(paths[0], index=False)
    paths[1].write_text(_accuracy_markdown(accuracy, config))
    timing.to_csv(paths[2], index=False)
    paths[3].write_text(_timing_markdown(timing, efficiency, config))
    for path in paths:
        write_sidecar(path, config, seed=config["seed"], rows=len(accuracy if "accuracy" in path.name else timing))
    return paths


def _accuracy_markdown(table: pd.DataFrame, config: dict) -> str:
    shown = table.copy()
    for name in ("js", "pmf_error", "ess"):
        shown[name] = _with_unc(shown, name)
    env = config["pmf"]["environment"]
    lines = ["# CG-BG accuracy", "",
             f"Reference: {env}_unbiased MD (Müller-Brown: the exact marginal of x; baselines obc1/obc2: "
             "explicit_unbiased). Values are direct estimates on all samples ± the standard deviation over "
             f"{config['cgbg']['bootstrap']} bootstrap resamples; CG-BG's published numbers "
             "(`published_*`) are bootstrap means over 500 and used explicit water at 10⁶ proposals. "
             "JS in nats, PMF error in kT², ESS a fraction of N (log-weights above the 99th percentile "
             "dropped, for the ESS and, as in CG-BG's code, for the histograms; `*_all_weights`: every "
             f"weight kept). `data`: the MD the flow learnt from; `pmf`: the PMF its proposals were reweighted "
             f"with — CG-BG's method is `pmf = {method_pmf(config['pmf']['data'])}` whatever the data (as in "
             "their code, and the published numbers stand beside those rows); the other PMF on the same "
             "proposals is the simulation-free PMF benchmark.", ""]
    columns = ["system", "resolution", "data", "method", "pmf", "pair", "js", "published_js", "pmf_error",
               "published_pmf_error", "ess", "published_ess", "js_all_weights", "pmf_error_all_weights",
               "d_form_fraction", "samples"]
    lines.append(_markdown_table(shown, columns))
    return "\n".join(lines) + "\n"


def _timing_markdown(table: pd.DataFrame, efficiency: dict, config: dict) -> str:
    lines = ["# CG-BG timing", "",
             "Wall seconds on this machine (device column). Inference: 10⁴ proposals with exact log q and "
             "their PMF energy, compiled, best of 3. Effective samples per second = ESS × N / inference "
             "time; MD: decorrelated samples (frames / max integrated autocorrelation time of cos, sin of φ, ψ) "
             "per second of the reference MD's wall time. CG-BG's published times (ala2, hardware not stated) "
             "in hours and minutes per 10⁴.", ""]
    for peptide, e in efficiency.items():
        lines.append(f"- {peptide} reference MD: {e['md_decorrelated']:.4g} decorrelated samples in "
                     f"{e['md_wall_s']:.4g} s → {e['md_decorrelated_per_s']:.4g} per s")
    lines += ["", _markdown_table(table, [c for c in TIMING_COLUMNS if c not in ("config_hash",)])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Figures.


def _folder_labels(folder: Path) -> tuple[str, str]:
    """(resolution, data) of ``…/cgbg/<resolution>/<data>``."""
    return folder.parts[-2], folder.parts[-1]


def peptide_figure(peptide: str, folders: list[str | Path], reference: dict, path: str | Path, *,
                   pair: int = 0) -> Path:
    """Ramachandran panels and free-energy profiles of a peptide's CG-BG proposals (pair ``pair``).

    Top: one row per (resolution, data): reference MD, then per representation the proposal and
    the proposals reweighted with the method's PMF (:func:`cgbench.cgbg_stage.method_pmf`, PMF_B).
    Bottom: per resolution, φ and ψ free energies (kJ/mol) — the reference, each data source and
    representation reweighted with the method's PMF, and the biased data's proposals reweighted
    with PMF_U (CG-BG's simulation-free benchmark: the same proposals under the other PMF).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cgbench.diagnostics import free_energy_profile, ramachandran_panel
    from cgbench.pmf_evaluation import save_figure
    from cgbench.reweighting import normalised_weights

    folders = [Path(f) for f in folders]
    runs = {_folder_labels(f): f for f in folders}
    representations = sorted({p.stem.removeprefix("proposals_") for f in folders for p in f.glob("proposals_*.npz")})
    resolutions = [r for r in ("core_beta", "heavy_atom", "all_atom") if any(k[0] == r for k in runs)]
    kT = float(reference["kT"])
    with np.load(next(folders[0].glob("proposals_*.npz"))) as first:
        pmfs = [name.removeprefix("log_w_") for name in first.files if name.startswith("log_w_")]
    method = method_pmf(pmfs)
    other = [p for p in pmfs if p != method]
    pmf_name = {"biased": "PMF_B", "unbiased": "PMF_U"}
    sns.set_theme(style="ticks", context="paper")
    n_cols = 1 + 2 * len(representations)
    n_rows = len(runs) + len(resolutions)
    fig = plt.figure(figsize=(3.0 * n_cols, 2.8 * n_rows))
    grid = fig.add_gridspec(n_rows, n_cols)
    ref_phi, ref_psi = reference["phi"][:, pair], reference["psi"][:, pair]
    for row, ((resolution, data), folder) in enumerate(sorted(runs.items())):
        ax = fig.add_subplot(grid[row, 0])
        ramachandran_panel(ax, ref_phi, ref_psi, reference["weights"])
        ax.set_title(f"reference MD ({resolution}, {data})", fontsize=8)
        for k, rep in enumerate(representations):
            proposals = np.load(folder / f"proposals_{rep}.npz")
            phi, psi = proposals["phi"][:, pair], proposals["psi"][:, pair]
            for j, (label, weights) in enumerate((("proposal", None),
                                                  (f"reweighted, {pmf_name[method]}",
                                                   normalised_weights(proposals[f"log_w_{method}"])))):
                ax = fig.add_subplot(grid[row, 1 + 2 * k + j])
                ramachandran_panel(ax, phi, psi, weights)
                ax.set_title(f"{rep}: {label}", fontsize=8)
    colours = {"cartesian": "tab:green", "internal": "tab:blue"}
    for i, resolution in enumerate(resolutions):
        for j, angle in enumerate(("phi", "psi")):
            ax = fig.add_subplot(grid[len(runs) + i, j * (n_cols // 2): (j + 1) * (n_cols // 2)])
            x, f = free_energy_profile(reference[angle][:, pair], reference["weights"], kT=kT)
            ax.plot(x, f, color="black", lw=2, label="reference MD")
            for data, style in (("biased", "-"), ("unbiased", "--")):
                folder = runs.get((resolution, data))
                if folder is None:
                    continue
                for rep in representations:
                    proposals = np.load(folder / f"proposals_{rep}.npz")
                    weights = normalised_weights(proposals[f"log_w_{method}"])
                    x, f = free_energy_profile(proposals[angle][:, pair], weights, kT=kT)
                    ax.plot(x, f, style, color=colours.get(rep), lw=1.2,
                            label=f"{rep}, {data} flow + {pmf_name[method]}")
                proposals = np.load(folder / f"proposals_{representations[-1]}.npz")
                if data == "biased" and other:
                    weights = normalised_weights(proposals[f"log_w_{other[0]}"])
                    x, f = free_energy_profile(proposals[angle][:, pair], weights, kT=kT)
                    ax.plot(x, f, ":", color="tab:red", lw=1.5,
                            label=f"{representations[-1]}, biased flow + {pmf_name[other[0]]} (simulation-free)")
            ax.set(xlim=(-np.pi, np.pi), ylim=(0, 12 * kT), xlabel=f"{'φ' if angle == 'phi' else 'ψ'} (rad)",
                   ylabel="F (kJ/mol)", title=resolution)
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"{peptide}: CG-BG proposals and reweighting (pair {pair}, kT = {kT:.2f} kJ/mol)", fontsize=10)
    return save_figure(fig, path)


def cost_figure(accuracy_csv: str | Path, timing_csv: str | Path, path: str | Path) -> Path:
    """Accuracy against cost across resolutions: JS of CG-BG against inference time per 10⁴ and
    against effective samples per second, per representation and data (peptides, pair 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker
    import seaborn as sns

    from cgbench.pmf_evaluation import save_figure

    accuracy = pd.read_csv(accuracy_csv)
    timing = pd.read_csv(timing_csv)
    timing = timing[timing["system"] != "muller_brown"].copy()
    pmfs = accuracy["pmf"].dropna().unique()
    method = method_pmf(pmfs) if len(pmfs) else None
    own = accuracy[(accuracy["pmf"] == method) & (accuracy["pair"] == 0)
                   & accuracy["method"].str.startswith("cgbg-")].copy()
    own["representation"] = own["method"].str.removeprefix("cgbg-")
    merged = timing.merge(own[["system", "resolution", "data", "representation", "js", "js_unc"]],
                          on=["system", "resolution", "data", "representation"], how="inner")
    sns.set_theme(style="ticks", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.5))
    if len(merged):
        for ax, x, label in ((axes[0], "inference_s_per_1e4", "inference per 10⁴ proposals (s)"),
                             (axes[1], "effective_samples_per_s", "effective samples per s")):
            sns.scatterplot(data=merged, x=x, y="js", hue="resolution", style="representation", size="data",
                            sizes={"biased": 60, "unbiased": 30}, ax=ax)
            ax.errorbar(merged[x], merged["js"], yerr=merged["js_unc"], fmt="none", ecolor="grey", lw=0.8)
            ax.set(xscale="log", xlabel=label, ylabel="JS divergence (nats)")
        md_rate = timing["md_decorrelated_per_s"].dropna()
        if len(md_rate):
            axes[1].axvline(float(md_rate.iloc[0]), color="black", ls="--", lw=1, label="reference MD")
        axes[0].get_legend().remove()   # one legend, outside the data
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        for ax in axes:
            # Plain numbers (1, 2, 0.1), not 2 × 10⁰; an axis spanning under a decade labels its
            # minor ticks too, or it would show one label or none.
            low, high = ax.get_xlim()
            ax.set_xlim(low / 1.3, high * 1.3)
            plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain if np.log10(high / low) < 1 else mticker.NullFormatter())
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no CG-BG peptide rows", ha="center", transform=ax.transAxes)
    fig.suptitle("CG-BG: accuracy against cost across CG resolutions", fontsize=10)
    return save_figure(fig, path)
