"""LRU: the Linear Recurrent Unit (Orvieto et al., ICML 2023).

Symbols (docs/models.md section 4; H hidden width, N = state_dim, L length):

- nu (N,) > 0: the decay rate, nu = exp(nu_log); |Lambda| = exp(-nu).
- theta (N,) > 0: the rotation per step, theta = exp(theta_log).
- Lambda (N,) complex: the diagonal transition, Lambda = exp(-nu + i theta) (stable by construction).
- gamma (N,) > 0: the input normalisation, gamma = exp(gamma_log), initialised to sqrt(1 - |Lambda|^2)
  so that a white-noise input gives states of unit variance.
- B (N, H) = B_re + i B_im and C (H, N) = C_re + i C_im: the complex input and output maps.

The layer runs x_k = Lambda x_{k-1} + gamma (B u_k) (x_{-1} = 0) and reads out
y_k = Re(C x_k) + D * u_k.

References: Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences", ICML 2023,
section 3 and appendix A (the reference JAX implementation).
"""

from __future__ import annotations

import math
from typing import Unpack

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Complex, Float

from dlbench.layers.base import SCAN_CHOICES, AbstractSequenceLayer, LayerOptions, SSMParam, scan_dtype
from dlbench.layers.kernels.diagonal import diagonal_ssm
from dlbench.registry import register_model


@register_model("lru", description="LRU: linear recurrent unit, diagonal complex recurrence in exponential form")
class LRU(AbstractSequenceLayer):
    """The LRU layer: (seq, hidden) -> (seq, hidden), including the D * u skip.

    Args (beyond :class:`AbstractSequenceLayer`; ``state_dim`` is N, the number of complex states, and
    the recurrence runs in at least float32 whatever ``dtype``):
      r_min, r_max: initial |Lambda| is uniform in area on the ring r_min <= |Lambda| <= r_max.
      max_phase: initial theta is uniform on [0, max_phase].

    Parameters (``nnx.Param`` attributes, layouts from docs/models.md section 4):
      nu_log, theta_log, gamma_log (N,), B_re, B_im (N, H): :class:`SSMParam` (the recurrence and
      its input map, the group the LRU paper trains with a reduced learning rate and no weight decay).
      C_re, C_im (H, N) and D (H,): plain ``nnx.Param``.
    """

    scans = SCAN_CHOICES

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 6.28,
        **common: Unpack[LayerOptions],
    ):
        super().__init__(hidden_dim, state_dim, **common)
        if not 0.0 <= r_min <= r_max <= 1.0:
            raise ValueError(f"LRU needs 0 <= r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
        if not max_phase > 0.0:
            raise ValueError(f"LRU needs max_phase > 0, got {max_phase}")
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        n, h, param_dtype = state_dim, hidden_dim, self.param_dtype
        # Draw in at least float32 and store in param_dtype.
        real = scan_dtype(param_dtype)
        k_nu, k_theta, k_bre, k_bim, k_cre, k_cim, k_d = (rngs.params() for _ in range(7))
        # U on [tiny, 1): u = 0 would give |Lambda| = 0 with r_min = 0, i.e. nu_log = +inf.
        tiny = jnp.finfo(real).tiny
        u1 = jax.random.uniform(k_nu, (n,), real, minval=tiny)
        u2 = jax.random.uniform(k_theta, (n,), real, minval=tiny)
        # |Lambda|^2 = u1 (r_max^2 - r_min^2) + r_min^2 (uniform in area), nu_log = log(-log|Lambda|).
        # log(|Lambda|^2) is taken as log1p(|Lambda|^2 - 1) with |Lambda|^2 - 1 formed without
        # cancellation, because |Lambda| near 1 is exactly where the long memory lives.
        mag2_minus_1 = -((1.0 - r_min**2) - u1 * (r_max**2 - r_min**2))
        nu = -0.5 * jnp.log1p(mag2_minus_1)
        self.nu_log = SSMParam(jnp.log(nu).astype(param_dtype))
        self.theta_log = SSMParam(jnp.log(max_phase * u2).astype(param_dtype))
        # gamma = sqrt(1 - |Lambda|^2) = sqrt(-expm1(-2 nu)), stable as |Lambda| -> 1.
        self.gamma_log = SSMParam((0.5 * jnp.log(-jnp.expm1(-2.0 * nu))).astype(param_dtype))
        b_std = 1.0 / math.sqrt(2 * h)  # B ~ N(0, 1/(2H)) for the real and the imaginary part
        self.B_re = SSMParam((b_std * jax.random.normal(k_bre, (n, h), real)).astype(param_dtype))
        self.B_im = SSMParam((b_std * jax.random.normal(k_bim, (n, h), real)).astype(param_dtype))
        c_std = 1.0 / math.sqrt(n)  # C ~ N(0, 1/N) for the real and the imaginary part
        self.C_re = nnx.Param((c_std * jax.random.normal(k_cre, (h, n), real)).astype(param_dtype))
        self.C_im = nnx.Param((c_std * jax.random.normal(k_cim, (h, n), real)).astype(param_dtype))
        self.D = nnx.Param(jax.random.normal(k_d, (h,), real).astype(param_dtype))

    def eigenvalues(self) -> Complex[Array, " state"]:
        """Lambda = exp(-exp(nu_log) + i exp(theta_log)), (N,), in the complex dtype of the computation."""
        real = scan_dtype(self.dtype)
        nu = jnp.exp(self.nu_log[...].astype(real))
        theta = jnp.exp(self.theta_log[...].astype(real))
        return jnp.exp(jax.lax.complex(-nu, theta))

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        real = scan_dtype(self.dtype)
        u = u.astype(real)
        gamma = jnp.exp(self.gamma_log[...].astype(real))[:, None]
        b_re = gamma * self.B_re[...].astype(real)
        b_im = gamma * self.B_im[...].astype(real)
        c_re, c_im = self.C_re[...].astype(real), self.C_im[...].astype(real)
        backend = self.resolve_scan(u.shape[0])
        y = diagonal_ssm(self.eigenvalues(), b_re, b_im, c_re, c_im, u, backend=backend, chunk_size=self.chunk_size)
        return (y + self.D[...].astype(real) * u).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """2 H dtype_bytes (read u_k, write y_k) + 2 N max(dtype_bytes, 4) (write the complex state x_k).

        The state x_k (N complex values in at least single precision) is materialised by every backend
        between the scan and the readout, so it is touched once per token; Lambda, gamma B and C are
        per-layer constants that stay cached.
        """
        return 2 * self.hidden_dim * dtype_bytes + 2 * self.state_dim * max(dtype_bytes, 4)
