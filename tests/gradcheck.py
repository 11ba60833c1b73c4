"""The gradient check every layer test shares.

Each test writes its own float64 NumPy reference of a layer; this module checks a JAX gradient
against (fourth-order) central differences of that reference along random directions (directional derivatives),
so no test trusts JAX's autodiff to check JAX's autodiff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FD_EPS = 1e-6  # in float64: round-off ~1e-16 |loss| / eps, truncation ~eps^4


def directional_derivatives(
    reference_loss: Callable[[Any], float],
    point: Any,
    gradient: Any,
    rng: np.random.Generator,
    *,
    directions: int = 2,
    unit: bool = False,
    eps: float = FD_EPS,
) -> Iterator[tuple[float, float]]:
    """(autodiff, finite difference) of the loss along ``directions`` random directions.

    Args:
      reference_loss: the NumPy loss at a point, a pytree of arrays (parameters and the input).
      point: where to differentiate; ``gradient`` has the same tree structure (the JAX gradient there).
      unit: scale each direction to unit norm (for a tolerance relative to the gradient's norm).
    """
    for _ in range(directions):
        v = jax.tree.map(lambda a: rng.standard_normal(np.shape(a)), point)
        if unit:
            v = _scaled(v, 1 / np.sqrt(sum(np.sum(d**2) for d in jax.tree.leaves(v))))
        # Fourth-order central differences: truncation O(eps^4), so strongly curved losses (IMEX2 near
        # its dt*G clamp, long sequences) are not misjudged; rounding stays ~1e-16 |loss| / eps.
        f = {k: reference_loss(_moved(point, v, k * eps)) for k in (-2, -1, 1, 2)}
        fd = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * eps)
        ad = sum(np.sum(np.asarray(g) * d) for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(v), strict=True))
        yield float(ad), float(fd)


def output_and_gradients(layer: nnx.Module, u: np.ndarray, W: np.ndarray) -> tuple[jax.Array, Any, jax.Array]:
    """A layer's output y on ``u`` and the gradients of the loss sum(y * W) w.r.t. its state and ``u``.

    One jitted ``value_and_grad``; the state gradient has the layer's structure (``g_state.B[...]``).
    """
    graph, state = nnx.split(layer)

    def loss(state, u):
        y = nnx.merge(graph, state)(u)
        return jnp.sum(y * W), y

    (_, y), (g_state, g_u) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(state, jnp.asarray(u))
    return y, g_state, g_u


def _scaled(tree: Any, factor: float) -> Any:
    return jax.tree.map(lambda d: d * factor, tree)


def _moved(point: Any, direction: Any, t: float) -> Any:
    return jax.tree.map(lambda a, d: np.asarray(a) + t * d, point, direction)
