"""Figures of the synthetic targets, after the ECG paper (sections 3.1 and 3.2).

:func:`synthetic_figures` writes, into ``out_dir``, PNGs named ``{target}_<what>.png``:

- ``double_well_histograms``: 2-D histograms of (x1, x2) at β_target, NUTS and each ECG
  method (z = x1 from the flow at the last β, x2 from the exact conditional), over contour
  lines of the exact energy U(x1, x2).
- ``double_well_tempering``: for about four β of the ``ecg`` run, the predicted free energy
  −log q(z)/β next to the exact F(z), both shifted to minimum 0, and the densities q(z) and
  p_β(z) (normalised on the flow's support [−B, B]).
- ``gmm_2d_samples`` (any GMM with dim_z == 2): flow samples at the last β over contours
  of the exact log p(z), and beneath the two 1-D marginals, flow vs exact.
- ``gmm_10d_pairs`` (any GMM with dim_z > 2): samples in the planes (z0, z1), (z2, z3),
  (z4, z5) for each ECG method, mode centres marked; shows mode collapse without tempering.
- ``{target}_marginals``: every 1-D marginal of z at β_target: each method's last model,
  NUTS, and the exact marginal (from ``exact_marginal_bins`` on ``evaluation.bins`` bins).

and ``{target}.manifest.json`` (file names, captions, provenance). The synthetic targets
are dimensionless; energies are in kT at β = 1. Everything is drawn on
``matplotlib.figure.Figure`` objects (Agg canvas), so pyplot's global state is untouched.
Samples are drawn with keys derived from ``jax.random.key(config["seed"])`` (see
:func:`_model_key`), so the figures are reproducible.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from cgbench.ecg import load_models
from cgbench.provenance import record
from cgbench.report import synthetic_figure_kinds
from cgbench.tempering import METHOD_OF_SCHEDULE
from cgbench.targets import DoubleWell, GaussianMixture, SyntheticTarget, make_target

DPI = 120
MAX_SAMPLES = 20_000          # flow samples per model (min with evaluation.samples)
MAX_SCATTER = 4_000           # points drawn in a scatter panel
FIGURES_STREAM = 7919         # folded into the master key: figures' own random stream
METHOD_ORDER = tuple(METHOD_OF_SCHEDULE.values())
_PALETTE = sns.color_palette("colorblind")
METHOD_LABEL = {"ecg": "ECG (fixed tempering)", "ecg_adaptive": "ECG (adaptive tempering)",
                "ecg_no_tempering": "ECG (no tempering)"}
METHOD_COLOR = {"ecg": _PALETTE[0], "ecg_adaptive": _PALETTE[2], "ecg_no_tempering": _PALETTE[4]}
EXACT_COLOR, NUTS_COLOR = "black", _PALETTE[1]
F_MAX_SHOWN = 30.0            # kT: upper limit of the double-well free-energy panels (barrier ≈ 12 kT)


# ----------------------------------------------------------------------------- helpers

def _style():
    """seaborn whitegrid style and a readable font scale, as an rc_context."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
    return matplotlib.rc_context(rc)


def _label(method: str) -> str:
    return METHOD_LABEL.get(method, method)


def _color(method: str):
    return METHOD_COLOR.get(method, _PALETTE[4])


def _fmt_beta(beta: float) -> str:
    return f"{beta:.3g}"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _model_key(seed: int, method: str, index: int):
    """Key of the samples of model ``index`` of ``method``: independent of the other inputs."""
    key = jr.fold_in(jr.key(seed), FIGURES_STREAM)
    return jr.fold_in(jr.fold_in(key, zlib.crc32(method.encode()) & 0x7FFFFFFF), index)


@eqx.filter_jit
def _sample(flow, key, n: int):
    """n samples of the flow, (n, dim_z)."""
    return flow.sample(key, (n,))


@eqx.filter_jit
def _log_prob(flow, z):
    """log q(z) for z (n, dim_z) → (n,)."""
    return flow.log_prob(z)


@eqx.filter_jit
def _conditional(target: SyntheticTarget, z, beta, key):
    """One exact x ~ p_β(x | z) per row of z (n, dim_z) → (n, dim_x)."""
    keys = jr.split(key, z.shape[0])
    return jax.vmap(lambda zi, k: target.conditional_sample(zi, beta, key=k))(z, keys)


def _density(z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of 1-D samples as a density on ``edges`` (normalised by all samples)."""
    counts, _ = np.histogram(z, bins=edges)
    return counts / max(len(z), 1) / np.diff(edges)


def _zoom(edges: np.ndarray, densities: list[np.ndarray], rel: float = 1e-3) -> tuple[float, float]:
    """x-limits covering the bins where any density exceeds ``rel`` of its own maximum."""
    keep = np.zeros(len(edges) - 1, bool)
    for d in densities:
        if d is not None and np.max(d) > 0:
            keep |= d > rel * np.max(d)
    if not keep.any():
        return float(edges[0]), float(edges[-1])
    idx = np.flatnonzero(keep)
    lo, hi = max(idx[0] - 2, 0), min(idx[-1] + 3, len(edges) - 1)
    return float(edges[lo]), float(edges[hi])


def _mode_masses(target: SyntheticTarget, z: np.ndarray) -> np.ndarray:
    modes = np.asarray(jax.vmap(target.mode_index)(jnp.asarray(z)))
    return np.bincount(modes, minlength=len(target.mode_names)) / len(z)


class _Inputs:
    """Everything the figures share: target, config numbers, models, samples, NUTS.

    Attributes:
        target, name: the target and its ``targets:`` key.
        bound: B, half-width of the flow support [−B, B]^dim_z (dimensionless).
        beta_target: β of the reference (NUTS, exact marginals), 1/kT.
        n: flow samples per model.
        models: method → (index dict, list of flows), methods in :data:`METHOD_ORDER` first.
        last: method → samples (n, dim_z) of that method's last model (its largest β).
        nuts_z, nuts_x: NUTS samples (n_nuts, dim_z), (n_nuts, dim_x).
    """

    def __init__(self, name, model_dirs, nuts_path, config):
        self.name, self.config, self.seed = name, config, int(config["seed"])
        self.target = make_target(name, config["targets"][name])
        settings = config["ecg"][name]
        self.bound = float(settings["flow"]["interval"])
        self.beta_target = float(settings["tempering"]["beta_target"])
        self.bins = int(config["evaluation"]["bins"])
        self.n = int(min(config["evaluation"]["samples"], MAX_SAMPLES))
        order = [m for m in METHOD_ORDER if m in model_dirs] + [m for m in model_dirs if m not in METHOD_ORDER]
        self.models = {m: load_models(model_dirs[m]) for m in order}
        self.last = {m: self.samples(m, -1) for m in self.models}
        nuts = np.load(nuts_path)
        self.nuts_z, self.nuts_x = np.asarray(nuts["z"]), np.asarray(nuts["x"])
        self.nuts_beta = float(nuts["beta"])

    def key(self, method: str, position: int):
        """Sampling key of the model at ``position`` (Python indexing) in ``method``'s schedule."""
        entry = self.models[method][0]["models"][position]
        return _model_key(self.seed, method, entry["index"])

    def samples(self, method: str, position: int) -> np.ndarray:
        """n samples (n, dim_z) of the model at ``position`` in ``method``'s schedule."""
        flow = self.models[method][1][position]
        return np.asarray(_sample(flow, self.key(method, position), self.n))

    def last_beta(self, method: str) -> float:
        return float(self.models[method][0]["models"][-1]["beta"])

    @property
    def main_method(self) -> str | None:
        """The tempered method figures single out: ``ecg`` if present, else the first one."""
        return "ecg" if "ecg" in self.models else next(iter(self.models), None)

    def edges(self) -> np.ndarray:
        """``evaluation.bins`` equal bins on [−B, B]."""
        return np.linspace(-self.bound, self.bound, self.bins + 1)


# ----------------------------------------------------------------------------- double well

def double_well_histograms(inp: _Inputs, path: Path) -> tuple[Path, str]:
    """2-D histograms of (x1, x2) at β_target, NUTS and every method, over U contours.

    x1 = z from the last model, x2 ~ p_β(x2 | x1) exactly; colour: density (log scale,
    shared by all panels); contours: U(x1, x2) = min U + 1, 3, 5, … kT.
    """
    target: DoubleWell = inp.target
    beta = inp.beta_target
    t = np.linspace(-inp.bound, inp.bound, 2001)
    f = beta * target.free_energy(t)
    inside = t[f - f.min() < 16.0]
    x1_lim = (max(inside[0] - 0.3, -inp.bound), min(inside[-1] + 0.3, inp.bound))
    x2_half = 4.0 / np.sqrt(beta)
    edges1 = np.linspace(*x1_lim, 71)
    edges2 = np.linspace(-x2_half, x2_half, 61)

    panels = [("NUTS reference", inp.nuts_z[:, 0], inp.nuts_x[:, 0])]
    for m in inp.models:
        key = jr.fold_in(inp.key(m, -1), 1)      # x2 of the samples drawn with inp.key(m, -1)
        x2 = np.asarray(_conditional(target, jnp.asarray(inp.last[m]), jnp.float32(beta), key))
        panels.append((f"{_label(m)}, β = {_fmt_beta(inp.last_beta(m))}", inp.last[m][:, 0], x2[:, 0]))
    hists = [np.histogram2d(a, b, bins=(edges1, edges2), density=True)[0] for _, a, b in panels]
    positive = np.concatenate([h[h > 0] for h in hists]) if any((h > 0).any() for h in hists) else np.ones(1)
    top = positive.max()     # colour range: ≥ 2 decades (labelled), at most 4
    norm = LogNorm(vmin=float(np.clip(positive.min(), top * 1e-4, top * 1e-2)), vmax=top)

    g1, g2 = np.meshgrid(np.linspace(*x1_lim, 300), np.linspace(-x2_half, x2_half, 300), indexing="ij")
    u = target.free_energy(g1) + 0.5 * g2**2
    levels = u.min() + np.arange(1.0, 16.0, 2.0) / beta

    with _style():
        fig = Figure(figsize=(4.2 * len(panels) + 1.0, 4.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True, sharey=True))
        for ax, (title, _, _), h in zip(axes, panels, hists):
            mesh = ax.pcolormesh(edges1, edges2, np.where(h > 0, h, np.nan).T, norm=norm, cmap="mako_r",
                                 rasterized=True)
            ax.contour(g1, g2, u, levels=levels, colors="0.35", linewidths=0.7, linestyles="solid")
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel("x₁ (slow, z)")
            ax.grid(False)
        axes[0].set_ylabel("x₂ (fast, x)")
        cbar = fig.colorbar(mesh, ax=list(axes), label="density p(x₁, x₂)", shrink=0.9)
        cbar.ax.yaxis.set_minor_formatter(NullFormatter())
        fig.suptitle(f"{inp.name}: joint samples at β = {_fmt_beta(beta)} "
                     f"(contours: U every 2 kT from U_min + 1 kT)")
        out = _save(fig, path)
    caption = (f"2-D histograms of (x1, x2) at beta = {_fmt_beta(beta)}: NUTS reference and the last model "
               "of each ECG run (x1 from the flow, x2 from the exact conditional N(0, 1/beta)), log colour "
               "scale shared by all panels, over contours of the exact energy U(x1, x2) every 2 kT.")
    return out, caption


def _tempering_rows(n_models: int, rows: int = 4) -> list[int]:
    """Positions of about ``rows`` models: first, evenly spaced intermediate ones, last."""
    return sorted(set(np.round(np.linspace(0, n_models - 1, min(rows, n_models))).astype(int).tolist()))


def double_well_tempering(inp: _Inputs, path: Path) -> tuple[Path, str]:
    """Tempering panels of the main method: free energies (kT) and densities on [−B, B].

    Left: −log q(z)/β and the exact F(z) = −log p_β(z)/β + const, both minus their minimum
    on the grid (kT). Right: q(z) and the exact p_β(z) normalised on [−B, B].
    """
    target: DoubleWell = inp.target
    method = inp.main_method
    index, flows = inp.models[method]
    positions = _tempering_rows(len(flows))
    edge = np.linspace(-inp.bound, inp.bound, 802)
    grid = 0.5 * (edge[1:] + edge[:-1])                              # (801,) inside the support
    f_exact = np.asarray(target.free_energy(grid), float)

    with _style():
        fig = Figure(figsize=(10.0, 2.7 * len(positions) + 0.8), layout="constrained")
        axes = fig.subplots(len(positions), 2, sharex=True, squeeze=False)
        for row, pos in zip(axes, positions):
            beta = float(index["models"][pos]["beta"])
            log_q = np.asarray(_log_prob(flows[pos], jnp.asarray(grid[:, None], jnp.float32)), float)
            f_pred = np.where(np.isfinite(log_q), -log_q / beta, np.nan)
            f_pred -= np.nanmin(f_pred)
            f_ref = f_exact - f_exact.min()
            log_p = -beta * f_exact
            p_exact = np.exp(log_p - log_p.max())
            p_exact /= np.trapezoid(p_exact, grid)

            ax = row[0]
            ax.plot(grid, f_ref, color=EXACT_COLOR, ls="--", lw=1.5, label="exact F(z)")
            ax.plot(grid, f_pred, color=_color(method), lw=1.5, label="ECG  −log q(z)/β")
            ax.set_ylim(-0.05 * F_MAX_SHOWN, F_MAX_SHOWN)
            ax.set_ylabel("free energy [kT]")
            ax.set_title(f"β = {_fmt_beta(beta)}  (update {index['models'][pos]['updates']})",
                         fontsize="medium", loc="left")

            ax = row[1]
            ax.plot(grid, p_exact, color=EXACT_COLOR, ls="--", lw=1.5, label="exact p_β(z)")
            ax.plot(grid, np.exp(log_q), color=_color(method), lw=1.5, label="ECG  q(z)")
            ax.set_ylim(0, 1.15 * max(p_exact.max(), np.nanmax(np.exp(log_q))))
            ax.set_ylabel("density")
        for ax in axes[-1]:
            ax.set_xlabel("z = x₁")
        handles, labels = [], []
        for ax in axes[0]:
            h, lab = ax.get_legend_handles_labels()
            handles += h
            labels += lab
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
        fig.suptitle(f"{inp.name}: {_label(method)}, tempering β = "
                     f"{_fmt_beta(index['models'][0]['beta'])} → {_fmt_beta(index['models'][-1]['beta'])}")
        out = _save(fig, path)
    caption = (f"Tempering of {_label(method)} on the double well: for {len(positions)} of the "
               f"{len(flows)} saved beta values, left the predicted free energy -log q(z)/beta and the exact "
               f"F(z) (both shifted to minimum 0, kT, shown up to {F_MAX_SHOWN:g} kT), right the flow density "
               f"q(z) and the exact marginal p_beta(z) normalised on the flow support [-{inp.bound:g}, {inp.bound:g}].")
    return out, caption


# ----------------------------------------------------------------------------- gaussian mixtures

def _gmm_window(target: GaussianMixture, dims: tuple[int, int], pad: float) -> tuple[tuple, tuple]:
    """Axis limits around the mode centres in the plane ``dims``, ``pad`` beyond them."""
    m = np.asarray(target.means)[:, list(dims)]
    return tuple((float(m[:, i].min() - pad), float(m[:, i].max() + pad)) for i in range(2))


def gmm_2d_samples(inp: _Inputs, path: Path) -> tuple[Path, str]:
    """Flow samples (last β) over contours of the exact log p(z), and both 1-D marginals.

    Contours: log p(z) = max − r²/2 for r = 1 … 5 (σ from a centre). Marginals on
    ``evaluation.bins`` bins over [−B, B], as densities; exact from ``exact_marginal_bins``.
    """
    target: GaussianMixture = inp.target
    method = inp.main_method
    z = inp.last[method]
    beta = inp.last_beta(method)
    sd = float(np.sqrt(target.variance))
    xlim, ylim = _gmm_window(target, (0, 1), 6 * sd)
    gx, gy = np.linspace(*xlim, 300), np.linspace(*ylim, 300)
    mesh = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    log_p = np.asarray(jax.vmap(target.log_prob_z)(jnp.asarray(mesh, jnp.float32))).reshape(300, 300)
    levels = log_p.max() - 0.5 * np.arange(5, 0, -1) ** 2
    outside = np.mean((z[:, 0] < xlim[0]) | (z[:, 0] > xlim[1]) | (z[:, 1] < ylim[0]) | (z[:, 1] > ylim[1]))

    edges = inp.edges()
    exact = target.exact_marginal_bins(inp.beta_target, inp.bound, edges)
    with _style():
        fig = Figure(figsize=(8.5, 10.0), layout="constrained")
        axd = fig.subplot_mosaic([["s", "s"], ["m0", "m1"]], height_ratios=[2.3, 1.0])
        ax = axd["s"]
        ax.contour(gx, gy, log_p.T, levels=levels, colors="0.3", linewidths=0.8, linestyles="solid")
        pts = z[: MAX_SCATTER]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.35, color=_color(method), linewidths=0,
                   label=f"{_label(method)} ({len(pts)} of {len(z)} samples)", rasterized=True)
        ax.scatter(*np.asarray(target.means).T, marker="X", s=80, color="crimson", edgecolor="white",
                   label="mode centres")
        ax.set(xlim=xlim, ylim=ylim, xlabel="z₀", ylabel="z₁", aspect="equal")
        ax.set_title(f"flow samples at β = {_fmt_beta(beta)} over exact log p(z) "
                     f"(contours 1–5 σ; {100 * outside:.1f}% of samples outside the window)",
                     fontsize="medium")
        legend = ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
        legend.legend_handles[0].set_sizes([25])
        legend.legend_handles[0].set_alpha(1.0)
        for i, lim in enumerate((xlim, ylim)):
            ax = axd[f"m{i}"]
            ax.stairs(_density(z[:, i], edges), edges, fill=True, alpha=0.45, color=_color(method),
                      label=_label(method))
            if exact is not None:
                ax.stairs(exact[i] / np.diff(edges), edges, color=EXACT_COLOR, lw=1.5, ls="--",
                          label=f"exact (β = {_fmt_beta(inp.beta_target)})")
            ax.set(xlim=lim, xlabel=f"z{'₀₁'[i]}", ylabel="density" if i == 0 else None)
        axd["m1"].legend(loc="upper right", fontsize="small")
        fig.suptitle(f"{inp.name}: {_label(method)} at β = {_fmt_beta(beta)}")
        out = _save(fig, path)
    caption = (f"Samples of {_label(method)} at beta = {_fmt_beta(beta)} scattered over contours of the exact "
               "log p(z) (1 to 5 standard deviations from each centre, centres marked), and below the two "
               f"1-D marginals, flow histogram vs exact ({inp.bins} bins on [-{inp.bound:g}, {inp.bound:g}], "
               "zoomed to the modes).")
    return out, caption


def gmm_pairs(inp: _Inputs, path: Path) -> tuple[Path, str]:
    """Samples in the planes (z0, z1), (z2, z3), (z4, z5): rows = methods, mode centres marked.

    Each row's label gives the fraction of that method's samples nearest to each centre; a
    flow collapsed onto one mode shows a single cluster (mass ≈ 1 in one mode).
    """
    target: GaussianMixture = inp.target
    pairs = [(2 * k, 2 * k + 1) for k in range(min(3, target.dim_z // 2))]
    methods = list(inp.models)
    sd = float(np.sqrt(target.variance))
    means = np.asarray(target.means)
    with _style():
        fig = Figure(figsize=(4.0 * len(pairs) + 0.5, 3.9 * len(methods) + 0.8), layout="constrained")
        axes = fig.subplots(len(methods), len(pairs), squeeze=False)
        for row, m in zip(axes, methods):
            z = inp.last[m]
            masses = _mode_masses(target, z)
            pts = z[:MAX_SCATTER]
            for ax, (i, j) in zip(row, pairs):
                xlim, ylim = _gmm_window(target, (i, j), 8 * sd)
                ax.scatter(pts[:, i], pts[:, j], s=3, alpha=0.35, color=_color(m), linewidths=0,
                           rasterized=True)
                ax.scatter(means[:, i], means[:, j], marker="X", s=80, color="crimson", edgecolor="white")
                for k, c in enumerate(means):
                    ax.annotate(str(k), (c[i], c[j]), xytext=(6, 6), textcoords="offset points",
                                color="crimson", fontsize="small", fontweight="bold")
                ax.set(xlim=xlim, ylim=ylim, xlabel=f"z{i}", ylabel=f"z{j}")
            row[0].set_title(f"{_label(m)}, β = {_fmt_beta(inp.last_beta(m))}\nmode masses "
                             + ", ".join(f"{k}: {v:.2f}" for k, v in enumerate(masses)),
                             fontsize="medium", loc="left")
        fig.suptitle(f"{inp.name}: flow samples in coordinate pairs (× = mode centres, exact masses "
                     f"1/{len(means)} each)")
        out = _save(fig, path)
    caption = (f"Last-model samples of {', '.join(_label(m) for m in methods)} projected on the planes "
               + ", ".join(f"(z{i}, z{j})" for i, j in pairs)
               + "; crosses mark the mode centres and each row gives the fraction of samples nearest to "
               "each centre. Without tempering the flow collapses onto fewer modes.")
    return out, caption


# ----------------------------------------------------------------------------- every target

def marginals(inp: _Inputs, path: Path) -> tuple[Path, str]:
    """Every 1-D marginal of z at β_target: last model of each method, NUTS, exact.

    Densities on ``evaluation.bins`` equal bins over [−B, B] (exact: bin masses / width);
    each panel is zoomed to the bins holding mass.
    """
    dim = inp.target.dim_z
    edges = inp.edges()
    exact = inp.target.exact_marginal_bins(inp.beta_target, inp.bound, edges)
    ncols = min(dim, 5)
    nrows = -(-dim // ncols)
    with _style():
        fig = Figure(figsize=(max(3.2 * ncols, 6.0), 2.8 * nrows + 1.2), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= dim:
                ax.set_visible(False)
                continue
            curves = []
            for m, z in inp.last.items():
                d = _density(z[:, i], edges)
                ax.stairs(d, edges, fill=True, alpha=0.35, color=_color(m),
                          label=f"{_label(m)}, β = {_fmt_beta(inp.last_beta(m))}")
                curves.append(d)
            d = _density(inp.nuts_z[:, i], edges)
            ax.stairs(d, edges, color=NUTS_COLOR, lw=1.8, label=f"NUTS, β = {_fmt_beta(inp.nuts_beta)}")
            curves.append(d)
            if exact is not None:
                d = exact[i] / np.diff(edges)
                ax.stairs(d, edges, color=EXACT_COLOR, lw=1.5, ls="--",
                          label=f"exact, β = {_fmt_beta(inp.beta_target)}")
                curves.append(d)
            ax.set_xlim(*_zoom(edges, curves))
            ax.set_xlabel("z = x₁" if isinstance(inp.target, DoubleWell) else f"z{i}")
            if i % ncols == 0:
                ax.set_ylabel("density")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize="small")
        fig.suptitle(f"{inp.name}: 1-D marginals of z at β = {_fmt_beta(inp.beta_target)}")
        out = _save(fig, path)
    caption = (f"All {dim} 1-D marginals of z at beta = {_fmt_beta(inp.beta_target)}: histogram densities of "
               "the last model of each ECG run and of the NUTS samples"
               + (", and the exact marginal" if exact is not None else "")
               + f" ({inp.bins} bins on [-{inp.bound:g}, {inp.bound:g}], panels zoomed to where there is mass).")
    return out, caption


# ----------------------------------------------------------------------------- entry point

DRAW = {"histograms": double_well_histograms, "tempering": double_well_tempering,
        "samples": gmm_2d_samples, "pairs": gmm_pairs, "marginals": marginals}


def synthetic_figures(target_name: str, model_dirs: dict[str, Path], nuts_path: Path, out_dir: Path,
                      config: dict) -> list[Path]:
    """Write the figures of one synthetic target and their manifest.

    Args:
        target_name: key of ``config["targets"]`` (``double_well``, ``gmm_2d``, ``gmm_10d``, …).
        model_dirs: method (``ecg``, ``ecg_adaptive``, ``ecg_no_tempering``) → ECG training
            folder (``models.json`` + ``models/``). May be empty: then only the marginals
            figure (NUTS and exact) is drawn.
        nuts_path: NUTS ``.npz`` with ``z`` (n, dim_z), ``x`` (n, dim_x), ``chains``, ``beta``.
        out_dir: folder for ``{target}_<what>.png`` and ``{target}.manifest.json``.
        config: resolved config.

    Returns:
        The PNG paths followed by the manifest path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inp = _Inputs(target_name, {m: Path(p) for m, p in model_dirs.items()}, Path(nuts_path), config)
    # The same list the rules declare as outputs (cgbench.report, read when the workflow is parsed).
    kinds = synthetic_figure_kinds(target_name, config["targets"][target_name], bool(inp.models))
    jobs = [(what, DRAW[what]) for what in kinds]

    paths, entries = [], []
    for what, draw in jobs:
        path, caption = draw(inp, out_dir / f"{target_name}_{what}.png")
        paths.append(path)
        entries.append({"file": path.name, "caption": caption})
    manifest = out_dir / f"{target_name}.manifest.json"
    doc = {"target": target_name, "figures": entries,
           "provenance": record(config, seed=config["seed"], target=target_name,
                                models={m: str(p) for m, p in model_dirs.items()}, nuts=str(nuts_path),
                                flow_samples_per_model=inp.n)}
    manifest.write_text(json.dumps(doc, indent=1))
    return paths + [manifest]
