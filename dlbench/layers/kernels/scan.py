"""Shared scan primitives for linear recurrences h_k = a_k (.) h_{k-1} + b_k, h_{-1} = h0 (default 0).

Every sequence layer reduces its recurrence to this form and picks one backend:

- ``"sequential"``: ``jax.lax.scan``, one step at a time (O(L) depth, O(1) extra memory per step).
- ``"associative"``: ``jax.lax.associative_scan``, the parallel prefix scan the papers use
  (O(log L) depth, materialises every state).
- ``"chunked"``: the sequence is cut into chunks of ``chunk_size`` steps; a parallel scan runs inside a
  chunk and the state is carried across chunks by ``lax.scan``. The chunk body is rematerialised in
  the backward pass (``jax.checkpoint``), so memory is bounded by one chunk of states plus one carry
  per chunk; this is what keeps Mamba's (L, d_inner, N) states off the heap.

The operator (.) is given by a :class:`Semigroup`: elementwise products for diagonal systems
(S5, LRU, S6/Mamba) and 2x2 block products for the oscillatory layers (LinOSS, D-LinOSS), whose
transition is a real 2x2 block per state acting on the complex pair [z; x].

Sequence parallelism (:func:`sharded_linear_scan`, :func:`sequence_sharded`): inside ``shard_map``
with the sequence split over a mesh axis, each device scans its own chunk from a zero state, the
per-device summaries (total transition A_tot, final state h_last) are all-gathered and combined with
an exclusive associative scan into the state entering each device, h_in, and every device corrects
its states as h_k = h_local_k + A_prefix_k (.) h_in. The recurrence composes associatively, so this
equals the single-device scan up to rounding (tests/test_distributed.py checks it in float64).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

BACKENDS = ("associative", "sequential", "chunked")
DEFAULT_CHUNK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Semigroup:
    """How transitions compose and act on states.

    ``compose(a_later, a_earlier)`` is the transition of two consecutive steps and ``act(a, h)``
    applies a transition to a state. Both broadcast over leading axes.
    """

    name: str
    compose: Callable[[Any, Any], Any]
    act: Callable[[Any, Any], Any]
    identity_like: Callable[[Any], Any]


DIAGONAL = Semigroup(
    name="diagonal",
    compose=lambda later, earlier: later * earlier,
    act=lambda a, h: a * h,
    identity_like=jnp.ones_like,
)


def _block_compose(later: jax.Array, earlier: jax.Array) -> jax.Array:
    # Written out elementwise (not as einsum) because XLA turns 2x2 dots into slow tiny GEMMs.
    a, b, c, d = later[..., 0, 0], later[..., 0, 1], later[..., 1, 0], later[..., 1, 1]
    e, f, g, h = earlier[..., 0, 0], earlier[..., 0, 1], earlier[..., 1, 0], earlier[..., 1, 1]
    row0 = jnp.stack([a * e + b * g, a * f + b * h], axis=-1)
    row1 = jnp.stack([c * e + d * g, c * f + d * h], axis=-1)
    return jnp.stack([row0, row1], axis=-2)


def _block_act(m: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.stack(
        [m[..., 0, 0] * w[..., 0] + m[..., 0, 1] * w[..., 1], m[..., 1, 0] * w[..., 0] + m[..., 1, 1] * w[..., 1]],
        axis=-1,
    )


BLOCK2X2 = Semigroup(
    name="block2x2",
    compose=_block_compose,
    act=_block_act,
    identity_like=lambda m: jnp.broadcast_to(jnp.eye(2, dtype=m.dtype), m.shape),
)


def _combine(semigroup: Semigroup):
    def combine(earlier, later):
        a_e, b_e = earlier
        a_l, b_l = later
        return semigroup.compose(a_l, a_e), semigroup.act(a_l, b_e) + b_l

    return combine


def _associative(a, b, h0, semigroup: Semigroup, invariant: bool):
    if invariant:
        a = jnp.broadcast_to(a, b.shape[:1] + a.shape)
    a_cum, hs = jax.lax.associative_scan(_combine(semigroup), (a, b), axis=0)
    if h0 is None:
        return hs
    return hs + semigroup.act(a_cum, h0)


def pad_to_multiple(x: jax.Array, multiple: int, axis: int = 0) -> jax.Array:
    """Zero-pad ``x`` along ``axis`` to a multiple of ``multiple`` (causal scans ignore the tail)."""
    pad = (-x.shape[axis]) % multiple
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def scan_chunks(
    body: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    xs: Any,
    chunk_size: int,
    *,
    checkpoint: bool = True,
    return_carry: bool = False,
) -> Any:
    """Run ``body(carry, xs_chunk) -> (carry, ys_chunk)`` over consecutive chunks of the leading axis.

    Every leaf of ``xs`` has the sequence on axis 0. The tail is zero-padded to a whole chunk and the
    padded outputs are dropped, which is exact for causal bodies. Returns ``ys`` with the original
    length (and, with ``return_carry``, ``(carry, ys)``: the final carry has also seen the padded
    steps, so it is exact only when a zero input step leaves the carry unchanged). With
    ``checkpoint`` the backward pass recomputes each chunk instead of storing it.
    """
    leaves = jax.tree_util.tree_leaves(xs)
    length = leaves[0].shape[0]
    chunk_size = max(1, min(chunk_size, length))
    n_chunks = math.ceil(length / chunk_size)
    padded = jax.tree_util.tree_map(
        lambda x: pad_to_multiple(x, chunk_size).reshape((n_chunks, chunk_size) + x.shape[1:]), xs
    )
    step = jax.checkpoint(body) if checkpoint else body
    carry, ys = jax.lax.scan(step, carry, padded)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((n_chunks * chunk_size,) + y.shape[2:])[:length], ys)
    return (carry, ys) if return_carry else ys


def fused_scan(
    xs: Any,
    transition: Callable[[Any], tuple[Any, Any]],
    readout: Callable[[Any, Any], Any],
    h0: Any,
    *,
    backend: str,
    semigroup: Semigroup = DIAGONAL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Any:
    """THE backend dispatch: y = readout(h, xs) with h_k = a_k (.) h_{k-1} + b_k, (a, b) = transition(xs).

    Every layer's recurrence goes through here (``linear_scan`` is the case with precomputed (a, b)),
    so a backend is implemented once. ``transition`` and ``readout`` map a run of T consecutive steps
    (every leaf of ``xs`` with T on axis 0) to transitions/inputs (T, *S)/(T, *state) and outputs
    (T, ...). Forming (a, b) inside the backend is what bounds memory: "sequential" forms one step's,
    "chunked" one chunk's, "associative" all L of them.

    Args:
      xs: per-step inputs, a pytree whose leaves have the sequence (L) on axis 0.
      transition: xs over T steps -> (a (T, *S), b (T, *state)).
      readout: (h (T, *state), xs over T steps) -> outputs (T, ...).
      h0: the state before step 0, (*state).
      backend: one of :data:`BACKENDS`.
      semigroup: DIAGONAL or BLOCK2X2.
      chunk_size: steps per chunk for "chunked".
    Returns:
      readout over all L steps, (L, ...).
    """
    a_1, b_1 = jax.eval_shape(transition, jax.tree_util.tree_map(lambda v: v[:1], xs))
    h0 = jnp.asarray(h0).astype(jnp.result_type(jnp.asarray(h0).dtype, a_1.dtype, b_1.dtype))  # e.g. a real h0, complex b
    if backend == "sequential":

        def step(h, x_t):
            x_1 = jax.tree_util.tree_map(lambda v: v[None], x_t)
            a, b = transition(x_1)
            h = semigroup.act(a[0], h) + b[0]
            return h, jax.tree_util.tree_map(lambda v: v[0], readout(h[None], x_1))

        return jax.lax.scan(step, h0, xs)[1]
    if backend == "associative":
        a, b = transition(xs)
        return readout(_associative(a, b, h0, semigroup, invariant=False), xs)
    if backend == "chunked":

        def body(h, x_c):
            a, b = transition(x_c)
            hs = _associative(a, b, h, semigroup, invariant=False)
            return hs[-1], readout(hs, x_c)

        return scan_chunks(body, h0, xs, chunk_size)
    raise ValueError(f"unknown scan backend {backend!r}; valid: {', '.join(BACKENDS)}")


def linear_scan(
    a: jax.Array,
    b: jax.Array,
    *,
    backend: str,
    semigroup: Semigroup = DIAGONAL,
    invariant: bool = False,
    h0: jax.Array | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """All states of h_k = a_k (.) h_{k-1} + b_k.

    Args:
      a: transitions, shape (L, *S) or, with ``invariant=True``, one transition (*S) for every step
        (for BLOCK2X2, *S ends in (2, 2)).
      b: inputs, shape (L, *state) with state the shape of h.
      backend: one of :data:`BACKENDS`.
      semigroup: DIAGONAL or BLOCK2X2.
      invariant: the system is time-invariant and ``a`` has no time axis.
      h0: initial state (*state); zeros when omitted.
      chunk_size: steps per chunk for the chunked backend.

    Returns:
      h, shape (L, *state).

    Inside :func:`sequence_sharded` (a sequence split across devices) this is
    :func:`sharded_linear_scan` over that mesh axis; otherwise the behaviour above is unchanged.
    """
    axis = seq_axis(note=True)
    if axis is not None:
        return _sharded_linear_scan(a, b, axis, backend, semigroup, invariant, h0, chunk_size)
    start = jnp.zeros(b.shape[1:], b.dtype) if h0 is None else h0
    if invariant:
        # One transition for all steps: broadcast it per run of steps, never to (L, *S) up front.
        transition = lambda b_t: (jnp.broadcast_to(a, b_t.shape[:1] + a.shape), b_t)  # noqa: E731
        return fused_scan(b, transition, lambda h, _: h, start, backend=backend, semigroup=semigroup, chunk_size=chunk_size)
    return fused_scan((a, b), lambda ab: ab, lambda h, _: h, start, backend=backend, semigroup=semigroup, chunk_size=chunk_size)


# --- sequence parallelism ------------------------------------------------------------------------

# (mesh axis name, use record) while a layer is traced with its sequence sharded; None otherwise.
_SEQ_AXIS: contextvars.ContextVar[tuple[str, dict] | None] = contextvars.ContextVar("dlbench_seq_axis", default=None)


@contextlib.contextmanager
def sequence_sharded(axis_name: str):
    """Trace a layer whose sequence is split over mesh axis ``axis_name`` (inside ``shard_map``).

    While active, :func:`linear_scan` (and ``selective_scan``) combine their chunk summaries across
    the axis, so a layer built on them computes the single-device result without code of its own.
    Yields a record whose ``"scans"`` counts the scans that did so: 0 after tracing a layer means its
    recurrence does not go through these primitives (attention, a layer's own formulation), and the
    local result would be wrong, so callers must treat the layer as not sequence-parallel.
    """
    record = {"scans": 0}
    token = _SEQ_AXIS.set((axis_name, record))
    try:
        yield record
    finally:
        _SEQ_AXIS.reset(token)


@contextlib.contextmanager
def unsharded():
    """Trace the enclosed scans as local, single-chunk scans (used for the per-device pass)."""
    token = _SEQ_AXIS.set(None)
    try:
        yield
    finally:
        _SEQ_AXIS.reset(token)


def seq_axis(note: bool = False) -> str | None:
    """The mesh axis the sequence is sharded over, or None; ``note`` counts one sharded scan."""
    current = _SEQ_AXIS.get()
    if current is None:
        return None
    if note:
        current[1]["scans"] += 1
    return current[0]


def incoming_state(a_total: jax.Array, h_last: jax.Array, axis_name: str, semigroup: Semigroup = DIAGONAL, h0: jax.Array | None = None) -> jax.Array:
    """The state entering this device's chunk: exclusive scan of the per-device summaries.

    Args:
      a_total: this device's total transition A_tot = a_{L-1} (.) ... (.) a_0 over its chunk, (*S).
      h_last: this device's final state scanned from zero, (*state).
      axis_name: the mesh axis the sequence is split over (devices in sequence order).
      h0: the state before the whole sequence; zeros when omitted.
    Returns:
      h_in (*state): h0 on the first device, else the state after every earlier device's chunk.
    """
    a_all = jax.lax.all_gather(a_total, axis_name)  # (devices, *S)
    h_all = jax.lax.all_gather(h_last, axis_name)  # (devices, *state)
    # Inclusive prefix over devices (a handful of elements), then shift by one: exclusive.
    h_incl = _associative(a_all, h_all, h0, semigroup, invariant=False)
    index = jax.lax.axis_index(axis_name)
    start = jnp.zeros_like(h_last) if h0 is None else jnp.broadcast_to(h0, h_last.shape).astype(h_last.dtype)
    previous = jax.lax.dynamic_index_in_dim(h_incl, jnp.maximum(index - 1, 0), axis=0, keepdims=False)
    return jnp.where(index == 0, start, previous)


def sharded_linear_scan(a: jax.Array, b: jax.Array, *, axis_name: str, **options) -> jax.Array:
    """:func:`linear_scan` of the whole sequence when each device holds one chunk of it.

    Call inside ``shard_map`` with the sequence axis of ``b`` (and of ``a`` unless ``invariant``)
    split over ``axis_name`` in order; ``options`` are :func:`linear_scan`'s keywords, shapes local
    (L_local = L / devices). The same as calling :func:`linear_scan` under :func:`sequence_sharded`.
    """
    with sequence_sharded(axis_name):
        return linear_scan(a, b, **options)


def _sharded_linear_scan(a, b, axis_name, backend, semigroup, invariant, h0, chunk_size) -> jax.Array:
    # Each device scans its chunk from zero with ``backend``, forms A_prefix_k = a_k (.) ... (.) a_0
    # over its chunk, receives h_in from incoming_state and returns h_local_k + A_prefix_k (.) h_in.
    # Extra memory: one (L_local, *S) prefix of transitions.
    with unsharded():
        h_local = linear_scan(a, b, backend=backend, semigroup=semigroup, invariant=invariant, chunk_size=chunk_size)
    steps = jnp.broadcast_to(a, b.shape[:1] + a.shape) if invariant else a
    a_prefix = jax.lax.associative_scan(lambda earlier, later: semigroup.compose(later, earlier), steps, axis=0)
    h_in = incoming_state(a_prefix[-1], h_local[-1], axis_name, semigroup, h0)
    return h_local + semigroup.act(a_prefix, h_in)


def sequence_halo(x: jax.Array, width: int) -> jax.Array:
    """The ``width`` steps preceding this device's chunk of ``x`` (seq, ...): zeros outside a sharded trace.

    For causal operators with a window (Mamba's depthwise convolution): device i receives the last
    ``width`` rows of device i-1 (``ppermute``); the first device, like an unsharded sequence, gets zeros.
    """
    halo = jnp.zeros((width,) + x.shape[1:], x.dtype)
    axis = seq_axis()
    if axis is None or width == 0:
        return halo
    n = jax.lax.axis_size(axis)
    return jax.lax.ppermute(x[-width:], axis, perm=[(i, i + 1) for i in range(n - 1)])
