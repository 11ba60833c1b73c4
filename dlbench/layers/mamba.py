"""S6 and the Mamba mixer: the NNX modules around the selective scan.

Symbols and the scan itself: :mod:`dlbench.layers.kernels.selective` (Gu & Dao 2023, Algorithm 2;
docs/models.md section 5); R = dt_rank. This module holds the parameters, their initialisation and the
projections, convolution and gate of the mixer.

References: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
Section 3; the reference implementation ``mamba_ssm/modules/mamba_simple.py`` (initialisation).
"""

from __future__ import annotations

import functools
import math
from typing import Unpack

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from dlbench.layers.base import SCAN_CHOICES, AbstractSequenceLayer, LayerOptions, SSMParam, scan_dtype
from dlbench.layers.kernels.init import symmetric_uniform
from dlbench.layers.kernels.scan import sequence_halo
from dlbench.layers.kernels.selective import selective_scan
from dlbench.registry import register_model

# "auto" per platform (a fixed choice, independent of L). Measured on a 2-core CPU, batch 1, H = 64,
# N = 64, float32, L = 50,000, jit, compile excluded, median of 3 (forward):
#   S6:    sequential 0.13 s, chunked (T = 256) 1.06 s, associative 1.59 s (3.9 GiB of temporaries)
#   Mamba: sequential 0.28 s, chunked (T = 256) 3.8 s,  associative 4.1 s  (7.8 GiB of temporaries)
# On CPU the scan is memory-bound and "sequential" touches each (D, N) state once, while the parallel
# scans do O(log T) passes over (T, D, N) buffers: CPU -> "sequential" (its forward holds one state;
# its backward stores per-step residuals, O(L D N), like any reverse-mode lax.scan). On accelerators
# "sequential" is latency-bound and the associative scan needs several (L, D, N) buffers (at L = 2^17,
# D = 128, N = 16, batch 32 that is tens of GiB), so they resolve to "chunked", the safe default.
_PREFERRED = {"cpu": "sequential", "gpu": "chunked", "cuda": "chunked", "rocm": "chunked", "tpu": "chunked"}


# ----------------------------------------------------------------------------------------------
# Initialisation (mamba_ssm/modules/mamba_simple.py, Mamba.__init__)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _dt_bias_init(key, channels: int, dt_min: float, dt_max: float, dt_floor: float, dtype) -> jax.Array:
    """softplus^-1(dt) with dt = exp(U[log dt_min, log dt_max]) floored at dt_floor, so softplus(bias)
    starts in [dt_min, dt_max] (Mamba's dt_proj.bias init)."""
    log_dt = jax.random.uniform(key, (channels,), jnp.float32, math.log(dt_min), math.log(dt_max))
    dt = jnp.maximum(jnp.exp(log_dt), dt_floor)
    inv_dt = dt + jnp.log(-jnp.expm1(-dt))  # inverse of softplus, stable for small dt
    return inv_dt.astype(dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _A_log_init(channels: int, state: int, dtype) -> jax.Array:
    """A_log = log(1..N) for every channel (S4D-real), so A = -(1..N)."""
    return jnp.log(jnp.broadcast_to(jnp.arange(1, state + 1, dtype=jnp.float32), (channels, state))).astype(dtype)


def _resolve_dt_rank(dt_rank: int | str, hidden_dim: int) -> int:
    if dt_rank == "auto":
        return math.ceil(hidden_dim / 16)
    if not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"dt_rank must be a positive int or 'auto', got {dt_rank!r}")
    return dt_rank


def _linear(fan_in: int, fan_out: int, *, dtype, param_dtype, rngs: nnx.Rngs, bound: float | None = None):
    """Bias-free Linear with U(+-bound) weights, bound = 1/sqrt(fan_in) by default (PyTorch default)."""
    bound = 1.0 / math.sqrt(fan_in) if bound is None else bound
    return nnx.Linear(
        fan_in,
        fan_out,
        use_bias=False,
        kernel_init=symmetric_uniform(bound),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


# ----------------------------------------------------------------------------------------------
# The layers


class SelectiveOptions(LayerOptions, total=False):
    """The keyword arguments of :class:`AbstractSelective`'s constructor, the shared ones included."""

    dt_rank: int | str
    dt_min: float
    dt_max: float
    dt_floor: float


class AbstractSelective(AbstractSequenceLayer):
    """What S6 and the Mamba mixer share: the selective SSM's parameters, their init and its scan.

    A subclass calls :meth:`_init_ssm` once its D channels are known (the order of initialisation
    follows the reference, so the random draws do too) and :meth:`_ssm` on one (L, D) sequence.

    Args (beyond :class:`AbstractSequenceLayer`):
      dt_rank: R, the rank of delta's projection, or "auto": ceil(H / 16), of the block width H in the
        mixer too (as in the reference).
      dt_min, dt_max: the initial step sizes softplus(dt_bias) are log-uniform on [dt_min, dt_max] ...
      dt_floor: ... and at least dt_floor.
    """

    scans = SCAN_CHOICES
    preferred = _PREFERRED

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
        **common: Unpack[LayerOptions],
    ):
        super().__init__(hidden_dim, state_dim, **common)
        self.dt_rank = _resolve_dt_rank(dt_rank, hidden_dim)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")
        self.dt_min, self.dt_max, self.dt_floor = dt_min, dt_max, dt_floor

    def _init_ssm(self, channels: int, rngs: nnx.Rngs) -> None:
        """Create x_proj, dt_proj, dt_bias, A_log and D for ``channels`` = D (Mamba reference init).

        x_proj: Linear(D -> R + 2N), no bias, PyTorch default U(+-1/sqrt(D)).
        dt_proj: Linear(R -> D), weight only, U(+-R^-0.5) (dt_init="random", dt_scale=1); its bias lives
        in ``dt_bias`` and is added inside the scan, before the softplus.
        """
        linear = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.x_proj = _linear(channels, self.dt_rank + 2 * self.state_dim, **linear)
        self.dt_proj = _linear(self.dt_rank, channels, **linear, bound=self.dt_rank**-0.5)
        stored = jnp.dtype(self.param_dtype)
        self.dt_bias = SSMParam(_dt_bias_init(rngs.params(), channels, self.dt_min, self.dt_max, self.dt_floor, stored))
        self.A_log = SSMParam(_A_log_init(channels, self.state_dim, stored))
        self.D = nnx.Param(jnp.ones((channels,), self.param_dtype))

    def _ssm(self, x: Float[Array, "seq inner"], z: Float[Array, "seq inner"] | None) -> Float[Array, "seq inner"]:
        """selective_scan(x, dt_proj(dt), -exp(A_log), B, C, D, z, dt_bias, softplus) on one (L, D) sequence."""
        dt, B, C = jnp.split(self.x_proj(x), [self.dt_rank, self.dt_rank + self.state_dim], axis=-1)
        delta_raw = self.dt_proj(dt)
        A = -jnp.exp(self.A_log[...].astype(scan_dtype(self.A_log.dtype)))
        y = selective_scan(
            x[None],
            delta_raw[None],
            A,
            B[None],
            C[None],
            self.D[...],
            None if z is None else z[None],
            self.dt_bias[...],
            delta_softplus=True,
            scan=self.resolve_scan(x.shape[0]),
            chunk_size=self.chunk_size,
        )
        return y[0]


@register_model("s6", description="S6: Mamba's selective scan on the block input (no projections, conv or gate)")
class S6(AbstractSelective):
    """S6: the selective scan applied directly to the block input, D = H channels, N = state_dim.

    [dt, B, C] = x_proj(u) (no bias); delta = softplus(dt_proj(dt) + dt_bias); A = -exp(A_log);
    out = selective_scan(u, ...) + D * u. No in/out projection, convolution or gate (docs/models.md section 5).

    Parameters: ``A_log`` (H, N) and ``dt_bias`` (H,) are :class:`SSMParam` (they set the dynamics:
    the decay rates and step sizes, which the papers train with their own learning rate); ``D`` (H,)
    is a plain ``nnx.Param`` (a skip, not dynamics); ``x_proj.kernel`` (H, R + 2N) and
    ``dt_proj.kernel`` (R, H) are ``nnx.Linear`` weights. R = dt_rank = ceil(H / 16) by default.
    Initialisation follows the Mamba reference (see :meth:`AbstractSelective._init_ssm`).
    """

    def __init__(self, hidden_dim: int, state_dim: int, *, rngs: nnx.Rngs, **options: Unpack[SelectiveOptions]):
        super().__init__(hidden_dim, state_dim, **options)
        self._init_ssm(hidden_dim, rngs)

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        x = u.astype(self.dtype)
        return self._ssm(x, None).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """(3H + 2N) values: read u and write out (2H), plus the scan's per-token operands that the
        projections produce and the scan kernel must read back: delta (H), B and C (2N). The (H, N)
        state stays on chip in a fused kernel (Gu & Dao's hardware-aware scan), so it is not counted.
        """
        return (3 * self.hidden_dim + 2 * self.state_dim) * dtype_bytes


@register_model("mamba", description="Mamba mixer: in_proj, causal conv, selective scan, gate, out_proj")
class Mamba(AbstractSelective):
    """The Mamba mixer (Gu & Dao 2023, Figure 3; ``mamba_simple.Mamba`` without the fused fast path).

    [x, z] = in_proj(u) (d_inner = expand * H, no bias); x = silu(causal depthwise conv1d(x), width
    d_conv, with bias); [dt, B, C] = x_proj(x); y = selective_scan(x, dt_proj(dt), -exp(A_log), B, C,
    D, z, dt_bias, softplus); out = out_proj(y) (no bias). The block's residual is outside (models.py).

    Parameters: ``in_proj.kernel`` (H, 2 d_inner), ``conv_weight`` (d_conv, d_inner) and
    ``conv_bias`` (d_inner,), ``x_proj.kernel`` (d_inner, R + 2N), ``dt_proj.kernel`` (R, d_inner),
    ``dt_bias`` (d_inner,) and ``A_log`` (d_inner, N) as :class:`SSMParam`, ``D`` (d_inner,),
    ``out_proj.kernel`` (d_inner, H). The convolution is causal: out_t = conv_bias + sum_k
    conv_weight[k] * x_{t - (d_conv - 1) + k} (PyTorch's Conv1d layout, last tap on the current step).

    Initialisation: the Mamba reference. in_proj, x_proj, out_proj and the conv use PyTorch's defaults,
    U(+-1/sqrt(fan_in)) (fan_in of the depthwise conv = d_conv); the reference's rescaling of out_proj
    by 1/sqrt(n_layer) belongs to its LM wrapper and is not applied. dt_proj, dt_bias, A_log, D as in S6.
    """

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        d_conv: int = 4,
        expand: int = 2,
        **options: Unpack[SelectiveOptions],
    ):
        super().__init__(hidden_dim, state_dim, **options)
        if d_conv < 1 or expand < 1:
            raise ValueError(f"d_conv and expand must be positive, got {d_conv} and {expand}")
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * hidden_dim
        linear = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.in_proj = _linear(hidden_dim, 2 * self.d_inner, **linear)
        conv_init = symmetric_uniform(1.0 / math.sqrt(d_conv))
        self.conv_weight = nnx.Param(conv_init(rngs.params(), (d_conv, self.d_inner), self.param_dtype))
        self.conv_bias = nnx.Param(conv_init(rngs.params(), (self.d_inner,), self.param_dtype))
        self._init_ssm(self.d_inner, rngs)
        self.out_proj = _linear(self.d_inner, hidden_dim, **linear)

    def _conv(self, x: Float[Array, "seq inner"]) -> Float[Array, "seq inner"]:
        """Causal depthwise conv as d_conv shifted products (cheaper than a grouped conv on CPU)."""
        length = x.shape[0]
        w = self.conv_weight[...].astype(x.dtype)
        # The d_conv - 1 steps before x: zeros, or the previous device's when the sequence is sharded.
        padded = jnp.concatenate([sequence_halo(x, self.d_conv - 1), x])
        out = self.conv_bias[...].astype(x.dtype)
        for k in range(self.d_conv):
            out = out + w[k] * padded[k : k + length]
        return out

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        x, z = jnp.split(self.in_proj(u.astype(self.dtype)), 2, axis=-1)
        x = jax.nn.silu(self._conv(x))
        y = self._ssm(x, z)
        return self.out_proj(y.astype(self.dtype)).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """(2H + 4 d_inner + 2N) values: read u and write out (2H), plus what the selective-scan kernel
        must exchange with memory because projections sit on either side of it: read x (after the
        conv), delta and the gate z (3 d_inner) and B, C (2N), write y (d_inner) for out_proj. The
        (d_inner, N) state stays on chip in a fused kernel, so it is not counted.
        """
        return (2 * self.hidden_dim + 4 * self.d_inner + 2 * self.state_dim) * dtype_bytes
