"""An example dlbench plugin: EMA, a real diagonal linear recurrence (the simplest SSM there is).

    h_k = a * h_{k-1} + (1 - a) * (W u_k),   h_{-1} = 0,   a = sigmoid(a_logit) in (0, 1)
    y_k = C h_k + D * u_k

Shapes: u_k, y_k (H,); h_k, a (P,); W (P, H); C (H, P); D (H,). The recurrence goes through
dlbench's shared scan primitives, so it offers every generic backend ("associative", "sequential",
"chunked", "auto") for free and ``dlbench check`` compares them.

Load it with ``--plugin dlbench_ema`` (or ``--plugin path/to/this/file.py``), ``DLBENCH_PLUGINS``,
or install the package (``pip install examples/plugin``): its entry point registers it everywhere.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

import dlbench
from dlbench.layers import SCAN_CHOICES, linear_scan


@dlbench.register_model("ema", description="EMA: real diagonal exponential moving average (example plugin)")
class EMA(dlbench.AbstractSequenceLayer):
    """y = C h + D u with h_k = a h_{k-1} + (1 - a) W u_k; a in (0, 1) per state."""

    scans = SCAN_CHOICES

    def __init__(self, hidden_dim, state_dim, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32, scan="auto"):
        super().__init__(hidden_dim, state_dim, dtype=dtype, param_dtype=param_dtype, scan=scan)
        # Decay rates spread over [0.5, 0.999]: short and long memories from the start.
        a = jnp.linspace(0.5, 0.999, state_dim)
        self.a_logit = dlbench.SSMParam(jnp.log(a / (1 - a)).astype(param_dtype))
        self.W = nnx.Param(jax.random.normal(rngs.params(), (state_dim, hidden_dim), param_dtype) / math.sqrt(hidden_dim))
        self.C = nnx.Param(jax.random.normal(rngs.params(), (hidden_dim, state_dim), param_dtype) / math.sqrt(state_dim))
        self.D = nnx.Param(jnp.ones((hidden_dim,), param_dtype))

    def _forward(self, u):  # u (seq, hidden) -> (seq, hidden)
        # The recurrence runs in at least float32 (bfloat16 states lose the signal).
        cdt = jnp.float64 if jnp.dtype(self.dtype) == jnp.float64 else jnp.float32
        u = u.astype(cdt)
        a = jax.nn.sigmoid(self.a_logit[...].astype(cdt))
        b = (1 - a) * (u @ self.W[...].astype(cdt).T)  # (seq, state)
        h = linear_scan(a, b, invariant=True, backend=self.resolve_scan(u.shape[0]))
        y = h @ self.C[...].astype(cdt).T + self.D[...].astype(cdt) * u
        return y.astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes):
        """Input and output (2H) plus the state h_k written once per step (P, at least 4 bytes)."""
        return 2 * self.hidden_dim * dtype_bytes + self.state_dim * max(dtype_bytes, 4)
