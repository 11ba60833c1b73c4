"""The math of the oscillatory layers, LinOSS (IM, IMEX) and D-LinOSS (IMEX1, IMEX2, IM, EX): pure functions.

Symbols (docs/models.md section 2; D-LinOSS: Boyer, Rusch & Rus, arXiv 2505.12171, eqs. 3-6;
LinOSS: Rusch & Rus, ICLR 2025, arXiv 2410.03943, eqs. 4-7). Per state i = 1..P, all diagonal:

- u_k (H,) the layer input at step k; y_k (H,) the output.
- A (P,) stiffness (squared natural frequency), A >= 0;  G (P,) damping, G >= 0 (G = 0 for LinOSS).
- dt (P,) the learned step size, in (0, 1).
- B (P, H) complex input map, b_k = B u_k;  C (H, P) complex output map;  D (H,) real skip.
- w_k = [z_k; x_k] the complex state: velocity z and position x of each oscillator.
- M (P, 2, 2) the real, time-invariant transition per state and F_k = f b_k (P, 2) the input per step,
  f (P, 2) real, so that w_k = M w_{k-1} + F_k with w_{-1} = 0, and y_k = Re(C x_k) + D u_k.
- S the normaliser of each implicit step (its meaning per variant is in :data:`DISCRETIZATIONS`).

Continuous system: x'' = -A x - G x' + B u. Raw parameters (names and layouts are public API): A_diag
(P,), G_diag (P,) (D-LinOSS only), dt (P,), B (P, H, 2) and C (H, P, 2) as real/imaginary pairs, D (H,).
Each variant projects the raw values onto the set where its discretization behaves (docs/models.md); the
projections are the ones of the authors' code.

Backends. The generic ones (``linear_scan`` with the 2x2 block semigroup) are kept: "associative" is
the authors' own formulation. Two exact formulations of our own exploit that the system is LTI and
that F_k has rank one per state (F_k = f b_k with f real):

- ``"chunked-toeplitz"``: cut the sequence into blocks of ``TOEPLITZ_BLOCK`` steps. Inside a block,
  x_t = sum_{j<=t} K_{t-j} b_j + R_t h with the kernel K_n = e_x^T M^n f and R_t = e_x^T M^{t+1}: a
  batched (P, T, T) Toeplitz matrix product (GEMM-shaped work). The block-entry state h is carried
  across blocks by a 2x2 scan over L/T steps. No eigen-decomposition, so repeated eigenvalues (Jordan
  blocks at the edge of the IMEX1 band, A = 0 in LinOSS) need no special case, and the arithmetic is
  real (the real and imaginary parts of b are independent columns because M and f are real).
- ``"blocked"``: the same block decomposition evaluated the other way round: inside every block the
  recurrence runs sequentially from a zero state, all blocks of all sequences at once as SIMD lanes
  (T = ``BLOCKED_BLOCK`` = 512 loop steps instead of L); block-final states are carried across blocks by a
  2x2 scan with M^T, and row x of M^(t+1) times the carried-in state is added. Exact, real arithmetic,
  no eigen-decomposition. Its in-block recurrence has a written-out backward pass (the adjoint
  recurrence with M^T): autodiff of that loop reduced six coefficient gradients over the lanes at
  every step. The fastest on CPU (faster than chunked-Toeplitz too): at L=50k, H=P=64, float32, 30.9 ms against 69.7 ms for
  the authors' associative formulation (2.26x), measured side by side in one ``profile scan`` sweep
  (results/cpu-dlinoss-backends).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from dlbench.layers.kernels.dtypes import complex_dtype
from dlbench.layers.kernels.scan import BLOCK2X2, linear_scan

# Steps per block of the chunked-Toeplitz backend. Work per token grows with T (a T x T Toeplitz
# product) while the carry scan shrinks as L/T; 32 was the fastest on CPU at L=50k, H=P=64 (of 16-128).
TOEPLITZ_BLOCK = 32
# Steps per block of the "blocked" backend: T sequential steps over n = L/T lanes, then n carry steps.
# On CPU at L=50k, H=P=64 (batch folded into the lanes), two rounds gave 33.6-33.8 ms for T=512
# against 34.3-37.4 ms for 256 and 33.8-34.1 ms for 1024.
BLOCKED_BLOCK = 512
# The IMEX1/IMEX2 band divides by dt^2; the authors floor it so that dt -> 0 does not divide by zero.
DT2_FLOOR = 1e-6
# IMEX2 needs dt G <= 1 (its band has sqrt(1 - dt G)); G is clamped to dt G <= IMEX2_MAX_DTG so the
# square root, and its gradient (1 / (2 sqrt(1 - dt G)) <= 16 here), stay finite.
IMEX2_MAX_DTG = 1.0 - 1e-3
# Eigenvalue moduli above 1 + this count as unstable (EX warning); absorbs rounding at |lambda| = 1.
STABILITY_SLACK = 1e-6



# ---------------------------------------------------------------------------------------------------
# Discretizations: raw parameters -> (A, G, dt) -> (M, f)
# ---------------------------------------------------------------------------------------------------

Vec = Float[Array, " state"]


@dataclasses.dataclass(frozen=True)
class Discretization:
    """One row of the docs/models.md table: its projection of the raw parameters and its (M, f).

    ``project(A_raw, G_raw, dt_raw) -> (A, G, dt)``; ``transition(A, G, dt) -> (M (P,2,2), f (P,2))``.
    """

    name: str
    project: Callable[[Vec, Vec, Vec], tuple[Vec, Vec, Vec]]
    transition: Callable[[Vec, Vec, Vec], tuple[Float[Array, "state 2 2"], Float[Array, "state 2"]]]


def _block(m00, m01, m10, m11) -> Float[Array, "state 2 2"]:
    return jnp.stack([jnp.stack([m00, m01], -1), jnp.stack([m10, m11], -1)], -2)


def _imex1(A, G, dt):
    # z_k = z_{k-1} + dt(-A x_{k-1} - G z_k + b_k), x_k = x_{k-1} + dt z_k;  S = 1 + dt G.
    inv_s = 1.0 / (1.0 + dt * G)
    M = _block(inv_s, -dt * A * inv_s, dt * inv_s, 1.0 - dt * dt * A * inv_s)
    return M, jnp.stack([dt * inv_s, dt * dt * inv_s], -1)


def _imex2(A, G, dt):
    # G z_{k-1} instead of G z_k (explicit damping). With G = 0 this is LinOSS-IMEX.
    damp = 1.0 - dt * G
    M = _block(damp, -dt * A, dt * damp, 1.0 - dt * dt * A)
    return M, jnp.stack([dt, dt * dt], -1)


def _im(A, G, dt):
    # Fully implicit; S = 1 + dt G + dt^2 A. With G = 0 this is LinOSS-IM (S_LinOSS = 1/S).
    inv_s = 1.0 / (1.0 + dt * G + dt * dt * A)
    M = _block(inv_s, -dt * A * inv_s, dt * inv_s, (1.0 + dt * G) * inv_s)
    return M, jnp.stack([dt * inv_s, dt * dt * inv_s], -1)


def _ex(A, G, dt):
    # Explicit in both x and z: F_k has no x component, and M can leave the unit disk.
    M = _block(1.0 - dt * G, -dt * A, dt, jnp.ones_like(dt))
    return M, jnp.stack([dt, jnp.zeros_like(dt)], -1)


def _band(dt, q, sign: float):
    """[A_lo, A_hi] where the IMEX eigenvalues are complex: (2 + s q -/+ 2 sqrt(1 + s q)) / dt^2."""
    root = 2.0 * jnp.sqrt(1.0 + sign * q)
    denom = jnp.maximum(dt * dt, DT2_FLOOR)
    return (2.0 + sign * q - root) / denom, (2.0 + sign * q + root) / denom


def _project_linoss(A_raw, G_raw, dt_raw):
    return jax.nn.relu(A_raw), jnp.zeros_like(A_raw), jax.nn.sigmoid(dt_raw)


def band_projection(A_raw, A_lo, A_hi):
    """A_raw projected onto [A_lo, A_hi] as the D-LinOSS authors write it: A_lo + relu(A - A_lo) - relu(A - A_hi).

    Equal to ``clip`` in value wherever A_lo <= A_hi, but not in gradient at an exact tie: jax's relu
    has derivative 0 at 0, so at A_raw = A_lo the whole gradient flows to A_lo (through dt and G) and
    none to A_raw, and at A_raw = A_hi all of it flows to A_raw; ``jnp.clip`` splits a tie in half.
    This is the authors' gradient (issue 15: with ``clip`` the gradient at the lower edge, A_diag = 0
    with G_diag <= 0, was half of theirs). tests/test_norms.py pins it at exact ties.
    """
    # Evaluated as the equivalent selection: the same derivative everywhere (1 w.r.t. A_lo where
    # A_raw <= A_lo, 1 w.r.t. A_hi where A_raw > A_hi, else 1 w.r.t. A_raw), but exact values: the sum
    # form cancels (A_raw - A_lo) - (A_raw - A_hi) and, far above the band, lands ~1e-12 off its edge,
    # where the double eigenvalue moves by sqrt of that (|lambda| = 1 + 1e-6, tests/test_oscillatory.py).
    return jnp.where(A_raw <= A_lo, A_lo, jnp.where(A_raw > A_hi, A_hi, A_raw))


def _project_imex1(A_raw, G_raw, dt_raw):
    dt = jax.nn.sigmoid(dt_raw)
    G = jax.nn.relu(G_raw)
    lo, hi = _band(dt, dt * G, +1.0)
    return band_projection(A_raw, lo, hi), G, dt


def _project_imex2(A_raw, G_raw, dt_raw):
    dt = jax.nn.sigmoid(dt_raw)
    # The guard: dt G > 1 makes sqrt(1 - dt G) NaN, so G is clamped to dt G <= IMEX2_MAX_DTG. This is
    # part of the parametrisation (traced like the relu), so a jitted call can never return NaN from it;
    # eager calls warn when it is active, and construction refuses an init that needs it.
    G = jnp.minimum(jax.nn.relu(G_raw), IMEX2_MAX_DTG / dt)
    lo, hi = _band(dt, dt * G, -1.0)
    return jnp.clip(A_raw, lo, hi), G, dt


def _project_im(A_raw, G_raw, dt_raw):
    dt = jax.nn.sigmoid(dt_raw)
    G = jnp.maximum(G_raw, -dt * A_raw)
    return jnp.maximum(A_raw, G * G / 4.0), G, dt


def _project_ex(A_raw, G_raw, dt_raw):
    dt = jax.nn.sigmoid(dt_raw)
    G = jnp.maximum(G_raw, dt * A_raw)
    return jnp.maximum(A_raw, G * G / 4.0), G, dt


LINOSS_DISCRETIZATIONS: dict[str, Discretization] = {
    "IM": Discretization("IM", _project_linoss, _im),
    "IMEX": Discretization("IMEX", _project_linoss, _imex2),
}
DLINOSS_DISCRETIZATIONS: dict[str, Discretization] = {
    "IMEX1": Discretization("IMEX1", _project_imex1, _imex1),
    "IMEX2": Discretization("IMEX2", _project_imex2, _imex2),
    "IM": Discretization("IM", _project_im, _im),
    "EX": Discretization("EX", _project_ex, _ex),
}


def block_eigenvalues(M: Float[Array, "state 2 2"]) -> Array:
    """The two eigenvalues of each 2x2 block, (P, 2) complex, from its trace and determinant."""
    half_tr = 0.5 * (M[:, 0, 0] + M[:, 1, 1])
    det = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
    root = jnp.sqrt((half_tr * half_tr - det).astype(complex_dtype(M.dtype)))
    return jnp.stack([half_tr + root, half_tr - root], -1)


# ---------------------------------------------------------------------------------------------------
# Recurrence backends: (M, f, u, B, C) -> sum over states of Re(C x), (L, H)
# ---------------------------------------------------------------------------------------------------


def ssm_generic(M, f, u, B, C_ri, *, backend: str, chunk_size: int) -> Float[Array, "seq hidden"]:
    """The generic 2x2 scans on the complex state, F_k = f b_k (L, P, 2) complex, as docs/models.md writes it."""
    b_ri = jnp.einsum("lh,phr->lpr", u, B)
    F = f[None].astype(complex_dtype(u.dtype)) * jax.lax.complex(b_ri[..., 0], b_ri[..., 1])[..., None]
    x = linear_scan(M, F, semigroup=BLOCK2X2, invariant=True, backend=backend, chunk_size=chunk_size)[..., 1]
    return jnp.einsum("lpr,hpr->lh", jnp.stack([x.real, x.imag], -1), C_ri)


def _toeplitz_tables(M, f, T: int):
    """Per state p: the (T+1, T) block matrix and e_x^T M^(t+1) (T, 2), plus M^T (P, 2, 2).

    Rows t < T of the matrix hold K_{t-j} = (M^(t-j) f)_x for j <= t (zero above the diagonal, the
    system is causal); row T holds (M^(T-1-j) f)_z, the velocity a block leaves behind. The position
    it leaves behind is row T-1, so one product yields the outputs and the carry inputs.
    """

    def step(Mn, _):
        return BLOCK2X2.compose(M, Mn), Mn

    MT, powers = jax.lax.scan(step, BLOCK2X2.identity_like(M), None, length=T)  # powers[n] = M^n
    Q = jnp.moveaxis(BLOCK2X2.act(powers, f[None]), 0, 1)  # (P, n, q) = M^n f
    lag = jnp.arange(T)[:, None] - jnp.arange(T)[None, :]
    toe = jnp.where(lag >= 0, Q[:, jnp.clip(lag, 0), 1], 0.0)
    matrix = jnp.concatenate([toe, Q[:, ::-1, 0][:, None, :]], axis=1)
    R = jnp.moveaxis(BLOCK2X2.compose(powers, M[None])[..., 1, :], 0, 1)  # (P, t, q): row x of M^(t+1)
    return matrix, R, MT


def _ssm_chunked_toeplitz(M, f, u, B, C_ri, *, block: int) -> Float[Array, "seq hidden"]:
    """Exact blockwise evaluation (module docstring): Toeplitz product inside blocks, 2x2 carry across.

    The input and output maps are GEMMs in the time-major layout (l, p, r) that XLA's CPU GEMM runs
    fastest; the block product runs state-major, (p, t, n, r), so that each state's (T+1, T) matrix
    multiplies a contiguous (T, n r) panel (r: real/imaginary part of b, n: block, t: step in block).
    """
    length, P = u.shape[0], B.shape[0]
    T = max(1, min(block, length))
    n_blocks = math.ceil(length / T)
    u = jnp.pad(u, ((0, n_blocks * T - length), (0, 0)))  # causal: the padded tail is dropped
    b = jnp.einsum("lh,phr->lpr", u, B).reshape(n_blocks, T, P, 2)
    matrix, R, MT = _toeplitz_tables(M, f, T)
    out = jnp.einsum("ptj,njpr->ptnr", matrix, b)  # XLA moves b to (p, j, n, r) for the batched GEMM
    ends = jnp.moveaxis(jnp.stack([out[:, T], out[:, T - 1]], -1), 1, 0)  # (n, P, r, q)

    def carry(h, e):  # h (P, r, q): the state entering a block; M^T acts on q = [z, x].
        return BLOCK2X2.act(MT[:, None], h) + e, h

    _, h_in = jax.lax.scan(carry, jnp.zeros_like(ends[0]), ends)  # (n, P, r, q)
    h_in = jnp.moveaxis(h_in, 0, 1)[:, None]  # (P, 1, n, r, q)
    x = out[:, :T] + R[:, :, None, None, 0] * h_in[..., 0] + R[:, :, None, None, 1] * h_in[..., 1]
    y = jnp.einsum("ptnr,hpr->nth", x, C_ri)
    return y.reshape(n_blocks * T, -1)[:length]


Column = Float[Array, " column"]


def _local_scan(m00, m01, m10, m11, f_z, f_x, b):
    """w_t = M w_(t-1) + f b_t from w_(-1) = 0 in every lane: every (z_t, x_t), each (T, lanes, 2P)."""

    def step(w, b_t):
        z, x = w
        z, x = m00 * z + m01 * x + f_z * b_t, m10 * z + m11 * x + f_x * b_t
        return (z, x), (z, x)

    zeros = jnp.zeros(b.shape[1:], b.dtype)
    return jax.lax.scan(step, (zeros, zeros), b)[1]


@jax.custom_vjp
def _local_recurrence(
    m00: Column, m01: Column, m10: Column, m11: Column, f_z: Column, f_x: Column, b: Float[Array, "block lanes column"]
) -> tuple[Float[Array, "lanes column"], Float[Array, "lanes column"], Float[Array, "block lanes column"]]:
    """Pass 1 of :func:`_ssm_blocked`: (z_(T-1), x_(T-1), every x_t) of the in-block recurrence.

    Its gradient is written out (:func:`_local_recurrence_bwd`): autodiff of the loop reduced the six
    coefficient gradients over the lanes at every step. A layer's forward and backward pass at
    L 4,096, batch 4, H 128, P 64 on CPU took 48 ms against 58 ms (measured side by side)."""
    z, x = _local_scan(m00, m01, m10, m11, f_z, f_x, b)
    return z[-1], x[-1], x


def _local_recurrence_fwd(m00, m01, m10, m11, f_z, f_x, b):
    z, x = _local_scan(m00, m01, m10, m11, f_z, f_x, b)
    return (z[-1], x[-1], x), (m00, m01, m10, m11, f_z, f_x, b, z, x)


def _local_recurrence_bwd(residuals, cotangents):
    """The adjoint recurrence, run backwards with M^T: with a_t the cotangent of w_t,
    a_t = M^T a_(t+1) + e_x dx_t (plus the block-end cotangent at t = T-1); then db_t = f . a_t, and
    dM = sum over t and lanes of a_t w_(t-1)^T, df = sum of a_t b_t, accumulated per lane inside the
    loop and summed over lanes once at the end."""
    m00, m01, m10, m11, f_z, f_x, b, z, x = residuals
    dz_end, dx_end, dx = cotangents
    zeros = jnp.zeros_like(z[0])
    z_prev = jnp.concatenate([zeros[None], z[:-1]])
    x_prev = jnp.concatenate([zeros[None], x[:-1]])

    def step(carry, inputs):
        (az, ax), sums = carry
        dx_t, w_b = inputs  # w_b (3, lanes, 2P): z_(t-1), x_(t-1), b_t
        ax = ax + dx_t
        sums = sums + jnp.stack([az, ax])[:, None] * w_b[None]  # (2, 3, lanes, 2P)
        return ((m00 * az + m10 * ax, m01 * az + m11 * ax), sums), f_z * az + f_x * ax

    # The carry entering step t is a_(t+1) pushed through M^T; at t = T-1 it is the end cotangent.
    w_b = jnp.stack([z_prev, x_prev, b], 1)
    (_, sums), db = jax.lax.scan(step, ((dz_end, dx_end), jnp.zeros((2, 3, *zeros.shape), zeros.dtype)), (dx, w_b), reverse=True)
    sums = sums.sum(2)
    return (sums[0, 0], sums[0, 1], sums[1, 0], sums[1, 1], sums[0, 2], sums[1, 2], db)


_local_recurrence.defvjp(_local_recurrence_fwd, _local_recurrence_bwd)


def _ssm_blocked(M, f, u, B, C_ri, *, block: int) -> Float[Array, "*batch seq hidden"]:
    """Exact blockwise evaluation with every block a SIMD lane (module docstring, "blocked").

    Pass 1 runs the recurrence from a zero state inside all blocks of all sequences at once: T
    sequential steps, each an elementwise update of (lanes, 2P) arrays, so the loop count drops from L
    to T and each step has work to vectorise. Pass 2 carries block-final states across the n blocks of
    each sequence with M^T. Pass 3 adds the carried-in state's contribution, row x of M^(t+1) times
    h_in. Arithmetic is real: M and f are real, so the real and imaginary parts of b (the (p, r)
    interleaved columns) evolve independently. The layout suits XLA:CPU: the batch is folded into the
    lanes (no vmap), the input and output maps are plain GEMMs on (T * lanes, .) panels, and only
    H-wide arrays are transposed (einsums with block-major outputs ran 5-10x slower).
    """
    single = u.ndim == 2
    u = u[None] if single else u
    batch, length, _ = u.shape
    P = B.shape[0]
    T = max(1, min(block, length))
    n_blocks = math.ceil(length / T)
    lanes = batch * n_blocks
    u = jnp.pad(u, ((0, 0), (0, n_blocks * T - length), (0, 0)))  # causal: the padded tail is dropped
    u = u.reshape(batch, n_blocks, T, -1).transpose(2, 0, 1, 3).reshape(T * lanes, -1)  # step-in-block major
    b = (u @ B.transpose(1, 0, 2).reshape(-1, 2 * P)).reshape(T, lanes, 2 * P)

    def per_column(x: Array) -> Array:  # (..., P) -> (..., 2P), matching the (p, r) interleaved columns
        return jnp.repeat(x, 2, axis=-1)

    m00, m01, m10, m11 = (per_column(M[:, i, j]) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    f_z, f_x = per_column(f[:, 0]), per_column(f[:, 1])

    zeros = jnp.zeros((lanes, 2 * P), u.dtype)
    z_end, x_end, x_local = _local_recurrence(m00, m01, m10, m11, f_z, f_x, b)  # x_local (T, lanes, 2P)

    def power(Mn, _):
        Mn = BLOCK2X2.compose(M, Mn)
        return Mn, Mn[..., 1, :]

    MT, R = jax.lax.scan(power, BLOCK2X2.identity_like(M), None, length=T)  # R[t]: row x of M^(t+1), (T, P, q)
    t00, t01, t10, t11 = (per_column(MT[:, i, j]) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))

    def carry(h, end):  # h (batch, 2P) each: the state entering block j of every sequence
        hz, hx = h
        return (t00 * hz + t01 * hx + end[0], t10 * hz + t11 * hx + end[1]), h

    ends = (z_end.reshape(batch, n_blocks, -1).swapaxes(0, 1), x_end.reshape(batch, n_blocks, -1).swapaxes(0, 1))
    _, (hz_in, hx_in) = jax.lax.scan(carry, (zeros[:batch], zeros[:batch]), ends)  # (n, batch, 2P) each
    hz_in, hx_in = (h.swapaxes(0, 1).reshape(lanes, -1) for h in (hz_in, hx_in))
    x = x_local + per_column(R[..., 0])[:, None] * hz_in[None] + per_column(R[..., 1])[:, None] * hx_in[None]
    y = x.reshape(T * lanes, 2 * P) @ C_ri.reshape(C_ri.shape[0], 2 * P).T
    y = y.reshape(T, batch, n_blocks, -1).transpose(1, 2, 0, 3).reshape(batch, n_blocks * T, -1)[:, :length]
    return y[0] if single else y


# The exact formulations this module adds to the generic backends; the block size is read at call time.
FORMULATIONS: dict[str, Callable[..., Array]] = {
    "chunked-toeplitz": lambda M, f, u, B, C_ri: _ssm_chunked_toeplitz(M, f, u, B, C_ri, block=TOEPLITZ_BLOCK),
    "blocked": lambda M, f, u, B, C_ri: _ssm_blocked(M, f, u, B, C_ri, block=BLOCKED_BLOCK),
}
# Formulations that take (batch, seq, hidden) directly (folding the batch in beats vmapping them).
BATCHED_FORMULATIONS = frozenset({"blocked"})


# ---------------------------------------------------------------------------------------------------
# Initialisation (docs/models.md section 2): float64 math on float32 draws
# ---------------------------------------------------------------------------------------------------


def ring_init(key, P: int, r_min, r_max, theta_min, theta_max) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, G, dt_raw) whose IMEX1 eigenvalues are r e^(+-i theta), r uniform in area, float64 math."""
    if not 0.0 < r_min <= r_max <= 1.0:
        raise ValueError(f"ring init needs 0 < r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not theta_min <= theta_max:
        raise ValueError(f"ring init needs theta_min <= theta_max, got {theta_min} > {theta_max}")
    k_r, k_t, k_dt = jax.random.split(key, 3)
    unit = lambda k: np.asarray(jax.random.uniform(k, (P,), jnp.float32), np.float64)  # noqa: E731
    r = np.sqrt(r_min**2 + (r_max**2 - r_min**2) * unit(k_r))  # uniform in area on the annulus
    theta = theta_min + (theta_max - theta_min) * unit(k_t)
    dt_raw = 0.5 * np.asarray(jax.random.normal(k_dt, (P,), jnp.float32), np.float64)
    dt = 1.0 / (1.0 + np.exp(-dt_raw))
    # IMEX1: |lambda|^2 = 1/(1 + dt G) and tr M = 2 r cos(theta) invert to:
    G = (1.0 / r**2 - 1.0) / dt
    A = (1.0 + 1.0 / r**2 - 2.0 * np.cos(theta) / r) / dt**2
    return A, G, dt_raw


def rejection_uniform_init(key, P: int, project, A_range, G_range, max_rounds: int = 200):
    """(A, G, dt_raw) with A, G uniform, rejection-sampled to where ``project`` leaves them unchanged."""
    accepted: list[np.ndarray] = []
    for k in jax.random.split(key, max_rounds):
        k_a, k_g, k_dt = jax.random.split(k, 3)
        A = np.asarray(jax.random.uniform(k_a, (P,), jnp.float32, *A_range), np.float64)
        G = np.asarray(jax.random.uniform(k_g, (P,), jnp.float32, *G_range), np.float64)
        dt_raw = 0.5 * np.asarray(jax.random.normal(k_dt, (P,), jnp.float32), np.float64)
        A_p, G_p, _ = (np.asarray(v, np.float64) for v in project(*(jnp.asarray(v, jnp.float32) for v in (A, G, dt_raw))))
        ok = np.isclose(A_p, A, rtol=1e-5, atol=1e-7) & np.isclose(G_p, G, rtol=1e-5, atol=1e-7)
        accepted.extend(np.stack([A, G, dt_raw], -1)[ok])
        if len(accepted) >= P:
            A, G, dt_raw = np.stack(accepted[:P], -1)
            return A, G, dt_raw
    raise ValueError(
        f"uniform init: fewer than {P} of {max_rounds * P} draws with A in {A_range}, G in {G_range} lie in "
        "the region the discretization keeps unchanged; widen the ranges"
    )
