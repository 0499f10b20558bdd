"""Synthetic targets of the ECG paper (sections 3.1 and 3.2) with their exact references.

Each target is a Boltzmann density over a slow coordinate ``z`` (shape ``(dim_z,)``) and a
fast coordinate ``x`` (shape ``(dim_x,)``):

    p_β(z, x) ∝ exp(-β U(z, x)),

with U in units of kT at β = 1 (the synthetic targets are dimensionless, β_target = 1).
Besides the energy, every target knows, exactly:

- the conditional p_β(x | z) (sampling and log-density),
- the tempered marginal log p_β(z) up to a z-independent constant,
- the 1-D marginal bin masses and the mode masses of p_β(z) on the flow's support
  ``[-bound, bound]^dim_z`` where a closed form or low-dimensional quadrature exists.

References are restricted to that support (the flow cannot put mass outside it). At β = 1
the mass outside is negligible (< 1e-30 for the double well on [-5, 5]); at the smallest
β of a tempering run it is not, which is why the restriction is stated.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import logsumexp
from scipy import integrate, special


class SyntheticTarget(eqx.Module):
    """Interface shared by the synthetic targets (see module docstring)."""

    @property
    @abc.abstractmethod
    def dim_z(self) -> int: ...

    @property
    @abc.abstractmethod
    def dim_x(self) -> int: ...

    @property
    @abc.abstractmethod
    def mode_names(self) -> list[str]: ...

    @abc.abstractmethod
    def energy(self, z, x):
        """U(z, x) in kT at β = 1 for one configuration: z (dim_z,), x (dim_x,) → scalar."""

    @abc.abstractmethod
    def log_marginal(self, z, beta):
        """log p_β(z) up to a z-independent constant, for one z of shape (dim_z,)."""

    @abc.abstractmethod
    def conditional_sample(self, z, beta, *, key):
        """One exact draw of x ~ p_β(x | z) for z of shape (dim_z,); returns (dim_x,)."""

    @abc.abstractmethod
    def conditional_log_prob(self, x, z, beta):
        """Normalised log p_β(x | z) for one (x, z); returns a scalar."""

    @abc.abstractmethod
    def mode_index(self, z):
        """Index into :attr:`mode_names` of the mode z (dim_z,) belongs to."""

    @abc.abstractmethod
    def initial_z(self, n: int, *, key):
        """n starting points for MCMC chains, shape (n, dim_z), spread over all modes."""

    @abc.abstractmethod
    def exact_mode_masses(self, beta: float, bound: float) -> np.ndarray | None:
        """Mode masses of p_β(z) on [-bound, bound]^dim_z, or None where no exact value exists."""

    @abc.abstractmethod
    def exact_marginal_bins(self, beta: float, bound: float, edges: np.ndarray) -> np.ndarray | None:
        """Bin masses of every 1-D marginal of p_β(z) on the support: (dim_z, len(edges)-1), or None."""


class DoubleWell(SyntheticTarget):
    """Asymmetric double well, U = ¼x1⁴ − 3x1² + x1 + ½x2², with z = x1 and x = x2.

    The conditional p_β(x2 | x1) = N(0, 1/β) does not depend on x1, so the marginal
    free energy is F(x1) = ¼x1⁴ − 3x1² + x1 exactly and its mean force is −F'(x1).
    """

    @property
    def dim_z(self) -> int:
        return 1

    @property
    def dim_x(self) -> int:
        return 1

    @property
    def mode_names(self) -> list[str]:
        return ["x1_negative", "x1_positive"]

    @staticmethod
    def free_energy(z1):
        """Exact marginal free energy F(x1) in kT at β = 1 (any array shape)."""
        return 0.25 * z1**4 - 3.0 * z1**2 + z1

    def energy(self, z, x):
        return self.free_energy(z[0]) + 0.5 * x[0] ** 2

    def log_marginal(self, z, beta):
        return -beta * self.free_energy(z[0])

    def conditional_sample(self, z, beta, *, key):
        return jr.normal(key, (1,), dtype=z.dtype) / jnp.sqrt(beta)

    def conditional_log_prob(self, x, z, beta):
        return jnp.sum(0.5 * jnp.log(beta / (2 * jnp.pi)) - 0.5 * beta * x**2)

    def mode_index(self, z):
        return (z[0] > 0).astype(jnp.int32)

    def initial_z(self, n, *, key):
        return jr.uniform(key, (n, 1), minval=-3.0, maxval=3.0)

    def cdf(self, t, beta, bound, num=400_001):
        """Exact CDF of p_β(x1) restricted to [-bound, bound], at points t (cumulative Simpson)."""
        z1 = np.linspace(-bound, bound, num)
        log_p = -beta * self.free_energy(z1)
        cumulative = integrate.cumulative_simpson(np.exp(log_p - log_p.max()), x=z1, initial=0.0)
        return np.interp(t, z1, cumulative / cumulative[-1])

    def exact_mode_masses(self, beta, bound):
        negative = float(self.cdf(0.0, beta, bound))
        return np.array([negative, 1.0 - negative])

    def exact_marginal_bins(self, beta, bound, edges):
        return np.diff(self.cdf(np.asarray(edges, dtype=float), beta, bound))[None, :]


class GaussianMixture(SyntheticTarget):
    """Gaussian mixture of ECG §3.2: p(z) = Σ_k π_k N(m_k, σ²I), p(x | z) = N(Bz, σ²I).

    U(z, x) = −log p(z) − log p(x | z), so exp(−U) is the normalised joint at β = 1. The
    tempered conditional is p_β(x | z) = N(Bz, σ²/β · I), whose normaliser does not depend
    on z, hence log p_β(z) = β log p(z) + const and the mean force on z is β∇log p(z)/β.

    Attributes:
        means: (n_modes, dim_z) mode centres m_k.
        coupling: (dim_x, dim_z) matrix B.
        variance: σ², the same for every mode and for the conditional.
    """

    means: jax.Array
    coupling: jax.Array
    variance: float = eqx.field(static=True)

    @classmethod
    def from_seed(cls, *, dim_z: int, dim_x: int, n_modes: int, variance: float, seed: int):
        """Draw m_k ~ U[-1, 1]^dim_z and B_ij ~ N(0, 1) from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        means = rng.uniform(-1.0, 1.0, size=(n_modes, dim_z))
        coupling = rng.normal(size=(dim_x, dim_z))
        return cls(jnp.asarray(means, jnp.float32), jnp.asarray(coupling, jnp.float32), float(variance))

    @property
    def dim_z(self) -> int:
        return self.means.shape[1]

    @property
    def dim_x(self) -> int:
        return self.coupling.shape[0]

    @property
    def mode_names(self) -> list[str]:
        return [f"mode_{k}" for k in range(self.means.shape[0])]

    def log_prob_z(self, z):
        """Normalised log p(z) of the mixture at β = 1, for z (dim_z,)."""
        n_modes, dim = self.means.shape
        sq = jnp.sum((z - self.means) ** 2, axis=-1)
        log_components = -0.5 * sq / self.variance - 0.5 * dim * jnp.log(2 * jnp.pi * self.variance)
        return logsumexp(log_components) - jnp.log(n_modes)

    def energy(self, z, x):
        return -self.log_prob_z(z) - self.conditional_log_prob(x, z, 1.0)

    def log_marginal(self, z, beta):
        return beta * self.log_prob_z(z)

    def conditional_sample(self, z, beta, *, key):
        noise = jr.normal(key, (self.dim_x,), dtype=z.dtype)
        return self.coupling @ z + jnp.sqrt(self.variance / beta) * noise

    def conditional_log_prob(self, x, z, beta):
        var = self.variance / beta
        r = x - self.coupling @ z
        return -0.5 * jnp.sum(r**2) / var - 0.5 * self.dim_x * jnp.log(2 * jnp.pi * var)

    def mode_index(self, z):
        return jnp.argmin(jnp.sum((z - self.means) ** 2, axis=-1))

    def initial_z(self, n, *, key):
        return jr.uniform(key, (n, self.dim_z), minval=-1.0, maxval=1.0)

    def min_mode_separation(self) -> float:
        """Smallest distance between two mode centres, in units of σ."""
        m = np.asarray(self.means)
        d = np.linalg.norm(m[:, None] - m[None], axis=-1) + np.diag(np.full(len(m), np.inf))
        return float(d.min() / np.sqrt(self.variance))

    def _grid_2d(self, beta, bound, num=801):
        t = np.linspace(-bound, bound, num)
        zz = np.stack(np.meshgrid(t, t, indexing="ij"), axis=-1).reshape(-1, 2)
        log_p = np.asarray(jax.vmap(lambda z: self.log_marginal(z, beta))(jnp.asarray(zz, jnp.float32)),
                           dtype=float)
        p = np.exp(log_p - log_p.max())
        return t, zz, p / p.sum()

    def exact_mode_masses(self, beta, bound):
        if self.dim_z == 2:
            _, zz, p = self._grid_2d(beta, bound)
            labels = np.argmin(((zz[:, None, :] - np.asarray(self.means)[None]) ** 2).sum(-1), axis=1)
            return np.bincount(labels, weights=p, minlength=self.means.shape[0])
        if beta == 1.0:
            # Components are separated by many σ (see min_mode_separation), so the
            # nearest-centre region of mode k holds its weight 1/n_modes to < 1e-6.
            n = self.means.shape[0]
            return np.full(n, 1.0 / n)
        return None

    def exact_marginal_bins(self, beta, bound, edges):
        edges = np.asarray(edges, dtype=float)
        if self.dim_z == 2:
            t, _, p = self._grid_2d(beta, bound)
            p = p.reshape(len(t), len(t))
            out = []
            for axis in range(2):
                marginal = p.sum(axis=1 - axis)
                out.append(np.histogram(t, bins=edges, weights=marginal)[0])
            out = np.array(out)
            return out / out.sum(axis=1, keepdims=True)
        if beta == 1.0:
            sd = np.sqrt(self.variance)
            m = np.asarray(self.means, dtype=float)  # (K, d)
            cdf = special.ndtr((edges[None, None, :] - m[:, :, None]) / sd)  # (K, d, E)
            masses = np.diff(cdf, axis=-1).mean(axis=0)
            return masses / masses.sum(axis=1, keepdims=True)
        return None


def make_target(name: str, spec: dict) -> SyntheticTarget:
    """Build a target from its ``targets.<name>`` block of the resolved config."""
    if name == "double_well":
        return DoubleWell()
    if name.startswith("gmm"):
        return GaussianMixture.from_seed(
            dim_z=spec["dim_z"], dim_x=spec["dim_x"], n_modes=spec["n_modes"],
            variance=spec["variance"], seed=spec["seed"],
        )
    raise ValueError(f"unknown synthetic target {name!r}")
