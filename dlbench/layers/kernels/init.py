"""Initialisers shared by the layers and the backbone (pure functions of a PRNG key).

The papers' linear layers (and PyTorch's defaults, which Mamba's reference inherits) draw weights and
biases from U(-bound, bound) with bound = 1/sqrt(fan_in); this is the one implementation of it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


# Jitted as a whole: eagerly, every small op compiles on its own for each new shape, which made
# constructing a layer take seconds on a loaded CPU. Same bits as the eager call (threefry).
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform(key, shape: tuple[int, ...], dtype, bound: float) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def uniform(key: jax.Array, shape: tuple[int, ...], bound: float, dtype=jnp.float32) -> jax.Array:
    """U(-bound, bound) of ``shape`` in ``dtype``."""
    return _uniform(key, tuple(int(n) for n in shape), jnp.dtype(dtype), float(bound))


def symmetric_uniform(bound: float):
    """An ``nnx`` initialiser ``init(key, shape, dtype)`` drawing U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return uniform(key, shape, bound, dtype)

    return init


def fan_in_uniform(fan_in: int):
    """U(+-1/sqrt(fan_in)), the papers' (PyTorch-style) init for linear weights and biases."""
    return symmetric_uniform(1.0 / math.sqrt(fan_in))
