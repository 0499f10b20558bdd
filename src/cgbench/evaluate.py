"""Evaluation of ECG models, NUTS and the exact references of a synthetic target.

Metrics (one table row each, with a bootstrap standard deviation as uncertainty):

- ``mass_<mode>``: fraction of flow samples in each mode (DW: ``mass_x1_positive`` …, GMM:
  nearest centre ``mass_mode_k``); ``mass_<mode>_reweighted``: the same with
  self-normalised importance weights log w = −βU(z, x) − log q(z) − log p_β(x | z), x drawn
  from the exact conditional.
- ``ess_fraction``: Kish (Σw)²/Σw² / N of those weights.
- ``js_z<i>``: Jensen–Shannon divergence (natural log) between the histogram of the i-th
  coordinate of z and the exact marginal bin masses, ``js_mean`` their mean.

NUTS rows use the chains' spread (std over chains / √chains) instead of a bootstrap, since
its samples are correlated.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pandas as pd

from cgbench.ecg import load_models
from cgbench.targets import SyntheticTarget

COLUMNS = ["target", "method", "beta", "metric", "value", "uncertainty", "updates",
           "energy_evaluations", "wall_s"]


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS divergence (nats) between bin masses p and q along the last axis (normalised here)."""
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # masked terms only
            return np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / np.where(b > 0, b, 1.0)), 0.0), -1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def kish_ess_fraction(log_w: np.ndarray) -> float:
    """Kish effective sample size (Σw)²/Σw² divided by N."""
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum() / len(w))


def _weighted_stats(modes, z_bins, weights, counts, n_modes, n_bins, dim_z):
    """Mode masses (flow, reweighted), ESS and marginal histograms for multiplicity ``counts``.

    ``weights`` are the importance weights up to a constant (exp(log w − max log w)).
    """
    mass = np.bincount(modes, weights=counts, minlength=n_modes) / counts.sum()
    w = counts * weights
    mass_rw = np.bincount(modes, weights=w, minlength=n_modes) / w.sum()
    ess = w.sum() ** 2 / (counts * weights**2).sum() / counts.sum()
    hist = np.stack([np.bincount(z_bins[:, i], weights=counts, minlength=n_bins)[:n_bins]
                     for i in range(dim_z)])
    return mass, mass_rw, ess, hist


@eqx.filter_jit
def _draw(flow, target, beta, key, n):
    flow_key, x_key = jr.split(key)
    z, log_q = flow.sample_and_log_prob(flow_key, (n,))
    x = jax.vmap(lambda zi, k: target.conditional_sample(zi, beta, key=k))(z, jr.split(x_key, n))
    log_w = (-beta * jax.vmap(target.energy)(z, x) - log_q
             - jax.vmap(lambda xi, zi: target.conditional_log_prob(xi, zi, beta))(x, z))
    modes = jax.vmap(target.mode_index)(z)
    return z, log_w, modes


def _bin_index(z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)


def evaluate_flow(target: SyntheticTarget, flow, beta: float, *, interval: float, samples: int,
                  bins: int, bootstrap: int, key) -> list[tuple[str, float, float]]:
    """(metric, value, uncertainty) for one flow at one β (see module docstring)."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).sum().item())
    z, log_w, modes = (np.asarray(a) for a in _draw(flow, target, jnp.float32(beta), key, samples))
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf).astype(float)
    edges = np.linspace(-interval, interval, bins + 1)
    z_bins = _bin_index(z, edges)
    names = target.mode_names
    args = (modes, z_bins, np.exp(log_w - log_w.max()))
    sizes = (len(names), bins, target.dim_z)
    point = _weighted_stats(*args, np.ones(samples), *sizes)
    boots = [_weighted_stats(*args, rng.multinomial(samples, np.full(samples, 1.0 / samples)).astype(float),
                             *sizes) for _ in range(bootstrap)]
    rows = []
    for k, name in enumerate(names):
        rows.append((f"mass_{name}", point[0][k], np.std([b[0][k] for b in boots])))
        rows.append((f"mass_{name}_reweighted", point[1][k], np.std([b[1][k] for b in boots])))
    rows.append(("ess_fraction", point[2], np.std([b[2] for b in boots])))
    exact = target.exact_marginal_bins(beta, interval, edges)
    if exact is not None:
        js = js_divergence(exact, point[3])
        js_boot = np.array([js_divergence(exact, b[3]) for b in boots])
        for i in range(target.dim_z):
            rows.append((f"js_z{i}", js[i], js_boot[:, i].std()))
        rows.append(("js_mean", js.mean(), js_boot.mean(1).std()))
    return [(m, float(v), float(u)) for m, v, u in rows]


def evaluate_nuts(target: SyntheticTarget, z: np.ndarray, chains: int, *, beta: float, interval: float,
                  bins: int) -> list[tuple[str, float, float]]:
    """Mode masses and marginal JS of NUTS samples z (chains·samples, dim_z), chain-wise errors."""
    per_chain = np.split(np.asarray(z), chains)
    edges = np.linspace(-interval, interval, bins + 1)
    exact = target.exact_marginal_bins(beta, interval, edges)
    mode_fn = jax.jit(jax.vmap(target.mode_index))

    def stats(zc):
        modes = np.asarray(mode_fn(jnp.asarray(zc)))
        mass = np.bincount(modes, minlength=len(target.mode_names)) / len(zc)
        hist = np.stack([np.bincount(_bin_index(zc[:, i], edges), minlength=bins) for i in range(zc.shape[1])])
        return mass, hist

    whole = stats(np.asarray(z))
    parts = [stats(zc) for zc in per_chain]
    scale = 1.0 / np.sqrt(chains)
    rows = [(f"mass_{name}", whole[0][k], np.std([p[0][k] for p in parts]) * scale)
            for k, name in enumerate(target.mode_names)]
    if exact is not None:
        js = js_divergence(exact, whole[1])
        js_parts = np.array([js_divergence(exact, p[1]) for p in parts])
        rows += [(f"js_z{i}", js[i], js_parts[:, i].std() * scale) for i in range(target.dim_z)]
        rows.append(("js_mean", js.mean(), js_parts.mean(1).std() * scale))
    return [(m, float(v), float(u)) for m, v, u in rows]


def evaluate_target(name: str, target: SyntheticTarget, model_dirs: dict[str, Path], nuts_path: Path,
                    config: dict) -> pd.DataFrame:
    """All rows for one target: exact, NUTS and every saved model of every ECG run.

    Args:
        name: target name (``targets:`` key).
        target: the target.
        model_dirs: method name (``ecg``, ``ecg_adaptive``, ``ecg_no_tempering``) → training folder.
        nuts_path: ``samples.npz`` of the NUTS reference.
        config: resolved config.
    """
    settings = config["ecg"][name]
    interval = settings["flow"]["interval"]
    beta_target = settings["tempering"]["beta_target"]
    ev = config["evaluation"]
    rows = []

    def add(method, beta, results, meta=None):
        meta = meta or {}
        for metric, value, unc in results:
            rows.append({"target": name, "method": method, "beta": beta, "metric": metric, "value": value,
                         "uncertainty": unc, "updates": meta.get("updates"),
                         "energy_evaluations": meta.get("energy_evaluations"), "wall_s": meta.get("wall_s")})

    betas = {beta_target}
    for method, folder in model_dirs.items():
        index, flows = load_models(folder)
        for m, flow in zip(index["models"], flows):
            betas.add(m["beta"])
            key = jr.fold_in(jr.fold_in(jr.key(config["seed"]), 2), m["index"])  # stream 2: evaluation
            add(method, m["beta"], evaluate_flow(target, flow, m["beta"], interval=interval,
                                                 samples=ev["samples"], bins=ev["bins"],
                                                 bootstrap=ev["bootstrap"], key=key), m)
    for beta in sorted(betas):
        masses = target.exact_mode_masses(beta, interval)
        if masses is not None:
            add("exact", beta, [(f"mass_{n}", float(v), 0.0) for n, v in zip(target.mode_names, masses)])
    nuts = np.load(nuts_path)
    meta = json.loads(Path(str(nuts_path) + ".provenance.json").read_text())
    add("nuts", beta_target, evaluate_nuts(target, nuts["z"], int(nuts["chains"]), beta=beta_target,
                                           interval=interval, bins=ev["bins"]),
        {"wall_s": meta["wall_s"], "energy_evaluations": meta.get("energy_evaluations")})
    return pd.DataFrame(rows, columns=COLUMNS)
