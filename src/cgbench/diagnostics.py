"""Convergence diagnostics of peptide MD runs on the backbone dihedrals (φ, ψ).

Units and conventions
---------------------
- Angles are in **radians**. Inputs may lie anywhere on the real line; every function
  wraps them into [−π, π) first (``φ = π`` is the same angle as ``φ = −π``).
- Energies (bias, free energies, kT) are in **kJ/mol**; ``kT`` is the thermal energy
  k_B·T in kJ/mol (≈ 2.494 kJ/mol at 300 K).
- "Frames" are the saved configurations of one or several runs, concatenated. An optional
  ``replica`` array (n_frames,) of ints says which independent run each frame came from;
  the frames of one replica must be in time order (replicas may be interleaved).
- ``weights`` are non-negative importance weights per frame (e.g. from
  :func:`final_bias_weights`); ``None`` means uniform weights.

Definitions
-----------
Basins of an alanine residue (:data:`BASINS`, :func:`assign_basins`), in this order:

- ``phi_positive`` (α_L / C7ax): 0 < φ < 2.2 rad.
- ``beta`` (C5 / C7eq / PPII): not ``phi_positive`` (the φ < 0 side, including φ ≥ 2.2,
  which wraps to the β region) and (ψ > 0.5 rad or ψ < −2.0 rad).
- ``alpha_R`` (α_R / C7eq-bridge): not ``phi_positive`` and −2.0 ≤ ψ ≤ 0.5 rad.

Basin populations (:func:`basin_populations`): p_k = Σ_i w_i·1[label_i = k] / Σ_i w_i.
Their standard errors come from block averaging: each replica's frames are cut into
``n_blocks`` contiguous blocks of (nearly) equal length, the blocks of all replicas are
pooled, and with block weights W_b = Σ_{i∈b} w_i and block estimates p_b,

    err_k = sqrt( B/(B−1) · Σ_b W_b² (p_bk − p_k)² / (Σ_b W_b)² ),

where B is the number of blocks with W_b > 0. For uniform weights and independent frames
this reduces to the binomial standard deviation sqrt(p(1−p)/N); for correlated frames it
is larger, as long as the blocks are longer than the correlation time.

φ transitions (:func:`phi_transitions`): transitions between the φ < 0 and φ > 0 sides,
counted core to core with hysteresis. The positive core is 0.3 < φ < 1.9 rad, the negative
core φ < −0.5 or φ > 2.6 rad; a frame in neither core keeps the previous core state.
Every change of core state within a replica is one transition.

Final-bias reweighting (:func:`final_bias_weights`): with the final (converged) bias V(s)
of a (well-tempered) metadynamics run, frames sampled from p(s)·exp(−V(s)/kT) are
reweighted to the unbiased ensemble with w_i ∝ exp(V(s_i)/kT).

Free-energy profile (:func:`free_energy_profile`): F = −kT·log p on a histogram over
[−π, π), shifted to minimum 0, in kJ/mol; NaN in empty bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TWO_PI = 2.0 * np.pi

BASINS: dict[str, str] = {
    "phi_positive": "alpha_L / C7ax: 0 < phi < 2.2 rad",
    "beta": "C5 / C7eq / PPII: phi outside (0, 2.2) rad and (psi > 0.5 or psi < -2.0 rad)",
    "alpha_R": "alpha_R: phi outside (0, 2.2) rad and -2.0 <= psi <= 0.5 rad",
}
"""Ordered basin name → description; label k of :func:`assign_basins` is the k-th key."""

PHI_POSITIVE_RANGE = (0.0, 2.2)      # rad, open interval
BETA_PSI_ABOVE = 0.5                 # rad: psi > this is beta
BETA_PSI_BELOW = -2.0                # rad: psi < this is beta
PHI_POSITIVE_CORE = (0.3, 1.9)       # rad, open interval
PHI_NEGATIVE_CORE = (-0.5, 2.6)      # rad: phi < first or phi > second


# ----------------------------------------------------------------------------- helpers

def wrap_angle(x):
    """Wrap angles (radians, any shape) into [−π, π); values already inside are unchanged."""
    x = np.asarray(x, dtype=float)
    inside = (x >= -np.pi) & (x < np.pi)
    wrapped = np.mod(x + np.pi, TWO_PI) - np.pi
    wrapped = np.where(wrapped >= np.pi, -np.pi, wrapped)   # rounding of mod near 2π
    return np.where(inside, x, wrapped)


def _as_1d(name: str, x, dtype=float) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_frames,), got shape {arr.shape}")
    return arr


def _check_length(name: str, arr: np.ndarray, n: int) -> None:
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} frames, expected {n}")


def _weights(weights, n: int) -> np.ndarray:
    """Validated weights (n,): uniform when None; non-negative, finite, not all zero."""
    if weights is None:
        return np.ones(n)
    w = _as_1d("weights", weights)
    _check_length("weights", w, n)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    if not np.any(w > 0):
        raise ValueError("weights are all zero")
    return w


def _replica_indices(replica, n: int) -> list[np.ndarray]:
    """Frame indices (in time order) of each replica; one replica of all frames if None."""
    if replica is None:
        return [np.arange(n)]
    r = _as_1d("replica", replica, dtype=None)
    _check_length("replica", r, n)
    if not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"replica must hold integer ids, got dtype {r.dtype}")
    return [np.flatnonzero(r == rid) for rid in np.unique(r)]


# ----------------------------------------------------------------------------- basins

def assign_basins(phi, psi) -> np.ndarray:
    """Basin label of each (φ, ψ) pair.

    phi, psi: arrays of the same shape, radians (wrapped into [−π, π) first).
    Returns an int array of that shape with labels 0..len(BASINS)−1 in the order of
    :data:`BASINS` (0 = phi_positive, 1 = beta, 2 = alpha_R).
    """
    phi, psi = wrap_angle(phi), wrap_angle(psi)
    if phi.shape != psi.shape:
        raise ValueError(f"phi and psi shapes differ: {phi.shape} vs {psi.shape}")
    names = list(BASINS)
    positive = (phi > PHI_POSITIVE_RANGE[0]) & (phi < PHI_POSITIVE_RANGE[1])
    beta = (psi > BETA_PSI_ABOVE) | (psi < BETA_PSI_BELOW)
    labels = np.full(phi.shape, names.index("alpha_R"), dtype=int)
    labels[beta] = names.index("beta")
    labels[positive] = names.index("phi_positive")
    return labels


def _populations(labels: np.ndarray, w: np.ndarray, n_basins: int) -> tuple[np.ndarray, float]:
    """(p_k (n_basins,), total weight) of one set of frames; p = 0 when the weight is 0."""
    total = w.sum()
    sums = np.bincount(labels, weights=w, minlength=n_basins)
    return (sums / total if total > 0 else np.zeros(n_basins)), total


def basin_populations(labels, weights=None, *, replica=None, n_blocks: int = 5):
    """Weighted basin populations and their block-averaging standard errors.

    labels: (n_frames,) ints in 0..len(BASINS)−1 (from :func:`assign_basins`).
    weights: (n_frames,) non-negative importance weights, or None for uniform.
    replica: (n_frames,) int id of the independent run of each frame, or None (one run).
    n_blocks: contiguous blocks per replica (nearly equal lengths, ``np.array_split``).
    Returns (populations, errors), each (len(BASINS),), dimensionless; populations sum to 1.
    Blocks with zero total weight (e.g. discarded equilibration) are left out of B.
    """
    labels = _as_1d("labels", labels, dtype=None)
    n, n_basins = labels.shape[0], len(BASINS)
    if n == 0:
        raise ValueError("no frames")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_basins:
        raise ValueError(f"labels must lie in 0..{n_basins - 1}")
    w = _weights(weights, n)
    if int(n_blocks) != n_blocks or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive integer, got {n_blocks}")

    p, _ = _populations(labels, w, n_basins)
    blocks = [b for idx in _replica_indices(replica, n)
              for b in np.array_split(idx, int(n_blocks)) if b.size]
    stats = [_populations(labels[b], w[b], n_basins) for b in blocks]
    stats = [(pb, wb) for pb, wb in stats if wb > 0]
    n_b = len(stats)
    if n_b < 2:
        raise ValueError(f"block averaging needs at least 2 blocks with weight > 0, got {n_b}")
    p_b = np.array([pb for pb, _ in stats])             # (B, n_basins)
    w_b = np.array([wb for _, wb in stats])             # (B,)
    var = n_b / (n_b - 1) * np.sum(w_b[:, None] ** 2 * (p_b - p) ** 2, axis=0) / w_b.sum() ** 2
    return p, np.sqrt(var)


# ----------------------------------------------------------------------------- transitions

def _phi_core_state(phi: np.ndarray) -> np.ndarray:
    """+1 in the positive φ core, −1 in the negative core, 0 in neither (phi wrapped)."""
    state = np.zeros(phi.shape, dtype=int)
    state[(phi > PHI_POSITIVE_CORE[0]) & (phi < PHI_POSITIVE_CORE[1])] = 1
    state[(phi < PHI_NEGATIVE_CORE[0]) | (phi > PHI_NEGATIVE_CORE[1])] = -1
    return state


def phi_transitions(phi, *, replica=None) -> int:
    """Number of φ < 0 ↔ φ > 0 transitions, core to core with hysteresis.

    phi: (n_frames,) radians. replica: (n_frames,) int run ids or None (one run).
    Frames outside both cores keep the previous core state; frames before a replica's
    first core visit have no state. Transitions are counted within each replica only.
    """
    phi = wrap_angle(_as_1d("phi", phi))
    state = _phi_core_state(phi)
    count = 0
    for idx in _replica_indices(replica, phi.shape[0]):
        visited = state[idx][state[idx] != 0]
        count += int(np.count_nonzero(visited[1:] != visited[:-1]))
    return count


# ----------------------------------------------------------------------------- reweighting

def _grid_axes(bias_grid: np.ndarray, limits) -> list[np.ndarray]:
    """Grid coordinates per variable; bias_grid has OpenMM's reversed axis order."""
    shape = bias_grid.shape[::-1]                       # (n_var0, n_var1, ...)
    axes = []
    for d, ((lo, hi, _periodic), n_d) in enumerate(zip(limits, shape)):
        if not hi > lo:
            raise ValueError(f"limits[{d}]: max must exceed min, got ({lo}, {hi})")
        if n_d < 2:
            raise ValueError(f"bias grid needs at least 2 points per variable, axis {d} has {n_d}")
        axes.append(np.linspace(lo, hi, n_d))
    return axes


def _prepare_cvs(cvs: np.ndarray, limits) -> np.ndarray:
    """Wrap periodic columns into [min, max); reject non-periodic values out of range."""
    out = cvs.copy()
    for d, (lo, hi, periodic) in enumerate(limits):
        if periodic:
            out[:, d] = lo + np.mod(out[:, d] - lo, hi - lo)
        elif np.any((out[:, d] < lo) | (out[:, d] > hi)):
            raise ValueError(f"cvs[:, {d}] outside the non-periodic limits [{lo}, {hi}]")
    return out


def interpolate_bias(cvs, bias_grid, limits) -> np.ndarray:
    """Bias V(s) (n_frames,) in kJ/mol, bilinear interpolation of an OpenMM bias grid.

    cvs: (n_frames, n_cv) (or (n_frames,) for n_cv = 1), in the variables' units.
    bias_grid: OpenMM ``Metadynamics._totalBias`` layout, shape (n_{n_cv−1}, ..., n_0), kJ/mol.
    limits: [(min, max, periodic)] per variable; grid point j of variable d lies at
    min_d + j·(max_d − min_d)/(n_d − 1).
    """
    from scipy.interpolate import RegularGridInterpolator

    cvs = np.asarray(cvs, dtype=float)
    if cvs.ndim == 1:
        cvs = cvs[:, None]
    grid = np.asarray(bias_grid, dtype=float)
    if cvs.ndim != 2 or cvs.shape[1] not in (1, 2):
        raise ValueError(f"cvs must have shape (n_frames, 1 or 2), got {cvs.shape}")
    if len(limits) != cvs.shape[1] or grid.ndim != cvs.shape[1]:
        raise ValueError(f"{cvs.shape[1]} cvs, {len(limits)} limits and a {grid.ndim}-D "
                         "bias grid do not match")
    axes = _grid_axes(grid, limits)
    values = grid.T                                      # axes in variable order
    interp = RegularGridInterpolator(axes, values, method="linear")
    return interp(_prepare_cvs(cvs, limits))


def final_bias_weights(cvs, bias_grid, limits, *, kT: float, discard_fraction: float = 0.0,
                       replica=None) -> np.ndarray:
    """Importance weights (n_frames,) undoing a metadynamics bias with its final value.

    w_i ∝ exp(V_final(s_i)/kT), normalised to sum 1; the first ``floor(discard_fraction·n_r)``
    frames of each replica (n_r frames) get weight 0. Valid once the bias has converged.

    cvs: (n_frames, n_cv), n_cv = 1 or 2, e.g. [φ, ψ] in radians.
    bias_grid: final bias in kJ/mol, OpenMM ``_totalBias`` layout, i.e. shape reversed
    relative to the variables ((n_ψ, n_φ) for variables [φ, ψ]); see :func:`interpolate_bias`.
    limits: [(min, max, periodic)] per variable. kT: thermal energy in kJ/mol.
    replica: (n_frames,) int run ids or None (one run).
    """
    if not kT > 0:
        raise ValueError(f"kT must be positive (kJ/mol), got {kT}")
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    bias = interpolate_bias(cvs, bias_grid, limits)
    keep = np.ones(bias.shape[0], dtype=bool)
    for idx in _replica_indices(replica, bias.shape[0]):
        keep[idx[: int(np.floor(discard_fraction * idx.size))]] = False
    if not keep.any():
        raise ValueError("discard_fraction leaves no frames")
    log_w = bias / kT
    w = np.zeros_like(log_w)
    w[keep] = np.exp(log_w[keep] - log_w[keep].max())
    return w / w.sum()


# ----------------------------------------------------------------------------- free energy

def free_energy_profile(angles, weights=None, *, bins: int = 60, kT: float):
    """1-D free-energy profile of an angle over [−π, π).

    angles: (n_frames,) radians (wrapped). weights: (n_frames,) or None. bins: number of
    equal bins. kT: thermal energy in kJ/mol.
    Returns (centers (bins,) in radians, F (bins,) in kJ/mol), F = −kT·log p shifted to
    minimum 0, NaN in bins without weight.
    """
    if not kT > 0:
        raise ValueError(f"kT must be positive (kJ/mol), got {kT}")
    angles = wrap_angle(_as_1d("angles", angles))
    w = _weights(weights, angles.shape[0])
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    hist, _ = np.histogram(angles, bins=edges, weights=w)
    F = np.full(hist.shape, np.nan)
    filled = hist > 0
    F[filled] = -kT * np.log(hist[filled] / hist.sum())
    F -= np.nanmin(F)
    return 0.5 * (edges[:-1] + edges[1:]), F


# ----------------------------------------------------------------------------- figure

FIG_DPI = 120
RAMA_BINS = 72


def ramachandran_panel(ax, phi, psi, weights):
    """Weighted 2-D (φ, ψ) histogram (probability per bin), log colour scale, radians."""
    from matplotlib.colors import LogNorm

    edges = np.linspace(-np.pi, np.pi, RAMA_BINS + 1)
    w = None if weights is None else np.asarray(weights, dtype=float)
    hist, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=w)
    if hist.sum() > 0:
        hist = hist / hist.sum()                            # comparable across runs
    masked = np.ma.masked_less_equal(hist.T, 0.0)          # rows = ψ, columns = φ
    if masked.count():
        # Six decades below the peak: the rarest reweighted bins would otherwise set the scale.
        low = max(masked.min(), masked.max() * 1e-6)
        norm = LogNorm(vmin=low, vmax=max(masked.max(), low * 1.0001), clip=True)
        mesh = ax.pcolormesh(edges, edges, masked, norm=norm, cmap="viridis", rasterized=True)
        ax.figure.colorbar(mesh, ax=ax, label="probability per bin")
    ax.set(xlim=(-np.pi, np.pi), ylim=(-np.pi, np.pi), xlabel="φ (rad)", ylabel="ψ (rad)",
           aspect="equal")


def _time_panel(ax, time_ns, phi, psi, label, time_label="time (ns)"):
    """φ and ψ against time (ns) as dots."""
    ax.plot(time_ns, phi, ".", ms=1.5, label="φ", rasterized=True)
    ax.plot(time_ns, psi, ".", ms=1.5, label="ψ", alpha=0.6, rasterized=True)
    ax.set(ylim=(-np.pi, np.pi), xlabel=time_label, ylabel="angle (rad)", title=label)
    ax.legend(loc="upper right", markerscale=6, fontsize="small")


def dihedral_figure(runs, path, *, title: str, time_label: str = "time (ns)") -> Path:
    """One PNG: per run a row with φ, ψ time series (left) and a Ramachandran histogram (right).

    ``time_label`` names the horizontal axis of the time series (e.g. ``NUTS step`` for samplers).

    runs: list of dicts with keys ``label`` (str), ``time_ns`` (n_frames,) in ns, ``phi``,
    ``psi`` (n_frames,) in radians, ``weights`` ((n_frames,) or None). path: output PNG;
    parent folders are created. Drawn on a ``matplotlib.figure.Figure`` (Agg canvas), so
    neither pyplot's state nor the global backend is touched. Returns the path.
    """
    import matplotlib
    import seaborn as sns
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to draw")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(sns.axes_style("ticks")):
        fig = Figure(figsize=(11, 3.6 * len(runs)), constrained_layout=True)
        axes = fig.subplots(len(runs), 2, squeeze=False, width_ratios=[1.6, 1])
        for (ax_t, ax_r), run in zip(axes, runs):
            phi, psi = wrap_angle(run["phi"]), wrap_angle(run["psi"])
            time_ns = np.asarray(run["time_ns"], dtype=float)
            if not phi.shape == psi.shape == time_ns.shape:
                raise ValueError(f"run {run['label']!r}: time_ns, phi and psi shapes differ")
            _time_panel(ax_t, time_ns, phi, psi, run["label"], time_label)
            ramachandran_panel(ax_r, phi, psi, run.get("weights"))
        fig.suptitle(title)
        fig.savefig(path, dpi=FIG_DPI)
    fig.clear()
    return path
