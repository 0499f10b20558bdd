"""Tempering schedules β_0 → β_target for ECG training.

``fixed``: the paper's constant increment Δβ (ECG v1, §2.2 and Algorithm 1).

``adaptive``: the next β is the largest one whose estimated change of the target,
KL(p_β ‖ p_β'), does not exceed ``target_kl_change`` (the revised ECG paper's rule). Since
d log p_β(z)/dβ = −⟨U⟩_z + const, with ⟨U⟩_z = E_{p_β(x|z)}[U(z, x)], to second order in Δβ

    KL(p_β ‖ p_{β+Δβ}) ≈ ½ Δβ² Var_{z∼p_β}(⟨U⟩_z).

z comes from the flow (≈ p_β) and ⟨U⟩_z from the S chain energies of the mean-force
estimate. The chain average adds noise of variance s_z²/S to each ⟨U⟩_z (s_z² the energy
variance along the chain); it is subtracted, because otherwise the fast coordinates' energy
fluctuations (z-independent in expectation) would be mistaken for a change of the marginal.
Chain states are correlated, so the correction is a lower bound on the noise. Energies are
in kT at β = 1, so Δβ·U is in kT.
"""

from __future__ import annotations

import numpy as np

# Schedule → method name in the tables (and folder results/<target>/ecg/<method>/); "none" is
# the no-tempering ablation (β_target from the start).
METHOD_OF_SCHEDULE = {"fixed": "ecg", "adaptive": "ecg_adaptive", "none": "ecg_no_tempering"}


def fixed_schedule(beta_0: float, beta_target: float, delta_beta: float) -> np.ndarray:
    """β_0, β_0 + Δβ, … up to and including β_target (the last increment may be shorter)."""
    if not 0 < beta_0 <= beta_target or delta_beta <= 0:
        raise ValueError("need 0 < beta_0 <= beta_target and delta_beta > 0")
    n = int(np.ceil((beta_target - beta_0) / delta_beta - 1e-9))
    betas = beta_0 + delta_beta * np.arange(n + 1)
    betas[-1] = beta_target
    return np.round(betas, 12)


#: Rows whose chain-mean energy is further than this many median absolute deviations from the
#: median are left out of Var_z(⟨U⟩_z): a peptide flow sample with two atoms on top of each other
#: has ⟨U⟩ ~ 10¹⁰ kT and alone would shrink the step to nothing.
OUTLIER_MADS = 10.0


def marginal_energy_variance(energies: np.ndarray) -> float:
    """Var_z(⟨U⟩_z) from chain energies (N, S), less the chain-average noise.

    Rows with a non-finite energy (a diverged chain) are left out, and so are gross outliers
    (:data:`OUTLIER_MADS`).

    Raises:
        ValueError: with fewer than 2 states per chain or fewer than 2 finite rows.
    """
    energies = np.asarray(energies, dtype=float)
    if energies.ndim != 2 or energies.shape[1] < 2:
        raise ValueError("adaptive tempering needs chain energies of shape (N, S) with S >= 2")
    energies = energies[np.all(np.isfinite(energies), axis=1)]
    if len(energies) < 2:
        raise ValueError("adaptive tempering: fewer than 2 chains with finite energies")
    means = energies.mean(axis=1)
    deviation = np.abs(means - np.median(means))
    mad = np.median(deviation)
    if mad > 0:
        keep = deviation <= OUTLIER_MADS * mad
        energies, means = energies[keep], means[keep]
    noise = energies.var(axis=1, ddof=1).mean() / energies.shape[1]
    return float(max(means.var(ddof=1) - noise, 0.0))


def kl_change(energies: np.ndarray, delta_beta: float) -> float:
    """Estimated KL(p_β ‖ p_{β+Δβ}) ≈ ½Δβ² Var_z(⟨U⟩_z), from chain energies (N, S)."""
    return 0.5 * delta_beta**2 * marginal_energy_variance(energies)


def next_beta(beta: float, energies: np.ndarray, *, beta_target: float, target_kl_change: float) -> float:
    """Largest β' ≤ β_target with estimated KL(p_β ‖ p_β') ≤ target_kl_change."""
    variance = marginal_energy_variance(energies)
    delta = np.sqrt(2.0 * target_kl_change / variance) if variance > 0 else np.inf
    return float(min(beta + delta, beta_target))
