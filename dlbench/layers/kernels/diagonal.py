"""The diagonal complex state-space model that S5 and LRU share, on a real input.

Symbols (H hidden width, N states, L length): Lambda_bar (N,) complex, the discrete diagonal
transition; B_bar (N, H) and C (H, N) complex, each given as its real and imaginary part; u (L, H) real.

    x_k = Lambda_bar x_{k-1} + B_bar u_k   (x_{-1} = 0),        y_k = Re(C x_k)

The layers differ only in how they parameterise Lambda_bar and B_bar (S5: ZOH or bilinear
discretisation; LRU: exponential form and the gamma normalisation) and in what they add to y.

References: Smith et al., "Simplified State Space Layers for Sequence Modeling", ICLR 2023, eqs. (6)-(7);
Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences", ICML 2023, section 3.
"""

from __future__ import annotations

import jax
from jaxtyping import Array, Complex, Float

from dlbench.layers.kernels.dtypes import complex_dtype
from dlbench.layers.kernels.scan import DIAGONAL, linear_scan


def diagonal_ssm(
    Lambda_bar: Complex[Array, " state"],
    B_re: Float[Array, "state hidden"],
    B_im: Float[Array, "state hidden"],
    C_re: Float[Array, "hidden state"],
    C_im: Float[Array, "hidden state"],
    u: Float[Array, "seq hidden"],
    *,
    backend: str,
    chunk_size: int,
) -> Float[Array, "seq hidden"]:
    """y = Re(C x) of the diagonal recurrence above, every array in the scan dtype (u real).

    The states x (L, N) are in :func:`complex_dtype` of ``u``; ``backend`` and ``chunk_size`` go to
    :func:`~dlbench.layers.kernels.scan.linear_scan`.
    """
    # u is real: two real matmuls instead of promoting u to complex (half the flops).
    bu = jax.lax.complex(u @ B_re.T, u @ B_im.T).astype(complex_dtype(u.dtype))
    x = linear_scan(Lambda_bar, bu, semigroup=DIAGONAL, invariant=True, backend=backend, chunk_size=chunk_size)
    # Re(C x) = C_re x_re - C_im x_im, without forming the complex product.
    return x.real @ C_re.T - x.imag @ C_im.T
