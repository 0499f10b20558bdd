"""Coarse-grained Boltzmann generators (CG-BG): a flow proposal q(R) reweighted with a learned PMF.

CG-BG (arXiv 2602.10637) learns two things from (biased or unbiased) MD mapped to CG beads: a
PMF U_η(R) by force matching (:mod:`cgbench.pmf_training`) and a proposal q_θ(R) by maximum
likelihood on the same frames; proposals R ~ q_θ are then importance-weighted,

    log w = −U_η(R)/kT − log q_θ(R),                 self-normalised,

which turns them into samples of exp(−U_η/kT) without any simulation. CG-BG used a continuous
normalising flow (exact-divergence ODE likelihood, minutes per 10⁴ samples on a GPU); cgbench
uses discrete flowjax coupling flows with rational-quadratic splines (:func:`cgbench.flows.make_flow`),
whose log-density is exact and cheap.

Representations (:class:`FlowCoordinates`): the flow acts on features u in the box
[−I, I]^d of :func:`cgbench.flows.make_flow` (I = ``interval``), d = 3n − 6 for n beads:

- ``cartesian`` (ECG's): the free coordinates F of the canonical frame
  (:func:`cgbench.resolutions.to_canonical_frame`: N of residue 1 at the origin, CA on +z, C in
  the xz-plane), standardised, u = (F − μ)/σ.
- ``internal``: the Z-matrix coordinates of :mod:`cgbench.internal_coordinates` (bond lengths,
  angles, torsions), the usual choice for coupling flows on molecules. Bonds and angles are
  standardised like F. A torsion whose data stay within a narrow arc (I circular standard
  deviations on either side of its circular mean fit in (−π, π): the torsions that place a
  branch — CB, O — against a sibling) is standardised on that arc, so the proposal cannot reach
  the other side — the mirror form of CA. Any other torsion (φ, ψ) lives on the circle: it is
  first rotated so that the widest run of least-populated bins of the data (a 36-bin histogram)
  is cut in its middle at ±π, τ' = wrap(τ − c), and then sent through the inverse CDF of the
  base, u = G⁻¹((τ' + π)/2π) with G the CDF of the standard normal truncated to [−I, I]. So the
  identity flow is *uniform* on such a torsion, the seam falls where the data have (almost) no
  mass, and the flow need only learn the deviation from uniform.

Densities. A flow gives log q_u(u). The Boltzmann density is one over Cartesian coordinates
modulo rigid motions; :meth:`CGFlow.log_proposal` returns q with respect to that same measure,

    log q(R) = log q_u(u) + log|du/dy| − log V(y),

y the representation's coordinates (F or the Z-matrix ones) and V(y) its volume factor
(∫d³ⁿx f = const ∫ dy V(y) f for rigid-invariant f): V = z_CA² x_C for the canonical frame, and
Π b² Π sin θ for internal coordinates (:func:`cgbench.internal_coordinates.log_volume_canonical`,
:func:`~cgbench.internal_coordinates.log_volume_internal`). The constants dropped are the same
for every sample, so self-normalised weights do not see them. Energies are in kJ/mol and reduced
by kT = R·T (kJ/mol) explicitly.

Training data outside the box (a standardised bond or angle beyond ±I, i.e. > I σ from its
mean) would have log q = −∞; such frames are dropped and counted (I = 5: a handful in 10⁵).
Proposals the box maps to impossible geometry (a negative bond length or an angle beyond π, only
possible when a coordinate's mean is within I σ of its bound) have a non-finite log q and get
weight 0, which leaves the self-normalised estimate consistent.

Chirality: the data of an L-peptide have no D-form; the proposal's share of D-form samples (the
sign of the improper N–CA–C–CB volume of every residue against the data's) is measured and
reported (:func:`d_form`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import ndtr, ndtri
from jax.scipy.stats import norm

from cgbench import internal_coordinates as ic
from cgbench.flows import make_flow
from cgbench.resolutions import free_coordinates, to_canonical_frame, from_free_coordinates

log = logging.getLogger(__name__)

#: Flow representations compared in the accuracy table.
REPRESENTATIONS = ("cartesian", "internal")

#: Bins of the torsion histogram that places each circular torsion's seam.
SEAM_BINS = 36

#: Kinds of flow coordinates: standardised on the line, standardised on an arc of the circle
#: (narrow torsions), and circular (torsions through the base's inverse CDF).
LINEAR, ARC, CIRCLE = 0, 1, 2


def _wrap(angle):
    return (angle + jnp.pi) % (2 * jnp.pi) - jnp.pi


class FlowCoordinates(eqx.Module):
    """The bijection between bead positions and the flow's features u ∈ [−I, I]^d.

    Build with :func:`fit_coordinates`. Its arrays are fixed by the data (never trained: the
    training loop trains the flow alone on precomputed features).

    Attributes:
        representation: ``cartesian`` or ``internal``.
        shift, scale: ``(d,)``; u = (y − shift)/scale on :data:`LINEAR` entries, wrap(y − shift)/scale
            on :data:`ARC` ones (shift the circular mean); on :data:`CIRCLE` ones ``shift`` is the
            seam offset c (rad) and ``scale`` is unused (1).
        kind: ``d`` ints (a tuple: static), :data:`LINEAR`, :data:`ARC` or :data:`CIRCLE`.
        interval: I, the half-width of the box (the flow's spline interval).
        zmatrix: :class:`cgbench.internal_coordinates.ZMatrix` (``internal`` only, else None).
        mapping: :class:`cgbench.resolutions.CGMapping` of the beads (gives the canonical frame).
    """

    representation: str = eqx.field(static=True)
    shift: jax.Array
    scale: jax.Array
    kind: tuple[int, ...] = eqx.field(static=True)
    interval: float = eqx.field(static=True)
    zmatrix: object = eqx.field(static=True)
    mapping: object = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return len(self.kind)

    def coordinates(self, positions):
        """``(n, 3)`` nm → y ``(d,)``: free canonical coordinates, or Z-matrix coordinates."""
        if self.representation == "cartesian":
            return free_coordinates(to_canonical_frame(positions, self.mapping), self.mapping)
        return ic.to_internal(positions, self.zmatrix)

    def positions(self, y):
        """y ``(d,)`` → ``(n, 3)`` nm in the canonical frame."""
        if self.representation == "cartesian":
            return from_free_coordinates(y, self.mapping)
        return ic.from_internal(y, self.zmatrix)

    def log_volume(self, y):
        """log V(y): the Cartesian volume factor of the representation (module docstring)."""
        if self.representation == "cartesian":
            return ic.log_volume_canonical(y, self.mapping)
        return ic.log_volume_internal(y, self.zmatrix)

    def _tail_mass(self):
        return ndtr(-self.interval)

    def to_features(self, y):
        """y ``(d,)`` → (u ``(d,)``, log|du/dy|)."""
        shift, scale = jax.lax.stop_gradient((self.shift, self.scale))
        kind = np.asarray(self.kind)
        linear = jnp.where(kind == ARC, _wrap(y - shift), y - shift) / scale
        a = self._tail_mass()
        m = 1.0 - 2.0 * a
        s = (_wrap(y - shift) + jnp.pi) / (2 * jnp.pi)           # in [0, 1)
        t = jnp.where(s < 0.5, s, 1.0 - s)
        v = ndtri(a + t * m)
        circular = jnp.where(s < 0.5, v, -v)
        u = jnp.where(kind == CIRCLE, circular, linear)
        log_du = jnp.where(kind == CIRCLE, jnp.log(m) - jnp.log(2 * jnp.pi) - norm.logpdf(circular), -jnp.log(scale))
        return u, jnp.sum(log_du)

    def from_features(self, u):
        """u ``(d,)`` → (y ``(d,)``, log|du/dy|)."""
        shift, scale = jax.lax.stop_gradient((self.shift, self.scale))
        kind = np.asarray(self.kind)
        a = self._tail_mass()
        m = 1.0 - 2.0 * a
        s = (ndtr(u) - a) / m
        circular = _wrap(2 * jnp.pi * s - jnp.pi + shift)
        linear = u * scale + shift
        y = jnp.where(kind == CIRCLE, circular, jnp.where(kind == ARC, _wrap(linear), linear))
        log_du = jnp.where(kind == CIRCLE, jnp.log(m) - jnp.log(2 * jnp.pi) - norm.logpdf(u), -jnp.log(scale))
        return y, jnp.sum(log_du)


def _seam(angles: np.ndarray, weights: np.ndarray) -> float:
    """The offset c that puts the cut of wrap(τ − c) in the middle of the widest run of
    least-populated bins (:data:`SEAM_BINS` on the circle): c = that angle + π."""
    edges = np.linspace(-np.pi, np.pi, SEAM_BINS + 1)
    h, _ = np.histogram(angles, edges, weights=weights)
    low = h <= h.min()
    start = int(np.argmin(low)) if not low.all() else 0        # a populated bin: runs do not wrap past it
    best_length, best_middle, length = 0, 0.0, 0
    for k in range(1, SEAM_BINS + 1):                           # walk once around the circle from `start`
        i = (start + k) % SEAM_BINS
        length = length + 1 if low[i] else 0
        if length > best_length:
            best_length, best_middle = length, start + k - (length - 1) / 2
    centre = -np.pi + (best_middle % SEAM_BINS + 0.5) * 2 * np.pi / SEAM_BINS
    return float((centre + 2 * np.pi) % (2 * np.pi) - np.pi)


def fit_coordinates(positions, mapping, representation: str, *, interval: float,
                    weights=None) -> FlowCoordinates:
    """:class:`FlowCoordinates` fitted to data: means, standard deviations and torsion seams.

    Args:
        positions: ``(N, n, 3)`` bead positions, nm.
        mapping: :class:`cgbench.resolutions.CGMapping` of the beads.
        representation: ``cartesian`` or ``internal``.
        interval: Half-width I of the flow's box.
        weights: ``(N,)`` frame weights (None: equal).
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation {representation!r}: expected one of {REPRESENTATIONS}")
    zm = ic.zmatrix(mapping) if representation == "internal" else None
    probe = FlowCoordinates(representation, jnp.zeros(1), jnp.ones(1), (LINEAR,), interval, zm, mapping)
    y = np.asarray(jax.jit(jax.vmap(probe.coordinates))(jnp.asarray(positions)), np.float64)
    w = np.full(len(y), 1.0 / len(y)) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    mean = w @ y
    scale = np.maximum(np.sqrt(w @ (y - mean) ** 2), 1e-6)
    shift = mean.copy()
    kind = np.full(y.shape[1], LINEAR)
    if representation == "internal":
        for k in range(zm.n_bonds + zm.n_angles, zm.n_internal):
            centre = np.angle(w @ np.exp(1j * y[:, k]))
            deviation = np.angle(np.exp(1j * (y[:, k] - centre)))
            sd = max(float(np.sqrt(w @ deviation**2)), 1e-6)
            if interval * sd < np.pi:
                kind[k], shift[k], scale[k] = ARC, centre, sd
            else:
                kind[k], shift[k], scale[k] = CIRCLE, _seam(y[:, k], w), 1.0
    dtype = jnp.asarray(positions).dtype
    return FlowCoordinates(representation, jnp.asarray(shift, dtype), jnp.asarray(scale, dtype),
                           tuple(int(k) for k in kind), float(interval), zm, mapping)


class CGFlow(eqx.Module):
    """A flow proposal over bead configurations: features (:class:`FlowCoordinates`) + a flowjax flow.

    Attributes:
        coordinates: :class:`FlowCoordinates`.
        flow: flowjax distribution over u, shape ``(d,)``.
    """

    coordinates: FlowCoordinates
    flow: eqx.Module

    def log_proposal(self, positions):
        """log q(R) of one configuration ``(n, 3)`` nm, w.r.t. Cartesian volume modulo rigid motion."""
        y = self.coordinates.coordinates(positions)
        u, log_du = self.coordinates.to_features(y)
        return self.flow.log_prob(u) + log_du - self.coordinates.log_volume(y)

    def sample_and_log_proposal(self, key, n: int):
        """n proposals: positions ``(n, beads, 3)`` nm in the canonical frame and log q ``(n,)``."""
        u, log_q_u = self.flow.sample_and_log_prob(key, (n,))

        def one(u_i):
            y, log_du = self.coordinates.from_features(u_i)
            return self.coordinates.positions(y), log_du - self.coordinates.log_volume(y)

        positions, correction = jax.vmap(one)(u)
        return positions, log_q_u + correction


def features(coordinates: FlowCoordinates, positions, *, chunk: int = 4096) -> np.ndarray:
    """u of ``(N, n, 3)`` configurations, ``(N, d)`` numpy (jitted in chunks)."""
    fn = jax.jit(jax.vmap(lambda x: coordinates.to_features(coordinates.coordinates(x))[0]))
    positions = jnp.asarray(positions)
    return np.concatenate([np.asarray(fn(positions[i:i + chunk])) for i in range(0, len(positions), chunk)])


def d_form(positions, mapping, reference_sign=None) -> np.ndarray:
    """``(N,)`` bool: any residue whose N–CA–C–CB signed volume has the other sign than the data's.

    Args:
        positions: ``(N, n, 3)``.
        mapping: Resolution (needs N, CA, C, CB of a residue; residues without CB are skipped).
        reference_sign: ``(residues,)`` signs of the L-form (None: +1 for every residue where
            the amber L-alanine convention gives a positive volume — computed from the first frame).

    Returns:
        ``(N,)`` bool, True where the configuration is (partly) the mirror form.
    """
    quads = chiral_quadruples(mapping)
    if not quads:
        return np.zeros(len(positions), bool)
    x = np.asarray(positions, np.float64)
    volume = np.stack([_signed_volume(x, q) for q in quads], -1)
    sign = np.sign(volume[0]) if reference_sign is None else np.asarray(reference_sign)
    return (np.sign(volume) != sign).any(-1)


def chiral_quadruples(mapping) -> list[tuple[int, int, int, int]]:
    """(N, CA, C, CB) bead indices of every residue of the mapping that has all four."""
    out = []
    for residue in mapping.topology.residues:
        names = {atom.name: atom.index for atom in residue.atoms}
        if all(k in names for k in ("N", "CA", "C", "CB")):
            out.append((names["N"], names["CA"], names["C"], names["CB"]))
    return out


def _signed_volume(x, quad):
    n, ca, c, cb = quad
    a, b, d = x[..., n, :] - x[..., ca, :], x[..., c, :] - x[..., ca, :], x[..., cb, :] - x[..., ca, :]
    return np.einsum("...i,...i->...", a, np.cross(b, d))


def chirality_signs(positions, mapping) -> np.ndarray:
    """Majority sign of each residue's N–CA–C–CB volume in data ``(N, n, 3)`` → ``(residues,)``."""
    quads = chiral_quadruples(mapping)
    x = np.asarray(positions, np.float64)
    return np.array([np.sign(np.sum(np.sign(_signed_volume(x, q)))) for q in quads])


def pmf_energies(model, positions, *, chunk: int = 4096) -> np.ndarray:
    """U_η of ``(N, n, 3)`` configurations (kJ/mol), jitted in chunks → ``(N,)`` float64."""
    positions = jnp.asarray(positions)
    return np.concatenate([np.asarray(_batch_energy(model, positions[i:i + chunk]), np.float64)
                           for i in range(0, len(positions), chunk)])


@eqx.filter_jit
def _batch_energy(model, positions):
    return jax.vmap(model)(positions)


def sample_proposals(flow: CGFlow, n: int, *, key, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """n proposals (positions ``(n, beads, 3)`` float32, log q ``(n,)`` float64), in jitted chunks."""
    chunk = min(chunk, n)
    fn = eqx.filter_jit(lambda f, k: f.sample_and_log_proposal(k, chunk))
    xs, logs = [], []
    for i, k in enumerate(jr.split(key, -(-n // chunk))):
        x, lq = fn(flow, k)
        xs.append(np.asarray(x, np.float32))
        logs.append(np.asarray(lq, np.float64))
    return np.concatenate(xs)[:n], np.concatenate(logs)[:n]


def inference_seconds(flow: CGFlow, model, *, n: int = 10_000, key, repeats: int = 3) -> float:
    """Wall seconds to draw n proposals with log q and evaluate their PMF energy (best of
    ``repeats``, after one compiling call): CG-BG's "inference time per 10⁴ samples"."""

    @eqx.filter_jit
    def infer(flow, model, key):
        x, log_q = flow.sample_and_log_proposal(key, n)
        return jax.vmap(model)(x), log_q

    jax.block_until_ready(infer(flow, model, key))
    best = float("inf")
    for k in jr.split(key, repeats):
        start = time.perf_counter()
        jax.block_until_ready(infer(flow, model, k))
        best = min(best, time.perf_counter() - start)
    return best


def new_flow(coordinates: FlowCoordinates, settings: dict, *, key) -> CGFlow:
    """An untrained :class:`CGFlow` (``settings``: the ``cgbg.flow`` block, keys of
    :func:`cgbench.flows.make_flow` except ``dim`` and ``interval``)."""
    return CGFlow(coordinates, make_flow(dim=coordinates.dim, interval=coordinates.interval, key=key, **settings))
