"""S6 and the Mamba mixer: the selective (input-dependent, diagonal) state-space scan.

Symbols (Gu & Dao 2023, Algorithm 2; MODELS.md section 5): L length, D channels the scan runs over
(H for S6, d_inner = expand * H for Mamba), N state size per channel, R = dt_rank. Per channel d and
state n, with delta = softplus(delta_raw + delta_bias):

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,   h_{-1} = 0
    y_t = sum_n C_t h_t + D * u_t,                       y_t *= silu(z_t) when a gate z is given

A = -exp(A_log) is (D, N) and constant; delta (L, D), B (L, N) and C (L, N) depend on the input, so the
system is time-varying: no convolution or diagonalisation shortcut applies. The scan backends:

- "sequential": ``lax.scan`` with a (D, N) carry, y_t contracted per step; the forward never holds
  more than one state (the backward of ``lax.scan`` stores the L carries).
- "associative": ``lax.associative_scan`` over all steps; materialises the (L, D, N) transitions and
  states (several times over). Kept as the point of comparison.
- "chunked": ``scan_chunks``: per chunk of T steps form (T, D, N) transitions and inputs, run the
  associative scan from the carried state, contract with C at once to (T, D) and carry the last
  state. Memory is O(T D N) forward and O(L/T D N) for the backward (chunks are rematerialised).

References: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
Section 3 and Algorithm 2; the reference implementation ``mamba_ssm/modules/mamba_simple.py`` and
``mamba_ssm/ops/selective_scan_interface.py::selective_scan_ref`` (initialisation and the scan).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from dlbench.errors import check_choice
from dlbench.layers.base import AbstractSequenceLayer, SSMParam, scan_dtype
from dlbench.layers.scan import (
    BACKENDS,
    DEFAULT_CHUNK_SIZE,
    DIAGONAL,
    incoming_state,
    linear_scan,
    scan_chunks,
    seq_axis,
    sequence_halo,
    unsharded,
)
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


def _single_sequence_scan(
    u: Float[Array, "seq channel"],
    delta: Float[Array, "seq channel"],
    A: Float[Array, "channel state"],
    B: Float[Array, "seq state"],
    C: Float[Array, "seq state"],
    backend: str,
    chunk_size: int,
    h0: Float[Array, "channel state"] | None = None,
) -> Float[Array, "seq channel"]:
    """y_t = sum_n C_t h_t for one sequence (delta already softplus-ed, everything in the scan dtype).

    ``h0`` is the state before the first step (zeros when omitted; set by the sequence-parallel pass).
    """
    channels, state = A.shape
    if h0 is None:
        h0 = jnp.zeros((channels, state), A.dtype)

    def transitions(delta_c, u_c, B_c):
        # a = exp(delta A) and b = delta B u, both (T, D, N): the only place (.., D, N) arrays are formed.
        a = jnp.exp(delta_c[:, :, None] * A)
        b = (delta_c * u_c)[:, :, None] * B_c[:, None, :]
        return a, b

    if backend == "sequential":

        def step(h, inputs):
            d_t, u_t, b_t, c_t = inputs
            h = jnp.exp(d_t[:, None] * A) * h + (d_t * u_t)[:, None] * b_t[None, :]
            return h, h @ c_t

        _, y = jax.lax.scan(step, h0, (delta, u, B, C))
        return y

    if backend == "associative":
        a, b = transitions(delta, u, B)
        hs = linear_scan(a, b, backend="associative", h0=h0)
        return jnp.einsum("ldn,ln->ld", hs, C)

    if backend == "chunked":

        def body(h, chunk):
            delta_c, u_c, B_c, C_c = chunk
            a, b = transitions(delta_c, u_c, B_c)
            hs = linear_scan(a, b, backend="associative", h0=h)
            return hs[-1], jnp.einsum("tdn,tn->td", hs, C_c)

        return scan_chunks(body, h0, (delta, u, B, C), chunk_size)

    raise ValueError(f"unknown scan backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _final_state(
    u: Float[Array, "seq channel"],
    delta: Float[Array, "seq channel"],
    A: Float[Array, "channel state"],
    B: Float[Array, "seq state"],
    chunk_size: int,
) -> Float[Array, "channel state"]:
    """h_{L-1} from h = 0 without storing states: chunks of T steps, only the carry kept.

    Zero padding of the last chunk is neutral (delta = 0 gives a = 1, b = 0).
    """
    length = u.shape[0]
    size = max(1, min(chunk_size, length))
    chunks = -(-length // size)

    def split(x):
        return jnp.pad(x, ((0, chunks * size - length), (0, 0))).reshape(chunks, size, x.shape[-1])

    def body(h, chunk):
        delta_c, u_c, B_c = chunk
        a = jnp.exp(delta_c[:, :, None] * A)
        b = (delta_c * u_c)[:, :, None] * B_c[:, None, :]
        return linear_scan(a, b, backend="associative", h0=h)[-1], None

    h, _ = jax.lax.scan(jax.checkpoint(body), jnp.zeros(A.shape, A.dtype), (split(delta), split(u), split(B)))
    return h


def selective_scan(
    u: Float[Array, "batch seq channel"],
    delta: Float[Array, "batch seq channel"],
    A: Float[Array, "channel state"],
    B: Float[Array, "batch seq state"],
    C: Float[Array, "batch seq state"],
    D: Float[Array, " channel"] | None = None,
    z: Float[Array, "batch seq channel"] | None = None,
    delta_bias: Float[Array, " channel"] | None = None,
    delta_softplus: bool = False,
    *,
    scan: str = "chunked",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Float[Array, "batch seq channel"]:
    """The selective scan of Mamba (MODELS.md section 5), batched.

    Args:
      u: input, (batch, L, D).
      delta: step sizes before the bias and softplus, (batch, L, D).
      A: continuous-time diagonal transition, (D, N) (negative for a stable system).
      B: input map per step, (batch, L, N).
      C: output map per step, (batch, L, N).
      D: skip weight, (D,); omitted means no skip.
      z: gate, (batch, L, D); the output is multiplied by silu(z) when given.
      delta_bias: added to delta before the softplus, (D,).
      delta_softplus: apply softplus to delta (+ bias).
      scan: "sequential", "associative" or "chunked" (see the module docstring).
      chunk_size: steps per chunk for "chunked".

    Returns:
      out, (batch, L, D), in u's dtype. The recurrence runs in float32, or float64 when the inputs are
      float64 (bfloat16 states lose the signal within a few hundred steps).

    References: Gu & Dao 2023, Algorithm 2; ``selective_scan_ref`` in mamba_ssm.
    """
    check_choice("selective scan backend", scan, BACKENDS)
    if u.ndim != 3:
        raise ValueError(f"selective_scan expects u of shape (batch, seq, channel), got {u.shape}")
    out_dtype = u.dtype
    args = [u, delta, A, B, C] + [x for x in (D, z, delta_bias) if x is not None]
    cd = scan_dtype(jnp.result_type(*args))
    u_c, delta_c, A_c, B_c, C_c = (x.astype(cd) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta_c = delta_c + delta_bias.astype(cd)
    if delta_softplus:
        delta_c = jax.nn.softplus(delta_c)

    axis = seq_axis(note=True)

    def one(u_s, delta_s, B_s, C_s):
        if axis is None:
            return _single_sequence_scan(u_s, delta_s, A_c, B_s, C_s, scan, chunk_size)
        # Sequence split over devices (scan.sequence_sharded): summarise this chunk (A_tot = exp(A sum
        # delta), final state from zero), take the state entering it from the earlier devices, and
        # scan the chunk again from that state; the time-varying diagonal algebra of scan.py.
        with unsharded():
            a_total = jnp.exp(jnp.sum(delta_s, axis=0)[:, None] * A_c)
            h_in = incoming_state(a_total, _final_state(u_s, delta_s, A_c, B_s, chunk_size), axis, DIAGONAL)
            return _single_sequence_scan(u_s, delta_s, A_c, B_s, C_s, scan, chunk_size, h0=h_in)

    out = jax.vmap(one)(u_c, delta_c, B_c, C_c)
    if D is not None:
        out = out + D.astype(cd) * u_c
    if z is not None:
        out = out * jax.nn.silu(z.astype(cd))
    return out.astype(out_dtype)


# ----------------------------------------------------------------------------------------------
# Initialisation (mamba_ssm/modules/mamba_simple.py, Mamba.__init__)


def _symmetric_uniform(bound: float):
    """U(-bound, bound): PyTorch's default Linear/Conv1d init uses bound = 1/sqrt(fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        return _uniform(key, tuple(shape), jnp.dtype(dtype), bound)

    return init


# Initialisers are jitted as a whole: eagerly, every small op compiles on its own for each new shape,
# which made constructing a layer take seconds on a loaded CPU.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniform(key, shape, dtype, bound):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


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
        kernel_init=_symmetric_uniform(bound),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def _init_ssm(
    module: nnx.Module,
    channels: int,
    state: int,
    dt_rank: int,
    *,
    rngs: nnx.Rngs,
    dtype,
    param_dtype,
    dt_min: float,
    dt_max: float,
    dt_floor: float,
) -> None:
    """Create x_proj, dt_proj, dt_bias, A_log and D on ``module`` (Mamba reference init).

    x_proj: Linear(D -> R + 2N), no bias, PyTorch default U(+-1/sqrt(D)).
    dt_proj: Linear(R -> D), weight only, U(+-R^-0.5) (dt_init="random", dt_scale=1); its bias lives in
    ``dt_bias`` and is added inside the scan, before the softplus.
    """
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")
    module.dt_rank = dt_rank
    module.x_proj = _linear(channels, dt_rank + 2 * state, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    module.dt_proj = _linear(
        dt_rank, channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs, bound=dt_rank**-0.5
    )
    module.dt_bias = SSMParam(
        _dt_bias_init(rngs.params(), channels, dt_min, dt_max, dt_floor, jnp.dtype(param_dtype))
    )
    module.A_log = SSMParam(_A_log_init(channels, state, jnp.dtype(param_dtype)))
    module.D = nnx.Param(jnp.ones((channels,), param_dtype))


def _ssm_apply(module, x: jax.Array, z: jax.Array | None, backend: str, chunk_size: int) -> jax.Array:
    """selective_scan(x, dt_proj(dt), -exp(A_log), B, C, D, z, dt_bias, softplus) on one (L, D) sequence."""
    state = module.A_log.shape[-1]
    dt, B, C = jnp.split(module.x_proj(x), [module.dt_rank, module.dt_rank + state], axis=-1)
    delta_raw = module.dt_proj(dt)
    A = -jnp.exp(module.A_log[...].astype(scan_dtype(module.A_log.dtype)))
    y = selective_scan(
        x[None],
        delta_raw[None],
        A,
        B[None],
        C[None],
        module.D[...],
        None if z is None else z[None],
        module.dt_bias[...],
        delta_softplus=True,
        scan=backend,
        chunk_size=chunk_size,
    )
    return y[0]


@register_model("s6", description="S6: Mamba's selective scan on the block input (no projections, conv or gate)")
class S6(AbstractSequenceLayer):
    """S6: the selective scan applied directly to the block input, D = H channels, N = state_dim.

    [dt, B, C] = x_proj(u) (no bias); delta = softplus(dt_proj(dt) + dt_bias); A = -exp(A_log);
    out = selective_scan(u, ...) + D * u. No in/out projection, convolution or gate (MODELS.md section 5).

    Parameters: ``A_log`` (H, N) and ``dt_bias`` (H,) are :class:`SSMParam` (they set the dynamics:
    the decay rates and step sizes, which the papers train with their own learning rate); ``D`` (H,)
    is a plain ``nnx.Param`` (a skip, not dynamics); ``x_proj.kernel`` (H, R + 2N) and
    ``dt_proj.kernel`` (R, H) are ``nnx.Linear`` weights. R = dt_rank = ceil(H / 16) by default.
    Initialisation follows the Mamba reference (see ``_init_ssm``).
    """

    preferred = _PREFERRED

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        scan: str = "auto",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
    ):
        self._init_common(hidden_dim, state_dim, dtype=dtype, param_dtype=param_dtype, scan=scan, chunk_size=chunk_size)
        _init_ssm(
            self,
            hidden_dim,
            state_dim,
            _resolve_dt_rank(dt_rank, hidden_dim),
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_floor=dt_floor,
        )

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        x = u.astype(self.dtype)
        return _ssm_apply(self, x, None, self.resolve_scan(u.shape[0]), self.chunk_size).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """(3H + 2N) values: read u and write out (2H), plus the scan's per-token operands that the
        projections produce and the scan kernel must read back: delta (H), B and C (2N). The (H, N)
        state stays on chip in a fused kernel (Gu & Dao's hardware-aware scan), so it is not counted.
        """
        return (3 * self.hidden_dim + 2 * self.state_dim) * dtype_bytes


@register_model("mamba", description="Mamba mixer: in_proj, causal conv, selective scan, gate, out_proj")
class Mamba(AbstractSequenceLayer):
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

    preferred = _PREFERRED

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        scan: str = "auto",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
    ):
        self._init_common(hidden_dim, state_dim, dtype=dtype, param_dtype=param_dtype, scan=scan, chunk_size=chunk_size)
        if d_conv < 1 or expand < 1:
            raise ValueError(f"d_conv and expand must be positive, got {d_conv} and {expand}")
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * hidden_dim
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.in_proj = _linear(hidden_dim, 2 * self.d_inner, **linear)
        conv_init = _symmetric_uniform(1.0 / math.sqrt(d_conv))
        self.conv_weight = nnx.Param(conv_init(rngs.params(), (d_conv, self.d_inner), param_dtype))
        self.conv_bias = nnx.Param(conv_init(rngs.params(), (self.d_inner,), param_dtype))
        _init_ssm(
            self,
            self.d_inner,
            state_dim,
            _resolve_dt_rank(dt_rank, hidden_dim),
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_floor=dt_floor,
        )
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
        y = _ssm_apply(self, x, z, self.resolve_scan(u.shape[0]), self.chunk_size)
        return self.out_proj(y.astype(self.dtype)).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """(2H + 4 d_inner + 2N) values: read u and write out (2H), plus what the selective-scan kernel
        must exchange with memory because projections sit on either side of it: read x (after the
        conv), delta and the gate z (3 d_inner) and B, C (2N), write y (d_inner) for out_proj. The
        (d_inner, N) state stays on chip in a fused kernel, so it is not counted.
        """
        return (2 * self.hidden_dim + 4 * self.d_inner + 2 * self.state_dim) * dtype_bytes
