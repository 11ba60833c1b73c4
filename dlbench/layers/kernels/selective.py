"""The selective scan of S6 and Mamba: input-dependent, diagonal, time-varying (pure functions).

Symbols (Gu & Dao 2023, Algorithm 2; docs/models.md section 5): L length, D channels the scan runs over
(H for S6, d_inner = expand * H for Mamba), N state size per channel. Per channel d and state n,
with delta = softplus(delta_raw + delta_bias):

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,   h_{-1} = 0
    y_t = sum_n C_t h_t + D * u_t,                       y_t *= silu(z_t) when a gate z is given

A = -exp(A_log) is (D, N) and constant; delta (L, D), B (L, N) and C (L, N) depend on the input, so the
system is time-varying: no convolution or diagonalisation shortcut applies. The backends are those of
:func:`dlbench.layers.kernels.scan.fused_scan` (the one dispatch):

- "sequential": a (D, N) carry, y_t contracted per step; the forward never holds more than one state
  (the backward of ``lax.scan`` stores the L carries).
- "associative": materialises the (L, D, N) transitions and states (several times over). Kept as the
  point of comparison.
- "chunked": per chunk of T steps form (T, D, N) transitions and inputs, run the associative scan from
  the carried state, contract with C at once to (T, D) and carry the last state. Memory is O(T D N)
  forward and O(L/T D N) for the backward (chunks are rematerialised).

References: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
Section 3 and Algorithm 2; ``mamba_ssm/ops/selective_scan_interface.py::selective_scan_ref``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from dlbench.errors import check_choice
from dlbench.layers.kernels.dtypes import scan_dtype
from dlbench.layers.kernels.scan import (
    BACKENDS,
    DEFAULT_CHUNK_SIZE,
    DIAGONAL,
    fused_scan,
    incoming_state,
    linear_scan,
    scan_chunks,
    seq_axis,
    unsharded,
)


def _transitions(A: Float[Array, "channel state"]):
    """(delta, u, B) over T steps -> a = exp(delta A), b = delta B u, both (T, D, N)."""

    def transition(x):
        delta_c, u_c, B_c = x[:3]
        a = jnp.exp(delta_c[:, :, None] * A)
        b = (delta_c * u_c)[:, :, None] * B_c[:, None, :]
        return a, b

    return transition


def _readout(hs: Float[Array, "chunk channel state"], x) -> Float[Array, "chunk channel"]:
    """y_t = sum_n C_t h_t over a run of steps (x = (delta, u, B, C) of those steps)."""
    return jnp.einsum("tdn,tn->td", hs, x[3])


def _final_state(
    u: Float[Array, "seq channel"],
    delta: Float[Array, "seq channel"],
    A: Float[Array, "channel state"],
    B: Float[Array, "seq state"],
    chunk_size: int,
) -> Float[Array, "channel state"]:
    """h_{L-1} from h = 0 without storing states: chunks of T steps, only the carry kept.

    Zero padding of the last chunk is neutral (delta = 0 gives a = 1, b = 0), so the carry is exact.
    """
    transition = _transitions(A)

    def body(h, chunk):
        a, b = transition(chunk)
        return linear_scan(a, b, backend="associative", h0=h)[-1], None

    h, _ = scan_chunks(body, jnp.zeros(A.shape, A.dtype), (delta, u, B), chunk_size, return_carry=True)
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
    """The selective scan of Mamba (docs/models.md section 5), batched.

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
    transitions = _transitions(A_c)

    def one(u_s, delta_s, B_s, C_s):
        # The (.., D, N) transitions are formed inside the backend: per step for "sequential", per
        # chunk for "chunked".
        h0 = jnp.zeros(A_c.shape, A_c.dtype)
        if axis is not None:
            # Sequence split over devices (scan.sequence_sharded): summarise this chunk (A_tot = exp(A
            # sum delta), final state from zero), take the state entering it from the earlier devices,
            # and scan the chunk from that state; the time-varying diagonal algebra of scan.py.
            with unsharded():
                a_total = jnp.exp(jnp.sum(delta_s, axis=0)[:, None] * A_c)
                h0 = incoming_state(a_total, _final_state(u_s, delta_s, A_c, B_s, chunk_size), axis, DIAGONAL)
        return fused_scan((delta_s, u_s, B_s, C_s), transitions, _readout, h0, backend=scan, chunk_size=chunk_size)

    out = jax.vmap(one)(u_c, delta_c, B_c, C_c)
    if D is not None:
        out = out + D.astype(cd) * u_c
    if z is not None:
        out = out * jax.nn.silu(z.astype(cd))
    return out.astype(out_dtype)


