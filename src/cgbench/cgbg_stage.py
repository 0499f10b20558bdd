"""One CG-BG job: train the flow proposals of a data source, sample, reweight with the PMFs, score.

For a peptide at a resolution and a data source — the MD the flow learns from (``biased``: the
metadynamics run, ``unbiased``: all of the unbiased run, which is also the reference, as in CG-BG's
code), strided by :func:`cgbench.pmf_training.select_training_frames` — :func:`run_peptide_cgbg`

1. trains a :class:`cgbench.cgbg.CGFlow` per representation (``cgbg.representations``) by maximum
   likelihood on the frames, unweighted (a proposal only has to cover the target; the biased
   data's wider coverage is the point), with :func:`cgbench.training.train_minibatches`
   (time-block validation split, early stopping, NaN skipping, checkpoint and bit-identical resume);
2. draws ``cgbg.samples`` proposals with their exact log q and evaluates every available PMF
   (PMF_B and PMF_U) on them: log w = −U/kT − log q. CG-BG's method reweights with
   :func:`method_pmf` (PMF_B) whatever data the flow learnt from; the same proposals under PMF_U are
   CG-BG's simulation-free benchmark of PMFs;
3. scores, against the reference MD of the environment, the proposals unweighted
   (``flow-unweighted-<representation>``) and reweighted (``cgbg-<representation>``) with CG-BG's
   metrics (:mod:`cgbench.reweighting`);
4. times inference: 10⁴ proposals with log q and the method PMF's energy, compiled, best of 3.

Outputs in the job's folder: ``<representation>/flow.eqx`` + ``flow.json``, ``history.csv``,
``training.json``; ``proposals_<representation>.npz`` (φ, ψ ``(N, pairs)``, log q, log w under
each PMF, D-form flags); ``scores.json`` (table rows and timings).

:func:`run_muller_brown_cgbg` does the same for Müller-Brown's x (a 1-D flow on standardised x),
scored against the exact marginal of x.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pandas as pd

from cgbench import cgbg
from cgbench.atomic import atomic_savez, atomic_write_bytes, atomic_write_json
from cgbench.checkpoint import remove_checkpoint
from cgbench.training import TrainingSettings, train_minibatches

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def method_pmf(available) -> str:
    """The PMF that CG-BG's method reweights its proposals with: ``biased`` (PMF_B) where there is one.

    CG-BG learn the PMF from rapidly converged (enhanced-sampling) data and label their table rows by
    the data the *flow* was trained on: every experiment of their code (``configs/experiment/*_b.yaml``
    and ``*_ub.yaml``, ala2, ala3, ala6 and Müller-Brown) loads PMF_B's parameters; PMF_U appears only
    in the simulation-free benchmark. With only unbiased data configured, PMF_U is the method's PMF.

    Args:
        available: Names of the PMFs there are (``biased``, ``unbiased``).
    """
    available = set(available)
    for data in ("biased", "unbiased"):
        if data in available:
            return data
    raise ValueError(f"CG-BG needs a biased or unbiased PMF, got {sorted(available)}")


def _nll(flow, u, w):
    """Weighted mean negative log-likelihood of a batch: −Σ w log q(u) / Σ w."""
    return -jnp.sum(w * flow.log_prob(u)) / jnp.sum(w)


_nll_jit = eqx.filter_jit(_nll)


def mean_nll(flow, u, w, *, chunk: int = 8192) -> float:
    """Weighted mean negative log-likelihood (nats per frame) of features ``u`` ``(N, d)``, in chunks."""
    total = 0.0
    for i in range(0, len(u), chunk):
        total += float(_nll_jit(flow, u[i:i + chunk], w[i:i + chunk])) * float(jnp.sum(w[i:i + chunk]))
    return total / float(jnp.sum(w))


def train_flow_on_features(flow, u: np.ndarray, replica: np.ndarray, *, settings: TrainingSettings, key,
                           workdir: str | Path, fingerprint: dict, weights: np.ndarray | None = None,
                           progress: bool = True, stop_after_epochs: int | None = None) -> dict:
    """(Weighted) maximum likelihood of a flowjax flow on features ``u`` ``(N, d)`` (all inside its box).

    Args:
        weights: ``(N,)`` frame weights (None: equal), rescaled here to mean 1.
        Others: as :func:`cgbench.training.train_minibatches`.

    Returns :func:`cgbench.training.train_minibatches`' result; losses are weighted mean negative
    log-likelihoods of u (nats per frame).
    """
    u = jnp.asarray(u)
    w = np.ones(len(u)) if weights is None else np.asarray(weights, np.float64)
    w = jnp.asarray(w / w.mean(), u.dtype)
    return train_minibatches(flow, _nll, (u, w), replica, validate=lambda f, frames: mean_nll(f, u[frames], w[frames]),
                             settings=settings, key=key, workdir=workdir, fingerprint=fingerprint,
                             progress=progress, stop_after_epochs=stop_after_epochs, name="flow")


# ---------------------------------------------------------------------------------------------
# Saving and loading flows.


def save_flow(path: str | Path, flow: cgbg.CGFlow, meta: dict) -> Path:
    """``flow.eqx`` (leaves) and ``flow.json`` (what rebuilds the skeleton, plus ``meta``)."""
    path = Path(path)
    coords = flow.coordinates
    skeleton = {"format": FORMAT_VERSION, "representation": coords.representation, "interval": coords.interval,
                "kind": list(coords.kind), "resolution": coords.mapping.resolution,
                "zmatrix": coords.zmatrix.to_json() if coords.zmatrix is not None else None}
    atomic_write_bytes(path, lambda f: eqx.tree_serialise_leaves(f, flow))
    atomic_write_json(path.with_suffix(".json"), {**skeleton, **meta})
    return path


def load_flow(path: str | Path, mapping) -> cgbg.CGFlow:
    """A :class:`cgbench.cgbg.CGFlow` saved by :func:`save_flow`; ``mapping`` of its beads."""
    from cgbench import internal_coordinates as ic

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: flow format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if meta["resolution"] != mapping.resolution:
        raise ValueError(f"{path}: a flow of {meta['resolution']}, not {mapping.resolution}")
    d = len(meta["kind"])
    zm = ic.ZMatrix.from_json(meta["zmatrix"]) if meta["zmatrix"] is not None else None
    coords = cgbg.FlowCoordinates(meta["representation"], jnp.zeros(d), jnp.ones(d),
                                  tuple(int(k) for k in meta["kind"]), float(meta["interval"]), zm, mapping)
    skeleton = cgbg.new_flow(coords, meta["flow"], key=jr.key(0))
    return eqx.tree_deserialise_leaves(path, skeleton)


# ---------------------------------------------------------------------------------------------
# Peptides.


def _inside(u: np.ndarray, interval: float) -> np.ndarray:
    return np.isfinite(u).all(1) & (np.abs(u) < interval).all(1)


def train_representation(data: dict, mapping, representation: str, *, spec: dict, key, out: Path,
                         progress: bool = True) -> tuple[cgbg.CGFlow, dict]:
    """Fit the coordinates and train one flow on a dataset's frames; write it to ``out``.

    A flow already in ``out`` from the same data, settings and key (its ``training.json``
    fingerprint) is loaded instead: a job killed after its first representation redoes only the rest.
    """
    init_key, train_key = jr.split(key)
    positions = np.asarray(data["positions"], np.float32)
    coords = cgbg.fit_coordinates(positions, mapping, representation, interval=spec["interval"])
    u = cgbg.features(coords, positions)
    inside = _inside(u, spec["interval"])
    if not inside.all():
        log.info("%s: %d of %d frames outside the flow's box (> %.1f sd) left out", representation,
                 int((~inside).sum()), len(u), spec["interval"])
    weights = np.asarray(data["weights"])[inside] if spec["weighted"] else None
    fingerprint = {"spec": spec, "frames": int(inside.sum()), "representation": representation,
                   "u_sum": float(u[inside].sum()), "w_sum": float(np.sum(weights)) if weights is not None else None,
                   "key": np.asarray(jr.key_data(key)).tolist()}
    done = out / "training.json"
    if done.exists() and (out / "flow.eqx").exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        log.info("%s: flow already trained in %s; loaded", representation, out)
        return load_flow(out / "flow.eqx", mapping), json.loads(done.read_text())
    flow = cgbg.new_flow(coords, spec["flow"], key=init_key)
    settings = TrainingSettings(**spec["training"])
    result = train_flow_on_features(flow.flow, u[inside], np.asarray(data["replica"])[inside], settings=settings,
                                    key=train_key, workdir=out, progress=progress, weights=weights,
                                    fingerprint=fingerprint)
    trained = cgbg.CGFlow(coords, result["model"])
    summary = {"fingerprint": fingerprint, "representation": representation, "dim": coords.dim,
               "train_frames": result["train_frames"],
               "validation_frames": result["validation_frames"], "outside_box": int((~inside).sum()),
               "epochs": result["epochs"], "best_epoch": result["best_epoch"],
               "stopped_early": result["stopped_early"], "validation_nll": result["validation_loss"],
               "training_s": result["wall_s"]}
    save_flow(out / "flow.eqx", trained, {"flow": spec["flow"], "training": summary})
    atomic_write_json(out / "training.json", summary)
    pd.DataFrame(result["history"]).to_csv(out / "history.csv", index=False)
    remove_checkpoint(out)
    return trained, summary


def propose(flow: cgbg.CGFlow, pmfs: dict, mapping, *, n: int, kT: float, key, chirality) -> dict:
    """n proposals of ``flow`` scored under every PMF: φ, ψ ``(n, pairs)``, log q, log w per PMF.

    Args:
        pmfs: ``{data: model}`` (models in kJ/mol).
        kT: kJ/mol; log w_data = −U_data/kT − log q.
        chirality: ``(residues,)`` L-form signs of the data (:func:`cgbench.cgbg.chirality_signs`).
    """
    from cgbench.reweighting import importance_log_weights
    from cgbench.resolutions import phi_psi

    positions, log_q = cgbg.sample_proposals(flow, n, key=key)
    phi, psi = phi_psi(positions, mapping)
    out = {"phi": np.asarray(phi, np.float32), "psi": np.asarray(psi, np.float32), "log_q": log_q,
           "d_form": cgbg.d_form(positions, mapping, chirality)}
    for data, model in pmfs.items():
        out[f"log_w_{data}"] = importance_log_weights(cgbg.pmf_energies(model, positions) / kT, log_q)
    return out


#: Metrics of an accuracy-table row (values are direct estimates, ``*_unc`` bootstrap standard deviations).
#: As in CG-BG's code, log-weights above the 99th percentile get weight 0 — for the ESS and for the
#: reweighted histogram; ``*_all_weights``: JS and PMF error of the histogram with every weight kept
#: (the drop empties bins wherever the proposal is much thinner than the target, and the PMF
#: error's 1e-10 fill makes each such bin cost ~(log p_b + 23)²).
METRICS = ("js", "js_unc", "pmf_error", "pmf_error_unc", "ess", "ess_unc", "js_all_weights",
           "pmf_error_all_weights")


def all_weight_metrics(phi, psi, log_w, reference_phi, reference_psi, reference_weights) -> list[dict]:
    """Direct JS and PMF error per (φ, ψ) pair of the reweighted histogram with no weight dropped."""
    from cgbench.cg_md import dihedral_histogram
    from cgbench.evaluate import js_divergence
    from cgbench.reweighting import normalised_weights, pmf_error

    w = normalised_weights(log_w, drop_quantile=None)
    out = []
    for j in range(np.shape(phi)[1]):
        p = dihedral_histogram(reference_phi[:, j], reference_psi[:, j], reference_weights).ravel()
        q = dihedral_histogram(phi[:, j], psi[:, j], w).ravel()
        out.append({"js_all_weights": float(js_divergence(p, q)), "pmf_error_all_weights": float(pmf_error(p, q))})
    return out


def _metrics(row: dict, prefix: str = "", all_weights: dict | None = None) -> dict:
    """The :data:`METRICS` of a :mod:`cgbench.reweighting` row (``proposal_*``: unweighted, no ESS)."""
    out = {"pair": int(row["pair"])}
    for name in METRICS:
        if name.endswith("_all_weights"):
            out[name] = (all_weights or {}).get(name, float(row[f"{prefix}{name.removesuffix('_all_weights')}"]))
        elif name.startswith("ess"):
            out[name] = float(row[name]) if not prefix else float("nan")
        else:
            out[name] = float(row[f"{prefix}{name}"])
    return out


def run_peptide_cgbg(dataset: dict, mapping, *, data: str, pmfs: dict, reference: dict, spec: dict,
                     training_frames: int, kT: float, seed: int, out: str | Path, system: str = "",
                     progress: bool = True) -> dict:
    """The CG-BG job of one peptide, resolution and data source (module docstring).

    Args:
        dataset: CG dataset of the MD run the flow learns from (the data source's).
        mapping: :class:`cgbench.resolutions.CGMapping` of its beads.
        data: ``biased`` or ``unbiased``: the data source, a label of the rows.
        pmfs: ``{data: model}`` of every PMF of this peptide and resolution (kJ/mol;
            :func:`cgbench.pmf.load_pmf`).
        reference: Dataset of the reference MD (φ, ψ, weights).
        spec: Config block ``cgbg``.
        training_frames: At most this many frames (``pmf.training_frames``: the PMF's frames).
        kT: kJ/mol.
        seed: Of the flows' initialisation, minibatch order and proposals.
        out: Job folder.

    Returns:
        The contents of ``scores.json``: ``rows`` (accuracy-table rows) and ``timing``.
    """
    from cgbench.pmf_training import select_training_frames
    from cgbench.reweighting import score_reweighting

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = select_training_frames(dataset, max_frames=training_frames)
    method = method_pmf(pmfs)
    chirality = cgbg.chirality_signs(frames["positions"], mapping)
    keys = jr.split(jr.key(seed), len(spec["representations"]))
    rows, timing = [], []
    base = {"system": system, "resolution": mapping.resolution, "data": data}
    for representation, key in zip(spec["representations"], keys):
        train_key, sample_key, time_key = jr.split(key, 3)
        flow, summary = train_representation(frames, mapping, representation, spec=spec, key=train_key,
                                             out=out / representation, progress=progress)
        proposals = propose(flow, pmfs, mapping, n=spec["samples"], kT=kT, key=sample_key, chirality=chirality)
        atomic_savez(out / f"proposals_{representation}.npz", **proposals)
        seconds = cgbg.inference_seconds(flow, pmfs[method], n=spec["inference_samples"], key=time_key)
        d_fraction = float(np.mean(proposals["d_form"]))
        log.info("%s: validation NLL %.3f, %.3g s per %d proposals with log q and PMF energy, D-form %.2g",
                 representation, summary["validation_nll"], seconds, spec["inference_samples"], d_fraction)
        timing.append({**base, "representation": representation, "flow_training_s": summary["training_s"],
                       "inference_s": seconds, "inference_samples": spec["inference_samples"],
                       "samples": spec["samples"], "d_form_fraction": d_fraction, "dim": summary["dim"],
                       "epochs": summary["epochs"], "validation_nll": summary["validation_nll"]})
        for pmf in pmfs:
            scored = score_reweighting(proposals["phi"], proposals["psi"], proposals[f"log_w_{pmf}"],
                                       reference["phi"], reference["psi"], reference["weights"],
                                       bootstrap=spec["bootstrap"], seed=seed)
            extra = {"d_form_fraction": d_fraction, "samples": spec["samples"]}
            kept = all_weight_metrics(proposals["phi"], proposals["psi"], proposals[f"log_w_{pmf}"], reference["phi"],
                                      reference["psi"], reference["weights"])
            for row in scored:
                rows.append({**base, "method": f"cgbg-{representation}", "pmf": pmf,
                             **_metrics(row, all_weights=kept[int(row["pair"])]), **extra})
                if pmf == method:
                    rows.append({**base, "method": f"flow-unweighted-{representation}", "pmf": "",
                                 **_metrics(row, prefix="proposal_"), **extra})
    scores = {"rows": rows, "timing": timing}
    atomic_write_json(out / "scores.json", scores)
    return scores


# ---------------------------------------------------------------------------------------------
# Müller-Brown.


class StandardisedFlow(eqx.Module):
    """A flow over Müller-Brown's x (shape ``(1,)``) through u = (x − mean)/scale; log q in 1/length."""

    mean: jax.Array
    scale: jax.Array
    flow: eqx.Module

    def sample_and_log_proposal(self, key, n: int):
        u, log_q = self.flow.sample_and_log_prob(key, (n,))
        mean, scale = jax.lax.stop_gradient((self.mean, self.scale))
        return u * scale + mean, log_q - jnp.log(scale)


def _histogram_scores(index, log_w, reference, n_bins, *, bootstrap, seed):
    """JS, PMF error and ESS of samples in bins (``index`` −1 outside) against bin masses ``reference``;
    uncertainties from ``bootstrap`` resamples of the samples (with their weights)."""
    from cgbench.evaluate import js_divergence
    from cgbench.reweighting import ess_fraction, normalised_weights, pmf_error

    rng = np.random.default_rng(seed)
    n = len(index)

    def score(sel):
        w = np.ones(len(sel)) if log_w is None else normalised_weights(log_w[sel])
        keep = index[sel] >= 0
        q = np.bincount(index[sel][keep], weights=w[keep], minlength=n_bins)
        ess = float("nan") if log_w is None else ess_fraction(log_w[sel])
        return float(js_divergence(reference, q)), float(pmf_error(reference, q)), ess

    direct = score(np.arange(n))
    boot = np.array([score(rng.integers(0, n, n)) for _ in range(bootstrap)])
    unc = boot.std(0, ddof=1)
    if log_w is None:
        kept = direct[:2]
    else:
        keep = index >= 0
        q = np.bincount(index[keep], weights=normalised_weights(log_w, drop_quantile=None)[keep], minlength=n_bins)
        kept = (float(js_divergence(reference, q)), float(pmf_error(reference, q)))
    return {"pair": 0, "js": direct[0], "js_unc": unc[0], "pmf_error": direct[1], "pmf_error_unc": unc[1],
            "ess": direct[2], "ess_unc": unc[2], "js_all_weights": kept[0], "pmf_error_all_weights": kept[1]}


def run_muller_brown_cgbg(dataset: dict, *, data: str, pmfs: dict, training_frames: int, spec: dict, seed: int,
                          out: str | Path, progress: bool = True) -> dict:
    """CG-BG on Müller-Brown's x: a 1-D flow on the PMF's frames, reweighted with the PMFs (kT = 1),
    scored on the exact marginal of x over the populated range (F within 6 kT of its minimum).

    Args:
        dataset: :func:`cgbench.muller_brown.load_data` output of the data source.
        data: ``biased`` or ``unbiased``.
        pmfs: ``{data: model}`` of the Müller-Brown PMFs (energies in kT of x ``(1,)``).
        training_frames: At most this many frames (the PMF's, ``muller_brown.pmf.training_frames``).
        spec: Config block ``muller_brown.cgbg``.
        seed, out, progress: As :func:`run_peptide_cgbg`.
    """
    from cgbench import muller_brown as mb
    from cgbench.flows import make_flow
    from cgbench.pmf_evaluation import MULLER_BROWN_POPULATED_KT
    from cgbench.pmf_training import select_training_frames
    from cgbench.reweighting import importance_log_weights

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    method = method_pmf(pmfs)
    selected = select_training_frames(dataset, max_frames=training_frames)
    x = np.asarray(selected["positions"], np.float32).reshape(-1, 1)
    mean, scale = float(x.mean()), float(x.std())
    u = (x - mean) / scale
    inside = _inside(u, spec["interval"])
    init_key, train_key, sample_key, time_key = jr.split(jr.key(seed), 4)
    flow = make_flow(dim=1, interval=spec["interval"], key=init_key, **spec["flow"])
    result = train_flow_on_features(flow, u[inside], np.asarray(selected["replica"])[inside],
                                    settings=TrainingSettings(**spec["training"]), key=train_key, workdir=out,
                                    progress=progress, fingerprint={"spec": spec, "frames": int(inside.sum()),
                                                                    "u_sum": float(u[inside].sum())})
    proposal = StandardisedFlow(jnp.asarray(mean), jnp.asarray(scale), result["model"])
    eqx.tree_serialise_leaves(out / "flow.eqx", proposal)
    remove_checkpoint(out)
    pd.DataFrame(result["history"]).to_csv(out / "history.csv", index=False)

    @eqx.filter_jit
    def draw(proposal, key, n):
        return proposal.sample_and_log_proposal(key, n)

    samples, log_q = draw(proposal, sample_key, spec["samples"])
    samples, log_q = np.asarray(samples, np.float64), np.asarray(log_q, np.float64)
    edges = mb.evaluation_edges(n_bins=spec["bins"], cutoff=MULLER_BROWN_POPULATED_KT)
    reference = np.exp(mb.bin_log_masses(edges, mb.exact_pmf, 1.0, 10))
    reference /= reference.sum()
    index = np.searchsorted(edges, samples[:, 0], side="right") - 1
    index[(index < 0) | (index >= spec["bins"])] = -1
    base = {"system": "muller_brown", "resolution": "x", "data": data}
    rows = [{**base, "method": "flow-unweighted", "pmf": "",
             **_histogram_scores(index, None, reference, spec["bins"], bootstrap=spec["bootstrap"], seed=seed)}]
    arrays = {"x": samples[:, 0], "log_q": log_q}
    for pmf, model in pmfs.items():
        energy = np.asarray(jax.vmap(model)(jnp.asarray(samples, jnp.float32)), np.float64)
        log_w = importance_log_weights(energy, log_q)
        arrays[f"log_w_{pmf}"] = log_w
        rows.append({**base, "method": "cgbg", "pmf": pmf,
                     **_histogram_scores(index, log_w, reference, spec["bins"], bootstrap=spec["bootstrap"],
                                         seed=seed)})
    atomic_savez(out / "proposals.npz", **arrays)
    seconds = cgbg.inference_seconds(proposal, pmfs[method], n=10_000, key=time_key)
    timing = [{**base, "representation": "x", "flow_training_s": result["wall_s"], "inference_s": seconds,
               "inference_samples": 10_000, "samples": spec["samples"], "epochs": result["epochs"],
               "validation_nll": result["validation_loss"]}]
    scores = {"rows": rows, "timing": timing}
    atomic_write_json(out / "scores.json", scores)
    for row in rows:
        log.info("Müller-Brown %s %s (PMF %s): JS %.4f, PMF error %.4f kT^2, ESS %.3f", data, row["method"],
                 row["pmf"] or "-", row["js"], row["pmf_error"], row["ess"])
    return scores
