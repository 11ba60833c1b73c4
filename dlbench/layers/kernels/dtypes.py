"""Dtypes of a computation: recurrences run in at least float32, complex states to match."""

from __future__ import annotations

import jax.numpy as jnp


def complex_dtype(dtype) -> jnp.dtype:
    """The complex dtype that carries a state computed in ``dtype`` (at least single precision)."""
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


def scan_dtype(dtype) -> jnp.dtype:
    """Recurrences run in at least float32: bfloat16 states lose the signal within a few hundred steps."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
