"""Oscillatory state-space layers: LinOSS (IM, IMEX) and D-LinOSS (IMEX1, IMEX2, IM, EX), the NNX modules.

The math (symbols, discretizations, projections, backends, initialisation) is in
:mod:`dlbench.layers.kernels.oscillatory`; this module holds the parameters and picks a kernel.
Raw parameters (names and layouts are public API): A_diag (P,), G_diag (P,) (D-LinOSS only), dt (P,),
B (P, H, 2) and C (H, P, 2) as real/imaginary pairs, D (H,).

References: D-LinOSS: Boyer, Rusch & Rus, arXiv 2505.12171, eqs. 3-6; LinOSS: Rusch & Rus, ICLR 2025,
arXiv 2410.03943, eqs. 4-7; docs/models.md section 2.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from dlbench.errors import DlbenchError, check_choice
from dlbench.layers.base import SCAN_CHOICES, AbstractSequenceLayer, LayerOptions, SSMParam, scan_dtype
from dlbench.layers.kernels.init import uniform
from dlbench.layers.kernels.oscillatory import (
    BATCHED_FORMULATIONS,
    DLINOSS_DISCRETIZATIONS,
    FORMULATIONS,
    IMEX2_MAX_DTG,
    LINOSS_DISCRETIZATIONS,
    STABILITY_SLACK,
    Discretization,
    Vec,
    block_eigenvalues,
    rejection_uniform_init,
    ring_init,
    ssm_generic,
)
from dlbench.registry import register_model


class DiscretizationError(DlbenchError, ValueError):
    """Parameters for which a discretization is undefined (IMEX2 with dt G > 1)."""


class UnstableDiscretizationWarning(RuntimeWarning):
    """A transition with eigenvalues outside the unit disk (EX), or a guard that changed parameters."""


# ---------------------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------------------


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


class AbstractOscillatory(AbstractSequenceLayer):
    """Shared machinery of LinOSS and D-LinOSS: projection, (M, f), backends and readout.

    A subclass sets ``discretizations``, passes ``discretization`` on to this constructor and stores
    ``A_diag``, ``dt``, ``B``, ``C``, ``D`` (and ``G_diag`` for D-LinOSS); ``_raw_damping`` returns the raw G.
    """

    scans: ClassVar[tuple[str, ...]] = SCAN_CHOICES + tuple(FORMULATIONS)
    # Measured at L=50k, H=P=64, float32 (README, "Choosing a backend"; results/cpu-dlinoss-backends):
    # "blocked" is the fastest on CPU; on GPU the authors' associative scan is the safe default.
    preferred: ClassVar[dict[str, str]] = {"cpu": "blocked", "gpu": "associative", "cuda": "associative"}
    discretizations: ClassVar[dict[str, Discretization]] = {}

    def __init__(self, hidden_dim: int, state_dim: int, *, discretization: str, **common: Unpack[LayerOptions]):
        check_choice(f"discretization for {type(self).__name__}", discretization, self.discretizations)
        super().__init__(hidden_dim, state_dim, **common)
        self.discretization = discretization

    def _init_maps(self, key_b, key_c, key_d):
        H, P, pd = self.hidden_dim, self.state_dim, self.param_dtype
        self.B = SSMParam(uniform(key_b, (P, H, 2), 1.0 / math.sqrt(H), pd))
        self.C = SSMParam(uniform(key_c, (H, P, 2), 1.0 / math.sqrt(P), pd))
        self.D = nnx.Param(jax.random.normal(key_d, (H,), pd))

    def _raw_damping(self) -> Array:
        return jnp.zeros_like(self.A_diag[...])

    def projected(self, dtype=None) -> tuple[Vec, Vec, Vec]:
        """(A, G, dt) after this variant's projection, computed in ``dtype`` (default: scan dtype)."""
        dtype = dtype or scan_dtype(self.dtype)
        raw = (self.A_diag[...], self._raw_damping(), self.dt[...])
        return self.discretizations[self.discretization].project(*(r.astype(dtype) for r in raw))

    def transition(self, dtype=None) -> tuple[Float[Array, "state 2 2"], Float[Array, "state 2"]]:
        """M (P, 2, 2) and f (P, 2) with F_k = f b_k, per the docs/models.md table."""
        return self.discretizations[self.discretization].transition(*self.projected(dtype))

    def eigenvalues(self) -> Array:
        """The eigenvalues of M, (P, 2) complex: the learned oscillators' poles per step."""
        return block_eigenvalues(self.transition()[0])

    def _check_eager(self) -> None:
        """Warn about guards and instability when parameters are concrete (not under jit)."""
        if not _is_concrete(self.A_diag[...], self.dt[...]):
            return
        if self.discretization == "IMEX2":
            dt = jax.nn.sigmoid(self.dt[...])
            if bool(jnp.any(dt * jax.nn.relu(self._raw_damping()) > IMEX2_MAX_DTG)):
                warnings.warn(
                    f"IMEX2 needs dt*G <= 1; G was clamped to dt*G <= {IMEX2_MAX_DTG} for some states",
                    UnstableDiscretizationWarning,
                    stacklevel=3,
                )
        self._warn_if_unstable("transition", "states grow without bound over long sequences", stacklevel=3)

    def _warn_if_unstable(self, what: str, consequence: str, stacklevel: int) -> None:
        """Warn when M has eigenvalues outside the unit disk (beyond ``STABILITY_SLACK``); ``stacklevel``
        as seen from the caller."""
        modulus = float(jnp.max(jnp.abs(self.eigenvalues())))
        if modulus > 1.0 + STABILITY_SLACK:
            warnings.warn(
                f"{type(self).__name__}-{self.discretization}: the {what} has eigenvalues of modulus up to "
                f"{modulus:.6g} > 1; {consequence}",
                UnstableDiscretizationWarning,
                stacklevel=stacklevel + 1,
            )

    def _forward(self, u: Float[Array, "*batch seq hidden"]) -> Float[Array, "*batch seq hidden"]:
        # Batched input arrives here only for BATCHED_FORMULATIONS (see _forward_batched).
        self._check_eager()
        cdt = scan_dtype(self.dtype)
        M, f = self.transition(cdt)
        u = u.astype(cdt)
        B = self.B[...].astype(cdt)
        # Re(C x) = C_re Re(x) - C_im Im(x): the readout contracts (state, real/imag) with C_ri.
        C_ri = self.C[...].astype(cdt) * jnp.array([1.0, -1.0], cdt)
        backend = self.resolve_scan(u.shape[-2])
        if backend in FORMULATIONS:
            y = FORMULATIONS[backend](M, f, u, B, C_ri)
        else:
            y = ssm_generic(M, f, u, B, C_ri, backend=backend, chunk_size=self.chunk_size)
        return (y + self.D[...].astype(cdt) * u).astype(self.dtype)

    def _forward_batched(self, u: Float[Array, "batch seq hidden"]) -> Float[Array, "batch seq hidden"]:
        if self.resolve_scan(u.shape[1]) in BATCHED_FORMULATIONS:
            return self._forward(u)
        return super()._forward_batched(u)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """(2H + 4P) values: input and output (2H) plus the state w_k = [z_k; x_k] (two complex numbers,
        4 real values per state), which every formulation materialises once per step."""
        return (2 * self.hidden_dim + 4 * self.state_dim) * dtype_bytes


@register_model("linoss-im", description="LinOSS-IM: implicit linear oscillators (Rusch & Rus 2025)", discretization="IM")
@register_model(
    "linoss-imex", description="LinOSS-IMEX: symplectic IMEX linear oscillators (Rusch & Rus 2025)", discretization="IMEX"
)
class LinOSS(AbstractOscillatory):
    """LinOSS: undamped linear oscillators x'' = -A x + B u, A = relu(A_diag), dt = sigmoid(dt).

    Args (beyond :class:`AbstractSequenceLayer`):
      discretization: "IM" (dissipative, implicit) or "IMEX" (symplectic, |lambda| = 1).
      A_max: A_diag ~ U[0, A_max).
      dt_init: "uniform" (dt raw ~ U[0, 1), the authors' code) or "normal" (N(0, dt_std^2)).

    References: Rusch & Rus, "Oscillatory State-Space Models", ICLR 2025, eqs. 4-7; docs/models.md section 2.
    """

    discretizations = LINOSS_DISCRETIZATIONS

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        discretization: str = "IM",
        A_max: float = 1.0,
        dt_init: str = "uniform",
        dt_std: float = 0.5,
        **common: Unpack[LayerOptions],
    ):
        super().__init__(hidden_dim, state_dim, discretization=discretization, **common)
        check_choice("dt_init for LinOSS", dt_init, ("uniform", "normal"))
        P, pd = state_dim, self.param_dtype
        self.A_diag = SSMParam(jax.random.uniform(rngs.params(), (P,), pd, 0.0, A_max))
        dt_key = rngs.params()
        draws = {
            "uniform": lambda: jax.random.uniform(dt_key, (P,), pd),
            "normal": lambda: dt_std * jax.random.normal(dt_key, (P,), pd),
        }
        self.dt = SSMParam(draws[dt_init]())
        self._init_maps(rngs.params(), rngs.params(), rngs.params())


@register_model("dlinoss", description="D-LinOSS: damped linear oscillators, IMEX1 (Boyer, Rusch & Rus 2025)")
class DLinOSS(AbstractOscillatory):
    """D-LinOSS: damped linear oscillators x'' = -A x - G x' + B u with learned per-state damping G.

    Args (beyond :class:`AbstractSequenceLayer`):
      discretization: "IMEX1" (the paper's), "IMEX2", "IM" or "EX"; projections in docs/models.md.
      init: "ring" (eigenvalue moduli uniform in area on [r_min, r_max], angles on
        [theta_min, theta_max], inverted in closed form for IMEX1) or "uniform" (A ~ U[A_min, A_max],
        G ~ U[G_min, G_max], rejection-sampled to where the projection is the identity).

    Guards: IMEX2 is undefined for dt G > 1: construction raises :class:`DiscretizationError` if the
    init needs it, and the projection clamps G to dt G <= IMEX2_MAX_DTG (eager calls warn when the clamp
    is active) so no call returns NaN. EX can have |lambda| > 1: construction and eager calls warn
    with :class:`UnstableDiscretizationWarning`.

    References: Boyer, Rusch & Rus, "Learning to Dissipate Energy in Oscillatory State-Space Models",
    arXiv 2505.12171, eqs. 3-6 and Prop. 3.1; docs/models.md section 2.
    """

    discretizations = DLINOSS_DISCRETIZATIONS

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        rngs: nnx.Rngs,
        discretization: str = "IMEX1",
        init: str = "ring",
        r_min: float = 0.9,
        r_max: float = 1.0,
        theta_min: float = 0.0,
        theta_max: float = math.pi,
        A_min: float = 0.0,
        A_max: float = 1.0,
        G_min: float = 0.0,
        G_max: float = 1.0,
        **common: Unpack[LayerOptions],
    ):
        super().__init__(hidden_dim, state_dim, discretization=discretization, **common)
        check_choice("init for DLinOSS", init, ("ring", "uniform"))
        project = self.discretizations[discretization].project
        draws = {
            "ring": lambda key: ring_init(key, state_dim, r_min, r_max, theta_min, theta_max),
            "uniform": lambda key: rejection_uniform_init(key, state_dim, project, (A_min, A_max), (G_min, G_max)),
        }
        A, G, dt_raw = draws[init](rngs.params())
        if discretization == "IMEX2" and np.any((dt_dtg := 1.0 / (1.0 + np.exp(-dt_raw)) * G) > IMEX2_MAX_DTG):
            raise DiscretizationError(
                f"IMEX2 is undefined for dt*G > 1 and this init gives dt*G up to {dt_dtg.max():.4g} "
                "(ring init: dt*G = 1/r^2 - 1, so keep r_min > 0.71); use IMEX1 or narrow the init ranges"
            )
        pd = self.param_dtype
        self.A_diag = SSMParam(jnp.asarray(A, pd))
        self.G_diag = SSMParam(jnp.asarray(G, pd))
        self.dt = SSMParam(jnp.asarray(dt_raw, pd))
        self._init_maps(rngs.params(), rngs.params(), rngs.params())
        self._warn_if_unstable("initial transition", "outputs grow with length (EX is not unconditionally stable)", stacklevel=2)

    def _raw_damping(self) -> Array:
        return self.G_diag[...]
