"""Importance-reweighting metrics of CG-BG (coarse-grained Boltzmann generators).

A CG-BG draws CG configurations R from a normalising-flow proposal q(R) and reweights them to
the Boltzmann distribution of a learned PMF U(R) with self-normalised importance weights

    log w_i = −U(R_i)/kT − log q(R_i)        (dimensionless; U/kT is passed in units of kT).

The metrics (definitions in ``shared/reference/parameters.md``, section CG-BG) are computed on
(φ, ψ) histograms with 100 × 100 bins over [−π, π)² (:func:`cgbench.cg_md.dihedral_histogram`):

- JS divergence (nats): ½[KL(p‖m) + KL(q‖m)], m = (p+q)/2, p the reference MD histogram
  (optionally weighted, e.g. by metadynamics weights), q the histogram of the proposal samples
  weighted by the importance weights (:func:`cgbench.evaluate.js_divergence`).
- PMF error, (kT)²: Σ_b m_b (log p_b − log q_b)², empty bins of p and q set to 1e-10 before the
  log, m_b the normalised mixture of the filled histograms (:func:`pmf_error`). No square root.
- ESS: Kish (Σw)²/Σw² divided by N, a fraction (:func:`ess_fraction`); log-weights above the
  99th percentile are dropped (weight 0) before normalising.
- Uncertainties: standard deviation over 500 bootstrap resamples (:func:`score_reweighting`).
- Peptides with several residues: every interior (φ, ψ) pair is scored on its own (columns of
  ``phi``/``psi`` of shape (N, n_pairs)).

What the authors' code does (``tummfm/cg-bg``, found in the stored index; read, not copied):
``src/cg_bg/flow/evaluate.py`` (``clip_weights``, ``compute_ess_percent``,
``compute_js_divergence``, ``compute_pmf_error``, ``run_bootstrap_metrics``), with
``configs/main.yaml`` (``clip: 99``, ``n_bootstraps: 500``) and the older
``src/cg_bg/flow/plot.py`` (``compute_metrics_2d``, ``aldp_plots``), which agree.

- Dropping: the cutoff is the 99th percentile of all log-weights (linear interpolation); dropped
  samples get weight 0 but stay in the array, so (i) **N in the ESS fraction is the number
  before dropping** (an ESS fraction cannot exceed ≈ 0.99) and (ii) **dropped samples are also
  absent from the reweighted histogram**. Both are followed here. Their mask keeps
  ``log w < cutoff`` (strict), which with all-equal weights drops everything; here
  ``log w <= cutoff`` is kept, which differs by at most the one sample that sits exactly on the
  interpolated percentile and gives ESS = 1 for equal weights.
- JS: no filling of empty bins (0·log 0 = 0 via ``rel_entr``); the histograms are normalised by
  ``sum + 1e-10`` (a negligible difference from the exact normalisation used here). Their
  reference histogram is the *unweighted* MD histogram (their reference is always unbiased
  MD); ``reference_weights`` here is an extension for a reweighted biased reference.
- PMF error: p and q normalised, zeros replaced by 1e-10 (the filled values are not
  renormalised), m = (p_filled + q_filled)/2 normalised — as in :func:`pmf_error`.
- Bootstrap (500 resamples): every resample redraws the **reference** frames uniformly with
  replacement *and* the proposal samples; the proposal is redrawn **with probabilities equal to
  the (clipped) importance weights** and histogrammed unweighted, and the ESS is computed from a
  separate uniform redraw of the weights; the clipping is done once on the full set, not per
  resample. Their tables report the bootstrap mean ± std (the single "direct" value is also
  printed).

Here the point values (``js``, ``pmf_error``, ``ess``) are the direct ones on the full data;
the bootstrap means are returned as well (``*_boot_mean``). The default resampling,
``scheme="pairs"``, redraws proposal samples uniformly *together with their weights* and
histograms them weighted (the definition in the brief, and the ordinary bootstrap of a
self-normalised importance-sampling estimate, whose spread grows as the ESS falls).
``scheme="cgbg"`` reproduces the authors' weighted redraw: drawing N indices with probability
w_i and histogramming them is, bin by bin, a Multinomial(N, q_b) draw with q_b the reweighted
histogram, which is how it is drawn here. It measures the multinomial noise of N fresh draws
from the reweighted histogram, not the resampling variability of the weights themselves, so
the two schemes give different spreads (neither is larger in general). The reference is
resampled in both schemes (``resample_reference=True``, as in their code).

Bootstrap means are biased upward against the direct values, because every resample adds
multinomial noise to histograms that already carry it (and empties more bins, each of which
costs (log 1e-10 − log p)² in the PMF error). With 2·10⁵ proposal samples equal to the target
and 2·10⁵ reference frames (both resampled): JS 0.0100 direct vs 0.0174 bootstrap mean,
PMF error 0.83 vs 1.49 (kT)². Tables that quote CG-BG's numbers (bootstrap means) should say
which of the two they report.

Speed: each sample's flat bin index (:func:`dihedral_bin_index`) is computed once; a resample
is a vector of multiplicities c_i (a bincount of N uniform indices) and its histogram one
``np.bincount(bin_index, weights=c·w)``. Unweighted histograms resampled iid are exactly
Multinomial(N, p̂) over the bins and are drawn as such (no per-sample work at all).

Correlated samples (MD frames): the iid bootstrap underestimates the spread by about √τ
(τ the integrated autocorrelation time, :func:`integrated_autocorrelation_time`). Pass
``block`` (samples) / ``reference_block`` (reference) > 1 for a non-overlapping block bootstrap
of contiguous frames — choose blocks of several τ; blocks are cut in array order, so frames of
one replica must be contiguous and in time order (a block that straddles two replicas is
harmless when blocks are much shorter than replicas). :func:`decorrelated_samples` gives the
number of effectively independent frames Σ_r T_r / max τ.

Units: angles in radians (any real value; wrapped to [−π, π)); energies in kT; JS in nats;
PMF error in (kT)²; ESS a fraction of N; τ in frames.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from cgbench.cg_md import DIHEDRAL_BINS, dihedral_histogram
from cgbench.diagnostics import _replica_indices, _weights
from cgbench.evaluate import js_divergence, kish_ess_fraction

#: Quantile of the log-weights above which samples are dropped (CG-BG code: ``clip: 99``).
DROP_QUANTILE = 0.99
#: Bootstrap resamples of CG-BG's uncertainties (CG-BG code: ``n_bootstraps: 500``).
BOOTSTRAP = 500
#: Value that replaces empty bins before the log in the PMF error (CG-BG code: ``baseline``).
EMPTY_BIN = 1e-10
#: Sokal's window constant: the window M is the smallest with M >= c·τ(M).
SOKAL_C = 5.0

SCHEMES = ("pairs", "cgbg")


# ----------------------------------------------------------------------------- weights

def importance_log_weights(energy_kT, log_q, log_volume=0.0, *, return_nonfinite: bool = False):
    """Unnormalised importance log-weights log w = −U/kT − log q + log_volume.

    ``energy_kT`` (N,): the PMF U(R_i) in units of kT (dimensionless). ``log_q`` (N,): the
    proposal's log-density at R_i. ``log_volume``: scalar or (N,), added to every log-weight —
    the log of a Jacobian or volume factor when q is a density in other coordinates or units
    than U (a constant drops out of self-normalised weights). Entries that come out non-finite
    (NaN or ±inf: a diverged PMF or flow likelihood) are set to −inf (weight 0) and counted;
    a warning reports their number. Returns log w (N,), or ``(log_w, n_nonfinite)`` when
    ``return_nonfinite``.
    """
    u = np.asarray(energy_kT, np.float64)
    lq = np.asarray(log_q, np.float64)
    if u.ndim != 1 or lq.shape != u.shape:
        raise ValueError(f"energy_kT and log_q must both be (N,), got {u.shape} and {lq.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        log_w = -u - lq + np.asarray(log_volume, np.float64)
    bad = ~np.isfinite(log_w)
    n_bad = int(bad.sum())
    if n_bad:
        warnings.warn(f"{n_bad} of {len(log_w)} importance log-weights are non-finite; "
                      "they get weight 0", RuntimeWarning, stacklevel=2)
        log_w = np.where(bad, -np.inf, log_w)
    return (log_w, n_bad) if return_nonfinite else log_w


def _clean_log_w(log_w) -> np.ndarray:
    """log w as float64 (N,), non-finite entries → −inf."""
    lw = np.asarray(log_w, np.float64)
    if lw.ndim != 1:
        raise ValueError(f"log_w must be (N,), got shape {lw.shape}")
    return np.where(np.isfinite(lw), lw, -np.inf)


def drop_outliers(log_w, *, drop_quantile: float | None = DROP_QUANTILE) -> np.ndarray:
    """log w (N,) with the entries above the ``drop_quantile`` quantile set to −inf.

    The quantile (linear interpolation) is taken over the finite entries; entries equal to it
    are kept. ``drop_quantile=None`` drops nothing. Non-finite entries become −inf.
    """
    lw = _clean_log_w(log_w)
    finite = np.isfinite(lw)
    if drop_quantile is None or not finite.any():
        return lw
    if not 0.0 < drop_quantile <= 1.0:
        raise ValueError(f"drop_quantile must be in (0, 1], got {drop_quantile}")
    cutoff = np.quantile(lw[finite], drop_quantile)
    return np.where(lw <= cutoff, lw, -np.inf)


def normalised_weights(log_w, *, drop_quantile: float | None = DROP_QUANTILE) -> np.ndarray:
    """Self-normalised importance weights (N,), summing to 1; dropped/non-finite entries are 0."""
    lw = drop_outliers(log_w, drop_quantile=drop_quantile)
    if not np.isfinite(lw).any():
        raise ValueError("no finite log-weight")
    w = np.exp(lw - lw.max())
    return w / w.sum()


def ess_fraction(log_w, *, drop_quantile: float | None = DROP_QUANTILE) -> float:
    """Kish effective sample size (Σw)²/Σw² divided by N, from log-weights (N,).

    Log-weights above the ``drop_quantile`` quantile are dropped first (weight 0) and N is the
    number of samples *before* dropping, as in CG-BG's code; non-finite log-weights count in N
    with weight 0. Equal weights give 1 (nothing is above the quantile); one dominant weight
    that survives the drop gives ≈ 1/N. Returns 0.0 when no weight is finite.
    """
    lw = drop_outliers(log_w, drop_quantile=drop_quantile)
    if not np.isfinite(lw).any():
        return 0.0
    return kish_ess_fraction(lw)


# ----------------------------------------------------------------------------- histogram metrics

def pmf_error(p, q, *, empty: float = EMPTY_BIN, axis: int | None = None) -> float | np.ndarray:
    """CG-BG's PMF error Σ_b m_b (log p_b − log q_b)², in (kT)², between bin masses p and q.

    ``p``, ``q``: bin masses or counts of the same shape (e.g. (100, 100)); each is normalised
    here (over all elements, or along ``axis`` for a batch of histograms). Empty bins of p and q
    are then set to ``empty`` (not renormalised) before the log; m = (p + q)/2 of the filled
    masses, normalised to sum 1. No square root. Returns a float (``axis=None``) or an array
    with ``axis`` removed.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    p = p / p.sum(axis=axis, keepdims=True)
    q = q / q.sum(axis=axis, keepdims=True)
    p = np.where(p > 0, p, empty)
    q = np.where(q > 0, q, empty)
    m = 0.5 * (p + q)
    m = m / m.sum(axis=axis, keepdims=True)
    out = np.sum(m * (np.log(p) - np.log(q)) ** 2, axis=axis)
    return float(out) if axis is None else out


def _wrap(angle) -> np.ndarray:
    """Angles (rad) wrapped into [−π, π) exactly as :func:`cgbench.cg_md.dihedral_histogram` does."""
    return (np.asarray(angle, np.float64) + np.pi) % (2 * np.pi) - np.pi


def _angle_bin(angle: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each wrapped angle on ``bins`` equal bins over [−π, π], numpy.histogram's rule."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    idx = np.searchsorted(edges, angle, side="right") - 1
    idx[angle == edges[-1]] = bins - 1                        # right edge belongs to the last bin
    return idx


def dihedral_bin_index(phi, psi, *, bins: int = DIHEDRAL_BINS) -> np.ndarray:
    """Flat bin index i_φ·bins + i_ψ of each (φ, ψ) (rad, any shape) on the [−π, π)² grid.

    Same bins as :func:`cgbench.cg_md.dihedral_histogram`: ``np.bincount(index, weights,
    minlength=bins**2).reshape(bins, bins)`` equals its histogram before normalisation.
    Returns an intp array of the shape of ``phi``.
    """
    phi, psi = _wrap(phi), _wrap(psi)
    if phi.shape != psi.shape:
        raise ValueError(f"phi and psi must have the same shape, got {phi.shape} and {psi.shape}")
    return _angle_bin(phi, bins) * bins + _angle_bin(psi, bins)


# ----------------------------------------------------------------------------- bootstrap engine

def _pairs(phi, psi, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) or (N, n_pairs) angles → two float arrays (N, n_pairs)."""
    phi = np.asarray(phi, np.float64)
    psi = np.asarray(psi, np.float64)
    if phi.shape != psi.shape or phi.ndim not in (1, 2):
        raise ValueError(f"{name} phi and psi must both be (N,) or (N, n_pairs), "
                         f"got {phi.shape} and {psi.shape}")
    if phi.ndim == 1:
        phi, psi = phi[:, None], psi[:, None]
    if phi.shape[0] == 0:
        raise ValueError(f"{name} has no samples")
    return phi, psi


def _multiplicities(rng, n: int, block: int) -> np.ndarray:
    """Bootstrap multiplicity of each of n samples (n,): iid, or non-overlapping blocks of ``block``."""
    if block <= 1:
        return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
    n_blocks = -(-n // block)
    picks = np.bincount(rng.integers(0, n_blocks, n_blocks), minlength=n_blocks)
    return np.repeat(picks, block)[:n].astype(np.float64)


class _Resampler:
    """Bootstrap histograms (n_pairs, bins²) of one sample set with fixed weights.

    ``index`` (n_pairs, N) flat bin indices; ``weights`` (N,) or None (unweighted); ``full``
    (n_pairs, bins²) the normalised histograms of the full set. ``multinomial=True`` draws each
    pair's histogram as Multinomial(N, full): the exact iid bootstrap of an unweighted sample,
    and CG-BG's weighted redraw of a weighted one.
    """

    def __init__(self, index: np.ndarray, weights, full: np.ndarray, *, block: int, multinomial: bool):
        self.index, self.weights, self.full, self.block = index, weights, full, block
        self.n, self.n_bins = index.shape[1], full.shape[1]
        self.multinomial = multinomial

    def draw(self, rng, counts: np.ndarray | None = None) -> np.ndarray:
        """One bootstrap histogram per pair, (n_pairs, bins²); ``counts`` reuses multiplicities."""
        if self.multinomial:
            return np.stack([rng.multinomial(self.n, p) for p in self.full]).astype(np.float64)
        c = _multiplicities(rng, self.n, self.block) if counts is None else counts
        cw = c if self.weights is None else c * self.weights
        return np.stack([np.bincount(ix, weights=cw, minlength=self.n_bins) for ix in self.index])


def _std(x: np.ndarray) -> np.ndarray:
    return x.std(axis=0, ddof=1) if len(x) > 1 else np.full(x.shape[1:], np.nan)


def _mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0) if len(x) else np.full(x.shape[1:], np.nan)


@dataclass(frozen=True)
class HistogramScores:
    """JS divergence (nats) and PMF error ((kT)²) per (φ, ψ) pair, arrays (n_pairs,).

    ``js``/``pmf_error``: direct values on the full data; ``*_unc``: bootstrap std (ddof 1);
    ``*_boot_mean``: bootstrap mean (what CG-BG's tables report). ``n_samples``,
    ``n_reference``: sample counts; ``bootstrap``: number of resamples.
    """

    js: np.ndarray
    js_unc: np.ndarray
    js_boot_mean: np.ndarray
    pmf_error: np.ndarray
    pmf_error_unc: np.ndarray
    pmf_error_boot_mean: np.ndarray
    n_samples: int
    n_reference: int
    bootstrap: int

    def to_dict(self) -> dict:
        """Plain dict, arrays as lists (JSON-ready)."""
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ReweightingScores:
    """Scores of a reweighted proposal, arrays (n_pairs,); see :func:`score_reweighting`.

    ``reweighted``: the proposal histogram weighted by the (clipped) importance weights;
    ``proposal``: the plain proposal histogram. ``ess``/``ess_unc``/``ess_boot_mean``: Kish ESS
    fraction (the same for every pair; NaN without log-weights). ``n_dropped``: samples above
    the log-weight quantile; ``n_zero_weight``: samples with a non-finite log-weight.
    """

    reweighted: HistogramScores
    proposal: HistogramScores
    ess: np.ndarray
    ess_unc: np.ndarray
    ess_boot_mean: np.ndarray
    n_dropped: int
    n_zero_weight: int
    scheme: str

    def rows(self) -> list[dict]:
        """One flat dict of floats per (φ, ψ) pair (``pair`` = column index), as :meth:`to_dict`."""
        flat = self.to_dict()
        per_pair = {k: v for k, v in flat.items() if isinstance(v, list)}
        shared = {k: v for k, v in flat.items() if not isinstance(v, list)}
        return [{"pair": j, **{k: float(v[j]) for k, v in per_pair.items()}, **shared}
                for j in range(len(self.ess))]

    def __iter__(self):
        """Iterating yields :meth:`rows`, one dict per (φ, ψ) pair."""
        return iter(self.rows())

    def to_dict(self) -> dict:
        """Flat dict: reweighted metrics plain (``js``, ``js_unc`` …), proposal ones ``proposal_*``."""
        out = self.reweighted.to_dict()
        out.update({f"proposal_{k}": v for k, v in self.proposal.to_dict().items()
                    if k.startswith(("js", "pmf"))})
        out.update(ess=self.ess.tolist(), ess_unc=self.ess_unc.tolist(),
                   ess_boot_mean=self.ess_boot_mean.tolist(), n_dropped=self.n_dropped,
                   n_zero_weight=self.n_zero_weight, scheme=self.scheme)
        return out


def _scores(sample: _Resampler, reference: _Resampler, *, bootstrap: int, rng,
            resample_reference: bool, counts_fn=None) -> tuple[HistogramScores, list]:
    """Direct + bootstrap JS / PMF error of ``sample`` against ``reference``.

    ``counts_fn(rng)`` (optional) supplies the sample multiplicities of each resample (so that
    the caller can reuse them, e.g. for the ESS); the list of those multiplicities' results is
    returned alongside.
    """
    p_full, q_full = reference.full, sample.full
    js, pmf = js_divergence(p_full, q_full), pmf_error(p_full, q_full, axis=-1)
    js_b, pmf_b, extra = [], [], []
    for _ in range(bootstrap):
        p = reference.draw(rng) if resample_reference else p_full
        counts = None
        if counts_fn is not None:
            counts, value = counts_fn(rng)
            extra.append(value)
        q = sample.draw(rng, counts)
        js_b.append(js_divergence(p, q))
        pmf_b.append(pmf_error(p, q, axis=-1))
    js_b = np.asarray(js_b).reshape(bootstrap, len(p_full))
    pmf_b = np.asarray(pmf_b).reshape(bootstrap, len(p_full))
    scores = HistogramScores(js=np.asarray(js), js_unc=_std(js_b), js_boot_mean=_mean(js_b),
                             pmf_error=np.asarray(pmf), pmf_error_unc=_std(pmf_b),
                             pmf_error_boot_mean=_mean(pmf_b), n_samples=sample.n,
                             n_reference=reference.n, bootstrap=bootstrap)
    return scores, extra


def _index(phi: np.ndarray, psi: np.ndarray, bins: int) -> np.ndarray:
    """(N, n_pairs) angles → (n_pairs, N) flat bin indices (contiguous per pair)."""
    return np.ascontiguousarray(dihedral_bin_index(phi, psi, bins=bins).T)


def _histograms(phi: np.ndarray, psi: np.ndarray, weights, bins: int) -> np.ndarray:
    """Normalised histograms (n_pairs, bins²) of (N, n_pairs) angles (:func:`dihedral_histogram`)."""
    return np.stack([dihedral_histogram(phi[:, j], psi[:, j], weights, bins=bins).ravel()
                     for j in range(phi.shape[1])])


def _resampler(phi, psi, weights, *, bins: int, block: int, multinomial: bool) -> _Resampler:
    return _Resampler(_index(phi, psi, bins), weights, _histograms(phi, psi, weights, bins),
                      block=block, multinomial=multinomial)


def _reference(reference_phi, reference_psi, reference_weights, n_pairs, *, bins, block):
    rphi, rpsi = _pairs(reference_phi, reference_psi, "reference")
    if rphi.shape[1] != n_pairs:
        raise ValueError(f"reference has {rphi.shape[1]} (φ, ψ) pairs, samples have {n_pairs}")
    rw = None if reference_weights is None else _weights(reference_weights, rphi.shape[0])
    return _resampler(rphi, rpsi, rw, bins=bins, block=block, multinomial=rw is None and block <= 1)


def score_histograms(phi, psi, reference_phi, reference_psi, *, weights=None, reference_weights=None,
                     bootstrap: int = BOOTSTRAP, seed: int = 0, bins: int = DIHEDRAL_BINS,
                     block: int = 1, reference_block: int = 1,
                     resample_reference: bool = True) -> HistogramScores:
    """JS divergence and PMF error of (φ, ψ) samples against a reference, no ESS.

    For baselines, e.g. implicit-solvent MD scored against explicit-solvent MD.
    ``phi``, ``psi`` (N,) or (N, n_pairs), rad; ``weights`` (N,) non-negative linear weights or
    None; ``reference_phi``, ``reference_psi`` (M,) or (M, n_pairs); ``reference_weights`` (M,)
    or None (e.g. metadynamics reweighting weights). The bootstrap redraws the samples (with
    their weights) and, if ``resample_reference``, the reference, ``bootstrap`` times. MD frames
    are correlated: ``block``/``reference_block`` > 1 resample non-overlapping blocks of that
    many consecutive frames (use several autocorrelation times, see
    :func:`integrated_autocorrelation_time`); 1 is the iid bootstrap, which underestimates the
    spread of correlated frames. Returns :class:`HistogramScores` with arrays (n_pairs,).
    """
    phi, psi = _pairs(phi, psi, "samples")
    w = None if weights is None else _weights(weights, phi.shape[0])
    sample = _resampler(phi, psi, w, bins=bins, block=block, multinomial=w is None and block <= 1)
    reference = _reference(reference_phi, reference_psi, reference_weights, phi.shape[1],
                           bins=bins, block=reference_block)
    scores, _ = _scores(sample, reference, bootstrap=bootstrap, rng=np.random.default_rng(seed),
                        resample_reference=resample_reference)
    return scores


def score_reweighting(phi, psi, log_w, reference_phi, reference_psi, reference_weights=None, *,
                      bootstrap: int = BOOTSTRAP, seed: int = 0, bins: int = DIHEDRAL_BINS,
                      drop_quantile: float | None = DROP_QUANTILE, scheme: str = "pairs",
                      resample_reference: bool = True, reference_block: int = 1) -> ReweightingScores:
    """CG-BG's metrics of reweighted proposal samples against a reference MD, per (φ, ψ) pair.

    ``phi``, ``psi`` (N,) or (N, n_pairs), rad: the proposal samples' dihedrals, one column per
    interior residue. ``log_w`` (N,): unnormalised importance log-weights in nats
    (:func:`importance_log_weights`), or None for an unweighted proposal (then ``reweighted``
    equals ``proposal`` and the ESS is NaN). ``reference_phi``, ``reference_psi`` (M,) or
    (M, n_pairs); ``reference_weights`` (M,) non-negative linear weights or None.

    Weights: log-weights above the ``drop_quantile`` quantile (None: none) and non-finite ones
    get weight 0, once, on the full set. Bootstrap (``bootstrap`` resamples, numpy generator
    seeded with ``seed``): ``scheme="pairs"`` redraws the proposal samples uniformly with their
    weights (the ESS of each resample uses the same multiplicities); ``scheme="cgbg"`` redraws
    them with probability ∝ weight and histograms them unweighted (the authors' scheme, see the
    module docstring), the ESS from a separate uniform redraw. The reference is redrawn too if
    ``resample_reference`` (in blocks of ``reference_block`` consecutive frames if > 1).
    Returns :class:`ReweightingScores`: JS (nats), PMF error ((kT)²), ESS fraction, each with
    bootstrap std and mean, for the reweighted and the plain proposal histogram.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    phi, psi = _pairs(phi, psi, "samples")
    n, n_pairs = phi.shape
    index = _index(phi, psi, bins)
    reference = _reference(reference_phi, reference_psi, reference_weights, n_pairs,
                           bins=bins, block=reference_block)
    rng = np.random.default_rng(seed)
    kwargs = dict(bootstrap=bootstrap, resample_reference=resample_reference)

    plain = _Resampler(index, None, _histograms(phi, psi, None, bins), block=1, multinomial=True)
    proposal, _ = _scores(plain, reference, rng=rng, **kwargs)
    nan = np.full(n_pairs, np.nan)
    if log_w is None:
        return ReweightingScores(reweighted=proposal, proposal=proposal, ess=nan, ess_unc=nan,
                                 ess_boot_mean=nan, n_dropped=0, n_zero_weight=0, scheme=scheme)

    lw = _clean_log_w(log_w)
    if lw.shape[0] != n:
        raise ValueError(f"log_w has {lw.shape[0]} entries, samples have {n}")
    kept = drop_outliers(lw, drop_quantile=drop_quantile)
    n_zero = int((~np.isfinite(lw)).sum())
    n_dropped = int((~np.isfinite(kept)).sum()) - n_zero
    w = normalised_weights(lw, drop_quantile=drop_quantile)

    w2 = w * w

    def counts_and_ess(rng_):                                  # Kish ESS of a resample, c_i copies each
        c = _multiplicities(rng_, n, 1)
        return c, (c @ w) ** 2 / (c @ w2) / c.sum()

    weighted = _Resampler(index, w, _histograms(phi, psi, w, bins), block=1,
                          multinomial=scheme == "cgbg")
    reweighted, ess_b = _scores(weighted, reference, rng=rng, counts_fn=counts_and_ess, **kwargs)
    ess_b = np.asarray(ess_b, np.float64)[:, None]
    ess = ess_fraction(lw, drop_quantile=drop_quantile)
    return ReweightingScores(reweighted=reweighted, proposal=proposal, ess=np.full(n_pairs, ess),
                             ess_unc=np.repeat(_std(ess_b), n_pairs),
                             ess_boot_mean=np.repeat(_mean(ess_b), n_pairs),
                             n_dropped=n_dropped, n_zero_weight=n_zero, scheme=scheme)


# ----------------------------------------------------------------------------- autocorrelation

def _autocovariance_sums(x: np.ndarray, mean: np.ndarray, max_lag: int) -> np.ndarray:
    """Σ_t (x_t − mean)(x_{t+s} − mean), s = 0 … max_lag−1, per column: x (T, k) → (max_lag, k)."""
    d = x - mean
    t = len(d)
    size = 1 << int(2 * t - 1).bit_length()                   # zero padding: no circular wrap
    f = np.fft.rfft(d, n=size, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=0)[:t]
    out = np.zeros((max_lag, x.shape[1]))
    out[: min(t, max_lag)] = acov[:max_lag]
    return out


def integrated_autocorrelation_time(x, *, c: float = SOKAL_C, replica=None):
    """Integrated autocorrelation time τ = 1 + 2 Σ_{s=1}^{M} ρ(s), in frames.

    ``x`` (T,) or (T, k): a time series per column (for angles pass cos and sin, not the angle).
    ρ is the FFT autocorrelation (biased estimator: sums divided by the number of frames).
    Sokal's automatic window: M is the smallest lag with M >= c·τ(M) (the last lag if none).
    ``replica`` (T,) integer ids of independent runs (frames of a run in time order, runs may
    be interleaved): the autocovariances of the runs are summed lag by lag (about the pooled
    mean, so runs stuck in different states show up as long correlation) and normalised by
    the total number of frames. White noise gives τ ≈ 1; AR(1) with coefficient ρ gives
    (1+ρ)/(1−ρ). Returns a float for (T,) input, else an array (k,); NaN for a constant column.
    """
    arr = np.asarray(x, np.float64)
    squeeze = arr.ndim == 1
    if squeeze:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"x must be (T,) or (T, k) with T >= 2, got shape {np.shape(x)}")
    runs = _replica_indices(replica, arr.shape[0])
    max_lag = max(len(r) for r in runs)
    mean = arr.mean(axis=0)
    acov = sum(_autocovariance_sums(arr[r], mean, max_lag) for r in runs) / arr.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = acov / acov[0]
    tau_m = 2.0 * np.cumsum(rho, axis=0) - 1.0                 # τ(M) for M = 0 … max_lag−1
    lags = np.arange(max_lag)[:, None]
    ok = lags >= c * tau_m
    window = np.where(ok.any(axis=0), ok.argmax(axis=0), max_lag - 1)
    tau = tau_m[window, np.arange(arr.shape[1])]
    tau = np.where(acov[0] > 0, tau, np.nan)
    return float(tau[0]) if squeeze else tau


def decorrelated_samples(phi, psi, *, replica=None, c: float = SOKAL_C) -> float:
    """Effectively independent frames of a trajectory set: Σ_r T_r / max τ.

    ``phi``, ``psi`` (T,) or (T, n_pairs), rad, frames of all replicas concatenated
    (``replica`` (T,) ids as in :func:`integrated_autocorrelation_time`, None: one run). τ is the
    largest integrated autocorrelation time (frames) of cos φ, sin φ, cos ψ, sin ψ over all
    pairs (constant observables are ignored; τ below 1, anticorrelation, counts as 1, so the
    result never exceeds the number of frames); Σ_r T_r is the total number of frames.
    """
    phi, psi = _pairs(phi, psi, "trajectory")
    obs = np.concatenate([np.cos(phi), np.sin(phi), np.cos(psi), np.sin(psi)], axis=1)
    tau = integrated_autocorrelation_time(obs, c=c, replica=replica)
    if np.all(np.isnan(tau)):
        raise ValueError("all observables are constant")
    return phi.shape[0] / max(float(np.nanmax(tau)), 1.0)
