"""Normalizing flows over the slow coordinates z (flowjax), as in ECG §2.4.

Rational-quadratic-spline (RQS) coupling flows; for 1-D z, where a coupling layer has
nothing to condition on, a masked autoregressive flow with an RQS transformer (its
conditioner then reduces to learned constants, i.e. a stack of learned monotone splines).
The base is a standard normal truncated to the spline interval [-interval, interval], so
every sample stays inside the region where the splines act (ECG's choice instead of linear
tails); permutations and RQS layers map that box onto itself.
"""

from __future__ import annotations

from typing import ClassVar

import jax.random as jr
from jax.scipy.stats import truncnorm
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import AbstractDistribution, Transformed
from flowjax.flows import coupling_flow, masked_autoregressive_flow


class TruncatedStandardNormal(AbstractDistribution):
    """Independent standard normals truncated to [-bound, bound] in every dimension.

    Written here because flowjax 19 ships no truncated normal; tested against
    ``scipy.stats.truncnorm`` in ``tests/test_flows.py``.

    Attributes:
        shape: event shape, e.g. ``(dim_z,)``.
        bound: half-width of the support (the spline interval).
    """

    shape: tuple[int, ...]
    bound: float
    cond_shape: ClassVar[None] = None

    def __init__(self, shape: tuple[int, ...], bound: float):
        self.shape = tuple(shape)
        self.bound = float(bound)

    def _log_prob(self, x, condition=None):
        return truncnorm.logpdf(x, -self.bound, self.bound).sum()

    def _sample(self, key, condition=None):
        return jr.truncated_normal(key, -self.bound, self.bound, self.shape)


def make_flow(*, dim: int, layers: int, mlp_depth: int, mlp_width: int, knots: int,
              interval: float, key) -> Transformed:
    """Flow q(z) on [-interval, interval]^dim.

    Args:
        dim: dimension of z.
        layers: number of coupling (or autoregressive) layers.
        mlp_depth, mlp_width: conditioner MLP hidden layers and their width.
        knots: RQS knots per spline.
        interval: spline interval half-width, also the truncation of the base.
        key: JAX PRNG key for the initial parameters.

    Returns:
        A flowjax ``Transformed`` distribution with ``shape == (dim,)``; ``sample`` runs the
        forward (fast) direction, which is the one reverse-KL training differentiates.
    """
    base = TruncatedStandardNormal((dim,), interval)
    transformer = RationalQuadraticSpline(knots=knots, interval=interval)
    build = masked_autoregressive_flow if dim == 1 else coupling_flow
    return build(key, base_dist=base, transformer=transformer, flow_layers=layers,
                 nn_width=mlp_width, nn_depth=mlp_depth, invert=False)


def flow_from_settings(settings: dict, dim: int, *, key) -> Transformed:
    """Flow from a ``flow:`` config block (keys of :func:`make_flow`).

    The key draws more than the initial parameters: it also draws the fixed permutations between
    coupling layers (integer arrays, not trained, for ``dim`` ≥ 3). A model saved as its trained
    parameters alone is therefore only the trained model again in a flow built with the same key.
    """
    return make_flow(dim=dim, key=key, **settings)

