"""S5: a diagonalised MIMO state-space layer (Smith, Warrington & Linderman, ICLR 2023).

Symbols (docs/models.md section 3; H hidden width, L length):

- ``ssm_size`` (the constructor's ``state_dim``): the size of the continuous-time state. With
  conjugate symmetry only one eigenvalue of each conjugate pair is stored, so the stored state has
  P = ssm_size / 2 entries; without it P = ssm_size.
- Lambda (P,) complex: the continuous-time eigenvalues, Lambda = min(Lambda_re, -1e-4) + i Lambda_im
  (the clip keeps every mode strictly stable, S5's ``clip_eigs``).
- step (P,): the per-state time step, step = exp(log_step).
- B~ (P, H) complex: the input matrix in the eigenbasis (raw ``B`` holds its real/imag pairs).
- C~ (H, P) complex: the output matrix in the eigenbasis (raw ``C`` holds its real/imag pairs).
- Lambda_bar, B_bar: the discretised transition and input matrix,
  ZOH: Lambda_bar = exp(Lambda step), B_bar = (Lambda_bar - 1) / Lambda * B~;
  bilinear: Lambda_bar = (1 + step Lambda / 2) / (1 - step Lambda / 2), B_bar = step / (1 - step Lambda / 2) * B~.

The layer runs x_k = Lambda_bar x_{k-1} + B_bar u_k (x_{-1} = 0) and reads out
y_k = f Re(C~ x_k) + D * u_k with f = 2 under conjugate symmetry (the dropped conjugate modes
contribute the complex conjugate of the kept ones) and f = 1 without.

References: Smith et al., "Simplified State Space Layers for Sequence Modeling", ICLR 2023,
eqs. (6)-(7) and appendix C (HiPPO-N initialisation); the authors' JAX code, lindermanlab/S5
(``s5/ssm.py``, ``s5/ssm_init.py``).
"""

from __future__ import annotations

from typing import ClassVar, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Complex, Float

from dlbench.errors import check_choice
from dlbench.layers.base import SCAN_CHOICES, AbstractSequenceLayer, LayerOptions, SSMParam, complex_dtype, scan_dtype
from dlbench.layers.kernels.diagonal import diagonal_ssm
from dlbench.registry import register_model

# Upper bound on Re(Lambda): keeps |Lambda_bar| < 1 for every step and |Lambda| away from 0, so the
# ZOH gain (Lambda_bar - 1) / Lambda never divides by zero (S5's clip_eigs value).
MAX_REAL_EIGENVALUE = -1e-4


def hippo_n(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the normal part of HiPPO-LegS ("HiPPO-N") of size ``n``, in float64.

    S = -(tril(q q^T) - diag(m)) + p p^T with q_m = sqrt(2m+1), p_m = sqrt(m+1/2), m = 0..n-1.
    Its diagonal is exactly -1/2 and S + I/2 is skew-symmetric, so S = -I/2 + V diag(i omega) V^H
    with omega the eigenvalues of the Hermitian matrix -i (S + I/2).

    Returns:
      Lambda (n,) complex128, all with real part -1/2 (ascending omega, so the first half holds one
      eigenvalue of each conjugate pair), and V (n, n) unitary with S = V diag(Lambda) V^H.
    """
    m = np.arange(n, dtype=np.float64)
    q = np.sqrt(2.0 * m + 1.0)
    p = np.sqrt(m + 0.5)
    s = -(np.tril(np.outer(q, q)) - np.diag(m)) + np.outer(p, p)
    diag = np.diagonal(s)
    # eigh reads one triangle and assumes a real diagonal; removing the diagonal first makes the
    # matrix exactly Hermitian instead of relying on that (the S5 code passes -iS with an imaginary
    # diagonal, which LAPACK silently drops: same result).
    omega, v = np.linalg.eigh(-1j * (s - np.diag(diag)))
    return np.mean(diag) + 1j * omega, v


@register_model("s5", description="S5: diagonal complex SSM, HiPPO-N init, ZOH or bilinear discretisation")
class S5(AbstractSequenceLayer):
    """The S5 layer: (seq, hidden) -> (seq, hidden), including the D * u skip.

    Args (beyond :class:`AbstractSequenceLayer`; ``state_dim`` is ssm_size, the continuous-time state
    size, P = ssm_size / 2 stored with ``conj_sym``, and the recurrence runs in at least float32):
      conj_sym: store one eigenvalue per conjugate pair and read out 2 Re(C~ x).
      discretization: "zoh" (default) or "bilinear".
      blocks: number of HiPPO-N blocks on the diagonal of the initial state matrix (S5's ``blocks``).
      dt_min, dt_max: range of the log-uniform initial time steps.

    Parameters (``nnx.Param`` attributes, layouts from docs/models.md section 3):
      Lambda_re, Lambda_im (P,), B (P, H, 2), log_step (P,): :class:`SSMParam` (the S5 code's
      "ssm" group: own learning rate, no weight decay). C (H, P, 2) and D (H,): plain ``nnx.Param``,
      as in the S5 code's standard optimiser setup, where C is an ordinary weight with weight decay.
    """

    scans: ClassVar[tuple[str, ...]] = SCAN_CHOICES
    discretizations: ClassVar[tuple[str, ...]] = ("zoh", "bilinear")

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        conj_sym: bool = True,
        discretization: str = "zoh",
        blocks: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        **common: Unpack[LayerOptions],
    ):
        super().__init__(hidden_dim, state_dim, **common)
        check_choice("S5 discretization", discretization, self.discretizations)
        if blocks < 1:
            raise ValueError(f"S5 blocks must be >= 1, got {blocks}")
        divisor = 2 * blocks if conj_sym else blocks
        if state_dim % divisor:
            raise ValueError(
                f"S5 state_dim {state_dim} must be divisible by {divisor} (blocks={blocks}, conj_sym={conj_sym})"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S5 needs 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.conj_sym = conj_sym
        self.discretization = discretization
        self.blocks = blocks
        self.ssm_size = state_dim
        self.P = state_dim // 2 if conj_sym else state_dim

        # HiPPO-N per block; with conj_sym keep the first half of each block's eigenpairs (one of
        # each conjugate pair, since eigh sorts omega ascending and omega comes in +- pairs).
        block_size = state_dim // blocks
        kept = block_size // 2 if conj_sym else block_size
        lam_block, v_block = hippo_n(block_size)
        lam = np.tile(lam_block[:kept], blocks)  # (P,)
        v = v_block[:, :kept]  # (block_size, kept): V restricted to the kept modes
        v_inv = v.conj().T  # (kept, block_size): V is unitary, so V^-1 = V^H

        k_b, k_c_re, k_c_im, k_d, k_step = (rngs.params() for _ in range(5))
        h, param_dtype = hidden_dim, self.param_dtype
        # Draw and rotate in at least float32 (complex bfloat16 does not exist), store in param_dtype.
        real = scan_dtype(param_dtype)
        cplx = complex_dtype(param_dtype)
        # B ~ lecun-normal on (ssm_size, H); jax's fan_in is axis -2, i.e. ssm_size, exactly as the
        # S5 code's lecun_normal()(key, (local_P, H)). B~ = V^-1 B, block-diagonal V^-1.
        b = jax.nn.initializers.lecun_normal()(k_b, (state_dim, h), real)
        b_tilde = jnp.einsum("pq,kqh->kph", jnp.asarray(v_inv, cplx), b.reshape(blocks, block_size, h).astype(cplx))
        b_tilde = b_tilde.reshape(self.P, h)
        # C: real and imaginary parts each truncated-normal with std 1/sqrt(ssm_size) (lecun-normal
        # with fan_in = ssm_size, the number of states one output sums over). This is the S5 code's
        # default C_init "trunc_standard_normal" (lecun_normal per output row of shape (1, ssm_size, 2)).
        c_init = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
        c = jax.lax.complex(c_init(k_c_re, (h, state_dim), real), c_init(k_c_im, (h, state_dim), real))
        c_tilde = jnp.einsum("hkq,qp->hkp", c.reshape(h, blocks, block_size).astype(cplx), jnp.asarray(v, cplx))
        c_tilde = c_tilde.reshape(h, self.P)

        self.Lambda_re = SSMParam(jnp.asarray(lam.real, param_dtype))
        self.Lambda_im = SSMParam(jnp.asarray(lam.imag, param_dtype))
        self.B = SSMParam(jnp.stack([b_tilde.real, b_tilde.imag], axis=-1).astype(param_dtype))
        self.C = nnx.Param(jnp.stack([c_tilde.real, c_tilde.imag], axis=-1).astype(param_dtype))
        self.D = nnx.Param(jax.random.normal(k_d, (h,), real).astype(param_dtype))
        log_step = jax.random.uniform(k_step, (self.P,), real, minval=np.log(dt_min), maxval=np.log(dt_max))
        self.log_step = SSMParam(log_step.astype(param_dtype))

    def discretize(self) -> tuple[Complex[Array, " state"], Complex[Array, "state hidden"]]:
        """Lambda_bar (P,) and B_bar (P, H) in the complex dtype of the computation."""
        real = scan_dtype(self.dtype)
        lam_re = jnp.minimum(self.Lambda_re[...].astype(real), MAX_REAL_EIGENVALUE)
        lam = jax.lax.complex(lam_re, self.Lambda_im[...].astype(real))
        step = jnp.exp(self.log_step[...].astype(real))
        b = self.B[...].astype(real)
        b_tilde = jax.lax.complex(b[..., 0], b[..., 1])
        if self.discretization == "zoh":
            z = lam * step
            lambda_bar = jnp.exp(z)
            # (Lambda_bar - 1) / Lambda with the numerator from expm1: exp(z) - 1 loses most digits
            # in float32 when |z| = |Lambda| step is ~1e-4 (the initial steps reach 1e-3 * 1/2).
            gain = _expm1(z) / lam
        else:
            denom = 1.0 - 0.5 * step * lam
            lambda_bar = (1.0 + 0.5 * step * lam) / denom
            gain = step / denom
        return lambda_bar, gain[:, None] * b_tilde

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        real = scan_dtype(self.dtype)
        u = u.astype(real)
        lambda_bar, b_bar = self.discretize()
        c = self.C[...].astype(real)
        backend = self.resolve_scan(u.shape[0])
        y = diagonal_ssm(
            lambda_bar, b_bar.real, b_bar.imag, c[..., 0], c[..., 1], u, backend=backend, chunk_size=self.chunk_size
        )
        if self.conj_sym:
            y = 2.0 * y
        return (y + self.D[...].astype(real) * u).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """2 H dtype_bytes (read u_k, write y_k) + 2 P max(dtype_bytes, 4) (write the complex state x_k).

        The state x_k (P complex values in at least single precision, P = ssm_size/2 with conj_sym)
        is materialised by every backend between the scan and the readout, so it is touched once per
        token; Lambda_bar, B_bar and C~ are per-layer constants that stay cached.
        """
        return 2 * self.hidden_dim * dtype_bytes + 2 * self.P * max(dtype_bytes, 4)


def _expm1(z: Complex[Array, "*shape"]) -> Complex[Array, "*shape"]:
    """exp(z) - 1 for complex z, accurate for small |z|.

    Re = expm1(x) cos(y) - 2 sin(y/2)^2 (cos(y) - 1 written without cancellation), Im = exp(x) sin(y).
    """
    x, y = z.real, z.imag
    return jax.lax.complex(jnp.expm1(x) * jnp.cos(y) - 2.0 * jnp.sin(0.5 * y) ** 2, jnp.exp(x) * jnp.sin(y))
