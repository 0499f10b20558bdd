"""The Müller-Brown system of CG-BG: potential, exact PMF and force-matching floor, Langevin data.

CG-BG (coarse-grained Boltzmann generators, arXiv 2602.10637) use a 2-D Müller-Brown-type
potential as their toy system; the parameters are those of the authors' code
(``tummfm/cg-bg``, ``raw/mb_sampler.py``; see ``shared/reference/parameters.md``)::

    V(x, y) = −17.3 exp(−0.0039 (x−48)² − 0.0391 (y−8)²)
              − 8.7 exp(−0.0039 (x−32)² − 0.0391 (y−16)²)
              − 14.7 exp(−0.0254 (x−24)² + 0.043 (x−24)(y−32) − 0.0254 (y−32)²)
              + 1.3 exp(+0.00273 (x−16)² + 0.0023 (x−16)(y−24) + 0.00273 (y−24)²).

The last term has *positive* exponents, as in their code: it is not a bump but a confining wall
that grows without bound away from (16, 24) (V(50, 50) ≈ +1470) and confines the dynamics
(F − min F ≤ 30 kT only on x ∈ [−18.3, 53.8]; the saved data stay in x ∈ [8, 48], y ∈ [4.7, 39]). The global minimum of V is ≈ −12.69 at
(23.1, 31.1).

Units: everything is dimensionless. Energies are in units of kT with kT = 1 (``kT`` arguments
exist for tempering, default 1), lengths in the units of x and y, mass 1, so time is in units of
sqrt(m L² / kT) and forces in kT per unit length.

Coarse graining: the CG coordinate is x alone; the exact PMF is

    F(x) = −kT log ∫_0^50 exp(−V(x, y)/kT) dy

(y restricted to [0, 50] as in CG-BG; the Boltzmann mass with y outside it is ≈ 5e-8). The
biased data of CG-BG add the static bias B(x) = −4 exp(−(x−32)²/(2·5²)) on x, which lowers the
barrier of F between its two wells. Since B depends on x only, the conditional p(y | x) is the
same with and without it, so the *unbiased* forces −∂V/∂x on biased configurations are unbiased
samples of the mean force −F'(x): force matching on biased data needs no reweighting.

Exact landmarks of F at kT = 1 (y ∈ [0, 50], grid step 0.1 in x; printed by the measurement in
the module's report): unbiased, the deep minimum at x ≈ 23.0 (F = 0), the shallow one at
x ≈ 41.6 (F ≈ 3.54), the barrier at x ≈ 31.2 (F ≈ 5.30); P(x < 30) ≈ 0.961. With the bias,
F + B has minima at x ≈ 24.6 (0) and x ≈ 32.2 (≈ 2.31) and the barrier at x ≈ 30.3 (≈ 2.47);
P_B(x < 30) ≈ 0.889. F − min F ≤ 10 kT on x ∈ [8.82, 48.71] (:func:`populated_range`).

What the CG-BG-sized data look like (``generate_data`` defaults, key 0, 10 × 2000 frames, float32,
≈ 4-9 s on the shared 2-core CPU machine including compilation): the slow process is the
transition between the deep well (24, 32) and the two lower wells (32, 16), (48, 8), largely a
motion in y; x-crossings of the F barrier (x < 28 ↔ x > 34, seen in the saved frames) are
frequent (178 unbiased, 339 biased) but mostly within the lower channel, while basin transitions
(y > 25 ↔ y < 18) are rare (18 unbiased, 11 biased; 3-5 of the 10 trajectories never make
one). So the populations are misestimated: P(x < 30) is 0.829 in the unbiased data against
0.961 exact, 0.749 in the biased data against 0.890 exact, and 0.898 after reweighting the
biased data (against 0.961). The x-bias lowers the barrier of F but does not speed up the slow
y-motion, so it does not repair the population error at this data size. The force-matching
floors (:func:`exact_force_floor`) are 0.4202 (unbiased) and 0.4081 (biased) kT²/length².

Contents: :func:`potential` and :func:`bias` (JAX, jit/vmap-able); :func:`exact_pmf`,
:func:`exact_force_floor` (numpy quadrature, float64); :func:`generate_data` (batched BAOAB
through :func:`cgbench.langevin.run_langevin`), :func:`write_data`, :func:`load_data`;
:func:`pmf_error`, :func:`populated_range`, :func:`evaluation_edges` (CG-BG's PMF error on 1-D
bins).

Integrator: CG-BG's own sampler is a semi-implicit Euler scheme
(``v += dt F/m − γ v dt + sqrt(2γkT/m dt) ξ; x += v dt``) with no equilibration; here the data
come from BAOAB (:mod:`cgbench.langevin`), whose configurational sampling error is O(dt²) and
small at dt = 0.1 (the stiffest curvature of V near the wells gives ω dt ≈ 0.12). The project's
integrator works unchanged on positions shaped ``(B, 1, 2)``: nothing in it assumes the last
axis has length 3 (masses broadcast as ``(n, 1)``, noise takes the shape of the velocities), so
no separate integrator is needed. ``temperature = kT / GAS_CONSTANT`` makes its kT equal ``kT``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from scipy.special import logsumexp

from cgbench.atomic import atomic_savez
from cgbench.langevin import run_langevin
from cgbench.units import GAS_CONSTANT

#: The four terms of V: (A, a, b, c, x0, y0) of A·exp(a (x−x0)² + b (x−x0)(y−y0) + c (y−y0)²).
TERMS = (
    (-17.3, -0.0039, 0.0, -0.0391, 48.0, 8.0),
    (-8.7, -0.0039, 0.0, -0.0391, 32.0, 16.0),
    (-14.7, -0.0254, 0.043, -0.0254, 24.0, 32.0),
    (1.3, 0.00273, 0.0023, 0.00273, 16.0, 24.0),
)
#: Defaults of the CG-BG bias B(x) = −height·exp(−(x−centre)²/(2 width²)).
BIAS_HEIGHT, BIAS_CENTRE, BIAS_WIDTH = 4.0, 32.0, 5.0
#: y interval of the exact PMF (CG-BG).
Y_RANGE = (0.0, 50.0)
#: x interval of the quadratures over x (:func:`exact_force_floor`, :func:`evaluation_edges`):
#: F − min F > 35 kT outside it (F(−20) ≈ 35.7, F(−25) ≈ 69, F(55) ≈ 38, F(60) ≈ 105).
X_RANGE = (-25.0, 60.0)


def _terms(x, y, xp):
    """The four terms of V as a list of arrays, in array namespace ``xp`` (numpy or jax.numpy)."""
    return [A * xp.exp(a * (x - x0) ** 2 + b * (x - x0) * (y - y0) + c * (y - y0) ** 2)
            for A, a, b, c, x0, y0 in TERMS]


def _potential_np(x, y):
    """V(x, y) in kT, numpy float64, broadcasting ``x`` against ``y``."""
    return sum(_terms(np.asarray(x, float), np.asarray(y, float), np)) + 0.0


def _force_x_np(x, y):
    """−∂V/∂x (x, y), kT per unit length, numpy float64 (analytic), broadcasting ``x`` against ``y``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    terms = _terms(x, y, np)
    return -sum(t * (2 * a * (x - x0) + b * (y - y0)) for t, (_, a, b, _, x0, y0) in zip(terms, TERMS))


def potential(xy: Float[Array, "... 2"]) -> Float[Array, "..."]:
    """The Müller-Brown potential V(x, y) of CG-BG, kT (unbiased).

    Args:
        xy: Points, shape ``(..., 2)`` with ``xy[..., 0] = x`` and ``xy[..., 1] = y``.

    Returns:
        V, shape ``(...)``, in the dtype of ``xy``. Pure JAX: differentiable, jit- and vmap-able.
    """
    xy = jnp.asarray(xy)
    return sum(_terms(xy[..., 0], xy[..., 1], jnp))


def bias(x: Float[Array, "..."], *, height: float = BIAS_HEIGHT, centre: float = BIAS_CENTRE,
         width: float = BIAS_WIDTH) -> Float[Array, "..."]:
    """CG-BG's static bias on the CG coordinate, B(x) = −height·exp(−(x − centre)²/(2 width²)), kT.

    Args:
        x: CG coordinate, any shape ``(...)``; a JAX array (or tracer) gives a JAX result,
            anything else (numpy arrays, floats) a numpy one.
        height: Depth of the Gaussian well, kT (4 in CG-BG).
        centre: Its centre, length units (32, near the barrier of F).
        width: Its standard deviation, length units (5).

    Returns:
        B, shape ``(...)``, kT (≤ 0).
    """
    xp = jnp if isinstance(x, jax.Array) else np
    return -height * xp.exp(-((x - centre) ** 2) / (2.0 * width**2))


def _simulated_energy(xy, biased: bool):
    energy = potential(xy)
    return energy + bias(xy[..., 0]) if biased else energy


def _forces_unbiased(positions):
    """``positions (B, 1, 2) -> (V (B,), −∇V (B, 1, 2))``: the force function of unbiased runs."""
    energy, gradient = jax.vmap(jax.value_and_grad(lambda p: _simulated_energy(p[0], False)))(positions)
    return energy, -gradient


def _forces_biased(positions):
    """``positions (B, 1, 2) -> (V + B (B,), −∇(V + B) (B, 1, 2))``: the force function of biased runs."""
    energy, gradient = jax.vmap(jax.value_and_grad(lambda p: _simulated_energy(p[0], True)))(positions)
    return energy, -gradient


@jax.jit
def _unbiased_energy_and_force_x(xy):
    """``xy (N, 2) -> (V (N,), −∂V/∂x (N,))`` of the unbiased potential."""
    energy, gradient = jax.vmap(jax.value_and_grad(potential))(xy)
    return energy, -gradient[:, 0]


def _y_quadrature(y_range, n_y):
    """Simpson nodes ``(n_y,)`` and log-weights ``(n_y,)`` on ``y_range`` (``n_y`` odd, ≥ 3)."""
    if n_y < 3 or n_y % 2 == 0:
        raise ValueError(f"n_y = {n_y}: Simpson's rule needs an odd number ≥ 3 of nodes")
    y = np.linspace(y_range[0], y_range[1], n_y)
    h = (y_range[1] - y_range[0]) / (n_y - 1)
    weights = np.full(n_y, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return y, np.log(weights * h / 3.0)


def _log_conditional(x, *, kT, y_range, n_y):
    """For x ``(n,)``: y nodes ``(n_y,)``, ``log Z(x)`` ``(n,)`` and the normalised log quadrature
    weights of p(y | x) ``(n, n_y)`` (they sum to 1 over y)."""
    y, log_w = _y_quadrature(y_range, n_y)
    log_integrand = -_potential_np(x[:, None], y[None, :]) / kT + log_w
    log_z = logsumexp(log_integrand, axis=1)
    return y, log_z, log_integrand - log_z[:, None]


def exact_pmf(x, *, kT: float = 1.0, y_range: tuple[float, float] = Y_RANGE, n_y: int = 1001) -> np.ndarray:
    """Exact PMF F(x) = −kT log ∫ exp(−V(x, y)/kT) dy over ``y_range``, shifted to min 0 over ``x``.

    Simpson's rule on ``n_y`` nodes, summed with logsumexp (no under- or overflow however high
    V is). The narrowest y feature of V is the well at y = 8 (σ_y ≈ 3.6): the default node
    spacing 0.05 agrees with 0.025 and 0.1 to ~1e-12 kT.

    Args:
        x: CG coordinates, any shape; float64 numpy.
        kT: Thermal energy in the units of V (1 in CG-BG).
        y_range: Integration interval of y ((0, 50) in CG-BG).
        n_y: Number of Simpson nodes, odd.

    Returns:
        F, numpy float64 of the shape of ``x``, in the units of V (kT at kT = 1), with
        ``F.min() == 0``.
    """
    x = np.asarray(x, float)
    _, log_z, _ = _log_conditional(x.reshape(-1), kT=kT, y_range=y_range, n_y=n_y)
    free_energy = -kT * log_z
    return (free_energy - free_energy.min()).reshape(x.shape)


def exact_force_floor(*, biased: bool, kT: float = 1.0, x_range: tuple[float, float] = X_RANGE,
                      n_x: int = 1701, y_range: tuple[float, float] = Y_RANGE, n_y: int = 1001) -> float:
    """The irreducible mean-squared error of force matching on x: E_x[Var_y(−∂V/∂x | x)].

    The best possible force-matching model on x is the mean force −F'(x) = E[−∂V/∂x | x]; its
    mean-squared error against the instantaneous forces is the conditional variance averaged
    over the data's x marginal. Data from the unbiased equilibrium have p(x) ∝ exp(−F/kT);
    biased data p_B(x) ∝ exp(−(F + B)/kT) with the same p(y | x) (B acts on x only). The stored
    forces are always those of the unbiased V, so only the x average changes.

    Quadrature: Simpson in y on ``y_range`` (as :func:`exact_pmf`), a uniform grid of ``n_x``
    points on ``x_range`` for the x average (the x density is smooth, F − min F > 35 kT at the
    ends of the default range). The defaults (spacing 0.05 in x and y) agree with spacings
    0.025 and 0.1 to ~1e-14 relative.

    Args:
        biased: Average over the biased (True) or the unbiased (False) x marginal.
        kT: Thermal energy (1 in CG-BG).
        x_range, n_x: Grid of the x average.
        y_range, n_y: Simpson rule of the y integrals.

    Returns:
        The floor, a mean-square force in kT² per unit length² (a Python float).
    """
    x = np.linspace(x_range[0], x_range[1], n_x)
    y, log_z, log_p_y = _log_conditional(x, kT=kT, y_range=y_range, n_y=n_y)
    p_y = np.exp(log_p_y)
    force = _force_x_np(x[:, None], y[None, :])
    mean = np.sum(p_y * force, axis=1)
    variance = np.sum(p_y * (force - mean[:, None]) ** 2, axis=1)
    log_p_x = log_z - (bias(x) / kT if biased else 0.0)
    p_x = np.exp(log_p_x - logsumexp(log_p_x))
    return float(np.sum(p_x * variance))


def generate_data(*, biased: bool, trajectories: int = 10, frames: int = 2000, report_interval: int = 100,
                  timestep: float = 0.1, friction: float = 0.1, mass: float = 1.0,
                  equilibration_steps: int = 10_000, start_range: tuple[float, float] = (10.0, 50.0),
                  start: Float[Array, "B 2"] | None = None, kT: float = 1.0, dtype=jnp.float32,
                  key: PRNGKeyArray) -> dict:
    """CG-BG's Müller-Brown training data: batched BAOAB Langevin dynamics of all trajectories at once.

    Every trajectory starts at a point drawn uniformly from ``start_range``² (x and y independent)
    with Maxwell-Boltzmann velocities, runs ``equilibration_steps`` unsaved steps, then
    ``frames × report_interval`` steps saving a frame every ``report_interval`` steps. The
    default equilibration, 10 000 steps = 1000 time units = 100/γ, is ~100 velocity relaxation
    times and several intra-well position relaxation times; it does not (and need not) mix the
    wells — CG-BG's own sampler has none. The simulated potential is V, plus B(x) if ``biased``.
    Defaults are CG-BG's: 10 × 2000 frames = 20 000, dt 0.1, γ 0.1, m 1, kT 1.

    Args:
        biased: Simulate V + B (True) or V (False).
        trajectories: Number of independent trajectories B, run as one batch.
        frames: Saved frames per trajectory.
        report_interval: Steps between saved frames.
        timestep: dt, time units.
        friction: γ, inverse time units.
        mass: Particle mass (the same in x and y).
        equilibration_steps: Unsaved steps before the first frame (0: none); need not be a
            multiple of ``report_interval``.
        start_range: Interval of the uniform start in both x and y.
        start: Optional start configurations ``(trajectories, 2)`` (x, y) instead of the uniform
            draw (e.g. exact equilibrium draws, to test stationarity); ``start_range`` is then unused.
        kT: Thermal energy (1 in CG-BG); passed to the integrator as
            ``temperature = kT / GAS_CONSTANT``.
        dtype: Of the simulation (float64 needs ``jax_enable_x64``).
        key: PRNG key; the same key gives bit-identical data.

    Returns:
        A dict in the layout of the project's CG datasets (:mod:`cgbench.datasets`), frames
        ordered by trajectory then time (trajectory 0's frames first), ``N = trajectories × frames``:

        - ``positions`` (N, 1) float32: x;
        - ``forces`` (N, 1) float32: −∂V/∂x of the **unbiased** V at the frame (also for biased
          data: the force-matching target; the bias is never in it), kT per unit length;
        - ``xy`` (N, 2) float32: the full configuration;
        - ``potential_energy`` (N,) float64: unbiased V, kT;
        - ``bias_energy`` (N,) float64: B(x) for biased data, 0 otherwise, kT;
        - ``weights`` (N,) float64: normalised (sum 1) importance weights of the unbiased
          ensemble, ∝ exp(+B(x)/kT) for biased data, uniform otherwise;
        - ``replica`` (N,) int32: trajectory index; ``time`` (N,) float64: time since the end of
          the equilibration, time units (first frame at ``report_interval × timestep``);
        - ``kT`` (float, 1.0 by default), ``biased`` (bool).
    """
    if frames < 1 or trajectories < 1:
        raise ValueError(f"frames {frames} and trajectories {trajectories} must be ≥ 1")
    start_key, equilibration_key, production_key = jax.random.split(key, 3)
    temperature = kT / GAS_CONSTANT
    forces_fn = _forces_biased if biased else _forces_unbiased
    masses = jnp.full((1,), mass, dtype)
    if start is None:
        start = jax.random.uniform(start_key, (trajectories, 1, 2), dtype, minval=start_range[0],
                                   maxval=start_range[1])
    else:
        start = jnp.asarray(start, dtype).reshape(trajectories, 1, 2)
    common = dict(dt=timestep, friction=friction, temperature=temperature, masses=masses)
    if equilibration_steps > 0:
        state = run_langevin(forces_fn, start, steps=equilibration_steps, report_interval=equilibration_steps,
                             key=equilibration_key, **common)["state"]
        run = run_langevin(forces_fn, state, steps=frames * report_interval, report_interval=report_interval,
                           key=production_key, **common)
    else:
        run = run_langevin(forces_fn, start, steps=frames * report_interval, report_interval=report_interval,
                           key=production_key, **common)
    # (frames, B, 1, 2) -> (B, frames, 2) -> (N, 2): trajectory-major order.
    xy = np.asarray(run["positions"])[:, :, 0, :].transpose(1, 0, 2).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise FloatingPointError("Langevin run diverged (non-finite positions); lower the timestep")
    energy, force_x = (np.asarray(a) for a in _unbiased_energy_and_force_x(jnp.asarray(xy)))
    x = xy[:, 0].astype(np.float64)
    bias_energy = bias(x) if biased else np.zeros_like(x)
    log_w = bias_energy / kT
    weights = np.exp(log_w - logsumexp(log_w))
    return {
        "positions": xy[:, :1].astype(np.float32),
        "forces": force_x[:, None].astype(np.float32),
        "xy": xy.astype(np.float32),
        "potential_energy": energy.astype(np.float64),
        "bias_energy": bias_energy,
        "weights": weights,
        "replica": np.repeat(np.arange(trajectories, dtype=np.int32), frames),
        "time": np.tile(np.asarray(run["time"], np.float64), trajectories),
        "kT": float(kT),
        "biased": bool(biased),
    }


def write_data(path: str | Path, data: dict) -> Path:
    """Write ``data`` (from :func:`generate_data`) to ``path`` (.npz) atomically (:mod:`cgbench.atomic`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, **data)
    return path


def load_data(path: str | Path) -> dict:
    """Data written by :func:`write_data`: arrays as numpy arrays, ``kT`` as float, ``biased`` as bool."""
    with np.load(path) as f:
        out = {name: f[name] for name in f.files}
    out["kT"] = float(out["kT"])
    if "biased" in out:
        out["biased"] = bool(out["biased"])
    return out


def bin_log_masses(x_edges, energy, kT, points_per_bin):
    """Unnormalised log ∫_bin exp(−E/kT) dx per bin ``(n_bins,)``, midpoint rule.

    ``energy``: a callable (numpy or JAX, x array -> energies) evaluated at ``points_per_bin``
    equally spaced midpoints of each bin, or an array ``(n_bins,)`` of values at bin centres.
    """
    edges = np.asarray(x_edges, float)
    widths = np.diff(edges)
    if callable(energy):
        fractions = (np.arange(points_per_bin) + 0.5) / points_per_bin
        nodes = edges[:-1, None] + widths[:, None] * fractions[None, :]
        values = np.asarray(energy(nodes.reshape(-1)), float).reshape(nodes.shape)
    else:
        if points_per_bin != 1:
            raise ValueError("points_per_bin > 1 needs callables, not values at bin centres")
        values = np.asarray(energy, float).reshape(-1, 1)
        if len(values) != len(widths):
            raise ValueError(f"{len(values)} energies for {len(widths)} bins")
    return logsumexp(-values / kT, axis=1) + np.log(widths / values.shape[1])


def pmf_error(x_edges, exact_free_energy, model_energy, *, kT: float = 1.0, points_per_bin: int = 1,
              floor: float = 1e-10) -> float:
    """CG-BG's PMF error on 1-D bins: Σ_b w_b (log p_b − log q_b)², (kT)², no square root.

    p_b ∝ ∫_bin exp(−F/kT) (exact), q_b ∝ ∫_bin exp(−U_model/kT), each normalised over the bins;
    bins with a mass below ``floor`` get ``floor`` (CG-BG fill empty histogram bins with 1e-10:
    for histograms the two rules agree); w_b = m_b / Σ m with m = (p + q)/2. Invariant to adding
    a constant to either energy. The integrals are midpoint rules with ``points_per_bin`` nodes per
    bin (1: the bin centre), times the bin width (which cancels for equal bins).

    Args:
        x_edges: Bin edges ``(n_bins + 1,)``, increasing (e.g. :func:`evaluation_edges`).
        exact_free_energy: F — a callable ``x -> F(x)`` (e.g. :func:`exact_pmf`) or its values at
            the bin centres ``(n_bins,)``; kT units.
        model_energy: U_model, the same kinds (a JAX model works: its output is converted with
            ``np.asarray``).
        kT: Thermal energy.
        points_per_bin: Midpoint nodes per bin for callables.
        floor: Smallest bin probability.

    Returns:
        The error, (kT)², a Python float.
    """
    log_p = bin_log_masses(x_edges, exact_free_energy, kT, points_per_bin)
    log_q = bin_log_masses(x_edges, model_energy, kT, points_per_bin)
    p = np.maximum(np.exp(log_p - logsumexp(log_p)), floor)
    q = np.maximum(np.exp(log_q - logsumexp(log_q)), floor)
    m = 0.5 * (p + q)
    return float(np.sum(m / m.sum() * (np.log(p) - np.log(q)) ** 2))


def populated_range(x, free_energy, *, cutoff: float = 10.0) -> tuple[float, float]:
    """The smallest interval of ``x`` holding every point with F − min F ≤ ``cutoff`` (kT).

    Args:
        x: Grid points ``(n,)``.
        free_energy: F on them ``(n,)``, kT.
        cutoff: kT above the minimum.

    Returns:
        ``(low, high)``, grid values (so resolved to the grid spacing).
    """
    x, free_energy = np.asarray(x, float), np.asarray(free_energy, float)
    inside = x[free_energy - free_energy.min() <= cutoff]
    return float(inside.min()), float(inside.max())


def evaluation_edges(*, n_bins: int = 100, cutoff: float = 10.0, biased: bool = False, kT: float = 1.0,
                     x_range: tuple[float, float] = X_RANGE, n_x: int = 8501) -> np.ndarray:
    """Bin edges for :func:`pmf_error`: ``n_bins`` equal bins over the :func:`populated_range` of F.

    Args:
        n_bins: Number of bins (100 as in CG-BG's histograms).
        cutoff: kT above the minimum of F (or of F + B if ``biased``) that bounds the range.
        biased: Take the range of F + B instead of F.
        kT: Thermal energy.
        x_range, n_x: Grid on which F is evaluated (spacing 0.01 by default).

    Returns:
        Edges ``(n_bins + 1,)``, length units. Default: [8.82, 48.71] (unbiased, 10 kT).
    """
    x = np.linspace(x_range[0], x_range[1], n_x)
    free_energy = exact_pmf(x, kT=kT)
    if biased:
        free_energy = free_energy + bias(x)
    low, high = populated_range(x, free_energy / kT, cutoff=cutoff)
    return np.linspace(low, high, n_bins + 1)
