"""Tests of the CG-BG importance-reweighting metrics (:mod:`cgbench.reweighting`).

Hand-computed JS / PMF-error values on tiny histograms, the ESS definition (99th-percentile drop,
N before dropping), end-to-end scoring of samples from a known density on the torus (a product of
von Mises densities, whose log-density is exact), bootstrap scaling, and the autocorrelation time
of processes with a known τ.
"""

import math
import warnings

import numpy as np
import pytest

from cgbench.cg_md import dihedral_histogram
from cgbench.evaluate import js_divergence
from cgbench.reweighting import (
    decorrelated_samples,
    dihedral_bin_index,
    drop_outliers,
    ess_fraction,
    importance_log_weights,
    integrated_autocorrelation_time,
    normalised_weights,
    pmf_error,
    score_histograms,
    score_reweighting,
)

LN2 = math.log(2.0)

# ----------------------------------------------------------------------------- hand-computed metrics

# p = (½, ½, 0), q = (¼, ¼, ½): m = (⅜, ⅜, ¼); KL(p‖m) = ln(4/3), KL(q‖m) = ½ ln(4/3),
# so JS = ¾ ln(4/3).
# 2×2: p = (.4, .1, .2, .3), q uniform: m = (.325, .175, .225, .275).
_M22 = (0.325, 0.175, 0.225, 0.275)
_JS22 = 0.5 * (0.4 * math.log(0.4 / 0.325) + 0.1 * math.log(0.1 / 0.175) + 0.2 * math.log(0.2 / 0.225)
               + 0.3 * math.log(0.3 / 0.275)) + 0.5 * sum(0.25 * math.log(0.25 / m) for m in _M22)


@pytest.mark.parametrize("p, q, expected", [
    ([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], 0.75 * math.log(4 / 3)),
    ([1.0, 0.0], [0.0, 1.0], LN2),                                   # disjoint supports
    ([[0.0, 3.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]], LN2),       # disjoint, counts
    ([[0.4, 0.1], [0.2, 0.3]], [[0.25, 0.25], [0.25, 0.25]], _JS22),
    ([[4, 1], [2, 3]], [[1, 1], [1, 1]], _JS22),                     # unnormalised counts
    ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5], 0.0),
])
def test_js_divergence_hand_values(p, q, expected):
    p, q = np.ravel(p).astype(float), np.ravel(q).astype(float)
    assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)
    assert js_divergence(q, p) == pytest.approx(expected, abs=1e-12)  # symmetric


# p = (½, ½, 0) filled (½, ½, 1e-10); q = (¼, ¼, ½); m = (⅜, ⅜, (½ + 1e-10)/2) / (1 + ½·1e-10).
_S = 1 + 0.5e-10
_PMF3 = (2 * 0.375 * LN2**2 + 0.5 * (0.5 + 1e-10) * (math.log(1e-10) - math.log(0.5)) ** 2) / _S
# 2×2 without empty bins: p = (.4, .1, .2, .3), q = (.1, .4, .3, .2): m = ¼ everywhere.
_PMF22 = 0.25 * (2 * math.log(4) ** 2 + 2 * math.log(1.5) ** 2)


@pytest.mark.parametrize("p, q, expected", [
    ([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], _PMF3),
    ([[0.4, 0.1], [0.2, 0.3]], [[0.1, 0.4], [0.3, 0.2]], _PMF22),
    ([[8, 2], [4, 6]], [[1, 4], [3, 2]], _PMF22),                    # counts, normalised inside
    ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0], 0.0),                         # identical, shared empty bin
    ([[0.1, 0.2], [0.3, 0.4]], [[0.1, 0.2], [0.3, 0.4]], 0.0),
])
def test_pmf_error_hand_values(p, q, expected):
    assert pmf_error(p, q) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert pmf_error(q, p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pmf_error_fill_value_matters_and_batches():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert pmf_error(p, q, empty=1e-4) < pmf_error(p, q) / 2          # the 1e-10 fill dominates
    batch = pmf_error(np.array([p, [0.4, 0.1, 0.5]]), np.array([q, [0.4, 0.1, 0.5]]), axis=-1)
    np.testing.assert_allclose(batch, [_PMF3, 0.0], rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- weights and ESS

def test_importance_log_weights_counts_nonfinite():
    u = np.array([1.0, 2.0, np.nan, 0.5, np.inf])
    lq = np.array([0.0, -1.0, 0.0, np.inf, 0.0])
    with pytest.warns(RuntimeWarning, match="3 of 5"):
        lw, n_bad = importance_log_weights(u, lq, 0.25, return_nonfinite=True)
    np.testing.assert_array_equal(lw, [-0.75, -0.75, -np.inf, -np.inf, -np.inf])
    assert n_bad == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(importance_log_weights([1.0, 2.0], [0.5, 0.5]), [-1.5, -2.5])


@pytest.mark.parametrize("log_w, drop, expected", [
    (np.zeros(1000), 0.99, 1.0),                                      # equal weights
    (np.full(1000, -7.3), None, 1.0),
    (np.r_[np.zeros(999), 50.0], None, (math.exp(50) + 999) ** 2 / (math.exp(100) + 999) / 1000),
    (np.r_[np.zeros(999), 50.0], 0.99, 0.999),                        # outlier dropped, N = 1000
    (np.r_[np.zeros(4), -np.inf, np.nan], None, 4 / 6),               # non-finite: weight 0, in N
])
def test_ess_fraction_table(log_w, drop, expected):
    assert ess_fraction(log_w, drop_quantile=drop) == pytest.approx(expected, rel=1e-12)


def test_ess_dominant_weight_is_one_over_n():
    assert ess_fraction(np.r_[np.zeros(999), 50.0], drop_quantile=None) == pytest.approx(1e-3, rel=1e-6)


def test_ess_drop_uses_n_before_dropping():
    lw = np.random.default_rng(3).normal(0.0, 2.0, 10_000)
    kept = lw[lw <= np.quantile(lw, 0.99)]
    w = np.exp(kept - kept.max())
    assert len(kept) == 9_900
    assert ess_fraction(lw) == pytest.approx(w.sum() ** 2 / (w**2).sum() / 10_000, rel=1e-12)
    assert ess_fraction(lw) > ess_fraction(lw, drop_quantile=None)    # heavy tail removed
    w_norm = normalised_weights(lw)
    assert w_norm.sum() == pytest.approx(1.0) and np.count_nonzero(w_norm) == 9_900
    assert np.isneginf(drop_outliers(lw)).sum() == 100


# ----------------------------------------------------------------------------- binning

def test_bin_index_matches_dihedral_histogram():
    rng = np.random.default_rng(0)
    edges = np.linspace(-np.pi, np.pi, 101)
    phi = np.r_[rng.uniform(-7, 7, 5000), edges, -np.pi, np.pi, 3 * np.pi, np.nextafter(np.pi, 0)]
    psi = np.r_[rng.uniform(-7, 7, 5000), edges[::-1], np.pi, -np.pi, -3 * np.pi, 0.0]
    w = rng.random(len(phi))
    idx = dihedral_bin_index(phi, psi)
    assert idx.min() >= 0 and idx.max() < 100 * 100
    for weights in (None, w):
        h = np.bincount(idx, weights=weights, minlength=10_000).reshape(100, 100)
        np.testing.assert_allclose(h / h.sum(), dihedral_histogram(phi, psi, weights), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- von Mises targets

MU, KAPPA = (-1.4, 2.6), (2.0, 3.0)


def _log_vm(x, mu, kappa):
    return kappa * np.cos(x - mu) - np.log(2 * np.pi * np.i0(kappa))


def _draw(rng, n, scale=1.0):
    """(φ, ψ) from a product of von Mises densities, concentrations KAPPA × scale."""
    return rng.vonmises(MU[0], KAPPA[0] * scale, n), rng.vonmises(MU[1], KAPPA[1] * scale, n)


def _log_density(phi, psi, scale=1.0):
    return _log_vm(phi, MU[0], KAPPA[0] * scale) + _log_vm(psi, MU[1], KAPPA[1] * scale)


@pytest.fixture(scope="module")
def reference():
    return _draw(np.random.default_rng(0), 200_000)


def test_exact_proposal_gives_full_ess_and_noise_level_js(reference):
    rng = np.random.default_rng(1)
    phi, psi = _draw(rng, 200_000)
    # U = −log p (+ a constant) in kT, q = p exactly: log w is constant up to rounding.
    lw = importance_log_weights(-_log_density(phi, psi) + 3.0, _log_density(phi, psi))
    s = score_reweighting(phi, psi, lw, *reference, bootstrap=20)
    assert s.ess[0] >= 0.989                      # rounding ties: at most the top 1 % dropped
    noise = score_histograms(*_draw(rng, 200_000), *reference, bootstrap=0).js[0]
    assert s.reweighted.js[0] == pytest.approx(noise, rel=0.3)
    assert s.proposal.js[0] == pytest.approx(noise, rel=0.3)
    assert 0 < s.reweighted.js_unc[0] < noise / 5
    assert s.reweighted.pmf_error[0] > 0 and np.isfinite(s.reweighted.pmf_error_unc[0])


def test_broad_proposal_reweighted_to_target(reference):
    rng = np.random.default_rng(2)
    phi, psi = _draw(rng, 200_000, scale=0.25)
    lw = importance_log_weights(-_log_density(phi, psi), _log_density(phi, psi, scale=0.25))
    s = score_reweighting(phi, psi, lw, *reference, bootstrap=20)
    assert 0.2 < s.ess[0] < 0.6
    assert s.reweighted.js[0] < 0.2 * s.proposal.js[0]
    assert s.reweighted.pmf_error[0] < 0.5 * s.proposal.pmf_error[0]
    assert s.n_dropped == 2_000 and s.n_zero_weight == 0
    # Without the 99th-percentile drop the reweighted histogram is the target's up to noise.
    full = score_reweighting(phi, psi, lw, *reference, bootstrap=0, drop_quantile=None)
    noise = score_histograms(*_draw(rng, 200_000), *reference, bootstrap=0).js[0]
    assert full.reweighted.js[0] < 1.3 * noise
    assert full.reweighted.js[0] < s.reweighted.js[0]            # clipping biases (mode depleted)


def test_unweighted_and_cgbg_scheme(reference):
    rng = np.random.default_rng(4)
    phi, psi = _draw(rng, 50_000, scale=0.5)
    lw = -_log_density(phi, psi) + _log_density(phi, psi, scale=0.5)
    plain = score_reweighting(phi, psi, None, *reference, bootstrap=10)
    assert np.isnan(plain.ess).all() and plain.reweighted is plain.proposal
    pairs = score_reweighting(phi, psi, lw, *reference, bootstrap=10)
    cgbg = score_reweighting(phi, psi, lw, *reference, bootstrap=10, scheme="cgbg")
    assert cgbg.reweighted.js[0] == pairs.reweighted.js[0] and cgbg.ess[0] == pairs.ess[0]
    assert plain.proposal.js[0] == pytest.approx(pairs.proposal.js[0])
    assert cgbg.reweighted.js_unc[0] > 0
    row = pairs.to_dict()
    assert {"js", "js_unc", "pmf_error", "pmf_error_unc", "ess", "ess_unc", "proposal_js",
            "proposal_pmf_error"} <= row.keys()
    with pytest.raises(ValueError, match="scheme"):
        score_reweighting(phi, psi, lw, *reference, scheme="nope")


def test_every_pair_scored_separately(reference):
    rng = np.random.default_rng(5)
    p1, s1 = _draw(rng, 40_000)
    p2, s2 = _draw(rng, 40_000, scale=0.5)
    lw = rng.normal(0, 0.3, 40_000)
    ref_phi = np.stack([reference[0][:100_000], reference[0][100_000:]], axis=1)
    ref_psi = np.stack([reference[1][:100_000], reference[1][100_000:]], axis=1)
    both = score_reweighting(np.stack([p1, p2], 1), np.stack([s1, s2], 1), lw, ref_phi, ref_psi,
                             bootstrap=5)
    second = score_reweighting(p2, s2, lw, ref_phi[:, 1], ref_psi[:, 1], bootstrap=5)
    assert both.reweighted.js.shape == (2,) and both.ess[0] == both.ess[1]
    assert both.reweighted.js[1] == pytest.approx(second.reweighted.js[0], rel=1e-12)
    assert both.proposal.pmf_error[1] == pytest.approx(second.proposal.pmf_error[0], rel=1e-12)
    assert both.proposal.js[1] > both.proposal.js[0]             # the broad pair is further off
    rows = list(both)                                            # one flat row per pair
    assert [r["pair"] for r in rows] == [0, 1]
    assert rows[1]["js"] == both.reweighted.js[1] and rows[1]["ess"] == both.ess[1]
    assert rows[0]["proposal_pmf_error"] == both.proposal.pmf_error[0]
    assert rows[0]["n_samples"] == 40_000 and rows[0]["scheme"] == "pairs"


def test_weighted_reference_like_metadynamics(reference):
    # A biased (broad) reference with linear reweighting weights p/q_broad stands for the target.
    rng = np.random.default_rng(11)
    rphi, rpsi = _draw(rng, 200_000, scale=0.5)
    lw = _log_density(rphi, rpsi) - _log_density(rphi, rpsi, scale=0.5)
    w = np.exp(lw - lw.max())
    phi, psi = _draw(rng, 200_000)
    weighted = score_histograms(phi, psi, rphi, rpsi, reference_weights=w, bootstrap=10,
                                reference_block=50)
    unweighted = score_histograms(phi, psi, rphi, rpsi, bootstrap=0)
    noise = score_histograms(phi, psi, *reference, bootstrap=0).js[0]
    assert weighted.js[0] < 1.5 * noise < unweighted.js[0]
    assert weighted.js_unc[0] > 0 and weighted.n_reference == 200_000


@pytest.mark.parametrize("metric", ["ess", "js", "pmf_error"])
def test_bootstrap_std_shrinks_like_inverse_sqrt_n(metric):
    # Reference fixed, different from the target but inside its bulk (narrower), 20×20 bins:
    # the metrics are then smooth functions of the well-sampled proposal histogram, so their
    # spread falls as 1/√N. (A reference with mass where the reweighted proposal is sparse puts
    # the PMF error in its noise-dominated regime, where the spread falls faster than 1/√N.)
    rng = np.random.default_rng(6)
    ref = rng.vonmises(-1.3, 2.6, 400_000), rng.vonmises(2.5, 3.9, 400_000)
    stds = []
    for n in (20_000, 80_000):
        phi, psi = _draw(rng, n, scale=0.5)
        lw = -_log_density(phi, psi) + _log_density(phi, psi, scale=0.5)
        s = score_reweighting(phi, psi, lw, *ref, bootstrap=200, bins=20, resample_reference=False)
        stds.append(s.ess_unc[0] if metric == "ess" else getattr(s.reweighted, f"{metric}_unc")[0])
    assert stds[0] / stds[1] == pytest.approx(2.0, rel=0.25)


def _ar1(rng, rho, t, k=1):
    """AR(1) x_t = ρ x_{t−1} + √(1−ρ²) ε_t, stationary start, shape (t, k); τ = (1+ρ)/(1−ρ)."""
    eps = rng.normal(size=(t, k)) * math.sqrt(1 - rho**2)
    x = np.empty((t, k))
    x[0] = rng.normal(size=k)
    for i in range(1, t):                                       # t = 1e5: a few ms per column
        x[i] = rho * x[i - 1] + eps[i]
    return x


def test_block_bootstrap_widens_spread_of_correlated_frames():
    rng = np.random.default_rng(7)
    x = _ar1(rng, 0.95, 40_000)[:, 0]                             # τ = 39 frames
    phi, psi = 0.8 * x - 1.2, rng.vonmises(2.0, 2.0, 40_000)
    ref = rng.vonmises(-1.0, 1.0, 200_000), rng.vonmises(2.0, 2.0, 200_000)
    kw = dict(bins=20, bootstrap=100, resample_reference=False)
    iid = score_histograms(phi, psi, *ref, **kw)
    blocks = score_histograms(phi, psi, *ref, block=400, **kw)
    assert blocks.js[0] == iid.js[0]
    assert blocks.js_unc[0] > 2.5 * iid.js_unc[0]                 # ≈ √τ ≈ 6 expected


# ----------------------------------------------------------------------------- autocorrelation

@pytest.mark.parametrize("rho", [0.9, 0.5, 0.0])
def test_autocorrelation_time_of_ar1(rho):
    x = _ar1(np.random.default_rng(8), rho, 100_000)[:, 0]
    exact = (1 + rho) / (1 - rho)
    assert integrated_autocorrelation_time(x) == pytest.approx(exact, rel=0.1)


def test_autocorrelation_time_columns_and_replicas():
    rng = np.random.default_rng(9)
    x = np.concatenate([_ar1(rng, 0.9, 50_000, 1), rng.normal(size=(50_000, 1))], axis=1)
    tau = integrated_autocorrelation_time(x)
    assert tau.shape == (2,)
    assert tau[0] == pytest.approx(19.0, rel=0.15) and tau[1] == pytest.approx(1.0, abs=0.05)
    # Two independent runs, interleaved frame by frame, pooled by replica id.
    runs = _ar1(rng, 0.9, 50_000, 2)
    interleaved = runs.reshape(-1)                             # run 0, run 1, run 0, …
    replica = np.tile([0, 1], 50_000)
    pooled = integrated_autocorrelation_time(interleaved, replica=replica)
    assert pooled == pytest.approx(19.0, rel=0.15)
    assert np.isnan(integrated_autocorrelation_time(np.ones(100)))


def test_decorrelated_samples():
    rng = np.random.default_rng(10)
    x = _ar1(rng, 0.9, 100_000, 2)                              # two replicas of 50 000 frames
    phi = 0.3 * np.concatenate([x[:50_000, 0], x[:50_000, 1]]) - 1.2
    psi = rng.uniform(-np.pi, np.pi, 100_000)                   # white: τ ≈ 1
    replica = np.repeat([0, 1], 50_000)
    n_eff = decorrelated_samples(phi, psi, replica=replica)
    assert n_eff == pytest.approx(100_000 / 19.0, rel=0.15)      # sin φ ≈ 0.3 x carries τ = 19
    assert decorrelated_samples(psi, psi) == pytest.approx(100_000, rel=0.1)
